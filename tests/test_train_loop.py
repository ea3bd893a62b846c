"""Training loop, single process: loss goes down, NaN skipping, discriminator phase, checkpoints, kill + resume."""

from __future__ import annotations

import json
import math
import random
import re
from pathlib import Path

import pytest
import torch
import torch.distributed as dist
from mmengine.config import Config

from opensora_ae.config import load_config
from opensora_ae.losses import VAELoss, configs_from_lpips_with_discriminator
from opensora_ae.train import checkpoint, parallel
from opensora_ae.train.logging import wandb_mode
from opensora_ae.train.loop import (OPTIONAL_KEYS, NonFiniteLossError, batch_video, build_models, random_clip_length,
                                    train)
from opensora_ae.train.optim import LinearWarmupLR, build_lr_scheduler, build_optimizer

from train_helpers import (REPO, TinyConvAE, load_safetensors, run_training, sample_video, tiny_config, write_config,
                           write_fixed_clips)


def _train_in_process(tmp_path: Path, cfg: dict, name: str = "run", overrides: tuple[str, ...] = ()) -> Path:
    config = write_config(tmp_path / f"{name}.py", cfg)
    return train(load_config(config, ["--save-dir", str(tmp_path / name), *overrides], OPTIONAL_KEYS))


def _records(run_dir: Path) -> list[dict]:
    return [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]


def _steps(run_dir: Path) -> list[dict]:
    return [r for r in _records(run_dir) if "event" not in r]


@pytest.fixture(scope="module")
def clips(tmp_path_factory) -> Path:
    return write_fixed_clips(tmp_path_factory.mktemp("clips"), count=4, distinct=True)


def test_loss_goes_down_on_a_real_clip(tmp_path):
    cfg = tiny_config(sample_video(), max_steps=50, batch_size=1, ema_decay=None,
                      dataset=dict(type="video_text", data_path=str(sample_video()), num_frames=4, image_size=16))
    run_dir = _train_in_process(tmp_path, cfg)
    losses = [r["loss"] for r in _steps(run_dir)]
    assert len(losses) == 50
    first, last = sum(losses[:5]) / 5, sum(losses[-5:]) / 5
    assert last < 0.6 * first, (first, last)
    assert (run_dir / "loss_curve.png").stat().st_size > 1000
    assert (run_dir / "config.py").is_file()
    record = _steps(run_dir)[-1]
    for key in ("loss", "lr", "grad_norm", "steps_per_s", "samples_per_s", "loss_recon"):
        assert math.isfinite(record[key]), key


def test_checkpoint_layout_pruning_and_weights_only_loading(tmp_path, clips):
    run_dir = _train_in_process(tmp_path, tiny_config(clips, max_steps=6, ckpt_every=2, keep_n_latest=2))
    names = [p.name for p in checkpoint.list_checkpoints(run_dir)]
    assert names == ["epoch1-global_step4", "epoch2-global_step6"]
    assert not list(run_dir.glob(".*.tmp"))
    latest = run_dir / names[-1]
    for name in ("model.safetensors", "ema.safetensors", "optimizer.pt", "lr_scheduler.pt", "scaler.pt",
                 "sampler.pt", "rng/rank0.pt", "running_states.json"):
        assert (latest / name).is_file(), name
    states = json.loads((latest / "running_states.json").read_text())
    assert states["global_step"] == 6 and states["samples_seen"] == 12 and states["epoch"] == 2
    # --model.from_pretrained: weights only, a fresh run starting at step 0.
    fine_tune = _train_in_process(tmp_path, tiny_config(clips, max_steps=1), "finetune",
                                  ("--model.from_pretrained", str(latest / "model.safetensors"), "--optim.lr", "0.0"))
    before, after = load_safetensors(latest / "model.safetensors"), load_safetensors(
        fine_tune / "epoch0-global_step1" / "model.safetensors")
    assert all(torch.equal(before[k], after[k]) for k in before)


def test_nan_loss_is_skipped_counted_and_logged(tmp_path, clips, monkeypatch):
    calls = {"n": 0}
    original = VAELoss.forward

    def poisoned(self, *args, **kwargs):
        terms = original(self, *args, **kwargs)
        calls["n"] += 1
        if calls["n"] == 3:
            terms["total"] = terms["total"] * float("nan")
        return terms

    monkeypatch.setattr(VAELoss, "forward", poisoned)
    run_dir = _train_in_process(tmp_path, tiny_config(clips, max_steps=4))
    skipped = [r for r in _records(run_dir) if r.get("event") == "skipped_step"]
    assert len(skipped) == 1 and skipped[0]["step"] == 2 and len(skipped[0]["paths"]) == 2
    assert all(p.endswith(".mp4") for p in skipped[0]["paths"])
    states = json.loads(next(run_dir.glob("epoch*-global_step4")).joinpath("running_states.json").read_text())
    assert states["skipped_steps"] == 1 and states["global_step"] == 4
    assert [r["step"] for r in _steps(run_dir)] == [1, 2, 3, 4]


def test_ten_nonfinite_losses_in_a_row_stop_the_run(tmp_path, clips, monkeypatch):
    original = VAELoss.forward

    def always_nan(self, *args, **kwargs):
        terms = original(self, *args, **kwargs)
        terms["total"] = terms["total"] * float("nan")
        return terms

    monkeypatch.setattr(VAELoss, "forward", always_nan)
    with pytest.raises(NonFiniteLossError, match="10 non-finite losses in a row"):
        _train_in_process(tmp_path, tiny_config(clips, max_steps=20))


def test_discriminator_phase_starts_at_the_right_iteration(tmp_path, clips):
    cfg = tiny_config(
        clips, max_steps=5,
        discriminator=dict(type="N_Layer_discriminator_3D", input_nc=3, ndf=4, n_layers=2, conv_cls="conv3d"),
        gen_loss_config=dict(gen_start=2, disc_weight=0.5),
        disc_loss_config=dict(disc_start=3, disc_loss_type="hinge"),
        optim_discriminator=dict(cls="HybridAdam", lr=1e-3, eps=1e-8, weight_decay=0.0, betas=(0.9, 0.98)),
        disc_lr_scheduler=dict(warmup_steps=0),
    )
    run_dir = _train_in_process(tmp_path, cfg)
    steps = _steps(run_dir)
    # Record for step s is iteration s-1 (0-based), which gen_start/disc_start are compared with.
    assert ["loss_gen" in r for r in steps] == [False, False, True, True, True]
    assert ["loss_disc" in r for r in steps] == [False, False, False, True, True]
    for record in steps[2:]:
        assert math.isfinite(record["gen_weight"]) and record["gen_weight"] > 0
    latest = run_dir / "epoch2-global_step5"
    assert (latest / "discriminator.safetensors").is_file()
    # One iteration = one autoencoder step + one discriminator step: 5 AE updates, 2 D updates.
    ae_state = torch.load(latest / "optimizer.pt", weights_only=True)["state"]
    disc_state = torch.load(latest / "optimizer_discriminator.pt", weights_only=True)["state"]
    assert {float(s["step"]) for s in ae_state.values()} == {5.0}
    assert {float(s["step"]) for s in disc_state.values()} == {2.0}


@pytest.mark.slow
def test_kill_and_resume_is_exact(tmp_path, clips):
    cfg_dict = tiny_config(clips, max_steps=6, ckpt_every=3)
    cfg = write_config(tmp_path / "cfg.py", cfg_dict)
    full = _train_in_process(tmp_path, cfg_dict, "full")
    crashed = tmp_path / "crashed"
    result = run_training([str(cfg), "--save-dir", str(crashed)], instrumented=True, check=False,
                          # Same thread count as this process: CPU kernels' reduction order depends on it.
                          env={"TRAIN_TEST_KILL_AFTER_STEP": "4", "OMP_NUM_THREADS": str(torch.get_num_threads())})
    assert result.returncode == -9, result.stderr[-2000:]
    assert [p.name for p in checkpoint.list_checkpoints(crashed)] == ["epoch1-global_step3"]
    # Resume in this process: the restored RNG/sampler/optimizer states alone must make it exact.
    train(load_config(cfg, ["--load", str(crashed / "epoch1-global_step3")], OPTIONAL_KEYS))
    expected, resumed = full / "epoch2-global_step6", crashed / "epoch2-global_step6"
    for name in ("model.safetensors", "ema.safetensors"):
        a, b = load_safetensors(expected / name), load_safetensors(resumed / name)
        assert all(torch.equal(a[k], b[k]) for k in a), name
    opt_a = torch.load(expected / "optimizer.pt", weights_only=True)
    opt_b = torch.load(resumed / "optimizer.pt", weights_only=True)
    for key, state in opt_a["state"].items():
        for field, value in state.items():
            assert torch.equal(torch.as_tensor(value), torch.as_tensor(opt_b["state"][key][field])), (key, field)
    assert json.loads((expected / "running_states.json").read_text()) == json.loads(
        (resumed / "running_states.json").read_text())


@pytest.mark.slow
def test_sigterm_saves_a_checkpoint_before_exiting(tmp_path, clips):
    cfg = write_config(tmp_path / "cfg.py", tiny_config(clips, max_steps=50))
    result = run_training([str(cfg), "--save-dir", str(tmp_path / "run")], instrumented=True, check=False,
                          env={"TRAIN_TEST_SIGNAL_AFTER_STEP": "2"})
    assert result.returncode == 128 + 15, result.stderr[-2000:]
    saved = checkpoint.list_checkpoints(tmp_path / "run")
    assert [p.name for p in saved] == ["epoch0-global_step2"]
    assert json.loads((saved[0] / "running_states.json").read_text())["global_step"] == 2


TINY_DC_AE = dict(type="dc_ae", latent_channels=4, width_list=(8, 16), encoder_depth_list=(1, 1),
                  decoder_depth_list=(1, 1), encoder_block_types=("ResBlock", "ResBlock"),
                  decoder_block_types=("ResBlock", "ResBlock"), temporal_downsample=(True, False))


def test_adaptive_weight_with_gradient_checkpointing_on_dc_ae(tmp_path, clips):
    cfg = tiny_config(
        clips, max_steps=3, grad_checkpoint=True, model=dict(TINY_DC_AE, disc_off_grad_ckpt=True),
        discriminator=dict(type="N_Layer_discriminator_3D", input_nc=3, ndf=4, n_layers=2, conv_cls="conv3d"),
        gen_loss_config=dict(gen_start=0, disc_weight=0.05), disc_loss_config=dict(disc_start=1),
    )
    steps = _steps(_train_in_process(tmp_path, cfg))
    assert len(steps) == 3
    for record in steps:
        assert math.isfinite(record["gen_weight"]) and record["gen_weight"] > 0, record
    assert ["loss_disc" in r for r in steps] == [False, True, True]


@pytest.mark.parametrize("dtype", ["bf16", "fp16"])
def test_mixed_precision_trains(tmp_path, clips, dtype):
    steps = _steps(_train_in_process(tmp_path, tiny_config(clips, max_steps=7, dtype=dtype)))
    assert [r["step"] for r in steps] == list(range(1, 8))
    updated = [r for r in steps if "grad_norm" in r]
    if dtype == "bf16":
        assert len(updated) == 7
    else:
        # fp16: the grad scaler starts at 2**16 and backs off on overflow, then updates happen.
        assert 0 < len(updated) < 7 and all(r.get("fp16_overflow") == 1.0 for r in steps if r not in updated)
    assert all(math.isfinite(r["grad_norm"]) for r in updated)


# Tiny stand-ins for the shipped configs' models: the configs' own losses, optimizers, discriminator and
# schedule keys are used as they are (perceptual term off: no VGG backbone offline).
SHIPPED_CONFIG_OVERRIDES = {
    "video_dc_ae_disc.py": ["--model", repr(dict(TINY_DC_AE, disc_off_grad_ckpt=True)),
                            "--discriminator.n_layers", "2", "--discriminator.ndf", "4"],
    "hunyuan_vae.py": ["--model.block_out_channels", "(32, 32)", "--model.layers_per_block", "1",
                       "--model.spatial_compression_ratio", "2", "--model.time_compression_ratio", "1",
                       "--model.mid_block_add_attention", "False"],
    "causal_vae.py": ["--model.hidden_size", "32", "--model.hidden_size_mult", "(1, 1)", "--model.num_res_blocks", "1",
                      "--model.encoder_resnet_blocks", "('ResnetBlock3D', 'ResnetBlock3D')",
                      "--model.encoder_spatial_downsample", "('SpatialDownsample2x', '')",
                      "--model.encoder_temporal_downsample", "('', '')",
                      "--model.decoder_resnet_blocks", "('ResnetBlock3D', 'ResnetBlock3D')",
                      "--model.decoder_spatial_upsample", "('', 'SpatialUpsample2x')",
                      "--model.decoder_temporal_upsample", "('', '')",
                      "--discriminator.n_layers", "2", "--discriminator.ndf", "4",
                      "--gen_loss_config.gen_start", "1", "--disc_loss_config.disc_start", "1"],
}


@pytest.mark.parametrize("name", sorted(SHIPPED_CONFIG_OVERRIDES))
def test_shipped_configs_train(tmp_path, clips, name):
    overrides = [
        "--save-dir", str(tmp_path / "run"), "--dataset.data_path", str(clips), "--dataset.num_frames", "4",
        "--dataset.image_size", "16", "--bucket_config", "None", "--batch_size", "1", "--num_workers", "0",
        "--mixed_strategy", "None", "--dtype", "fp32", "--plugin", "ddp", "--device", "cpu", "--max_steps", "2", "--log_every", "1",
        "--vae_loss_config.perceptual_loss_weight", "0", "--grad_checkpoint", "True",
        *SHIPPED_CONFIG_OVERRIDES[name],
    ]
    cfg = load_config(REPO / "configs" / "vae" / "train" / name, overrides, OPTIONAL_KEYS)
    steps = _steps(train(cfg))
    assert len(steps) == 2 and all(math.isfinite(r["loss"]) for r in steps)
    if "discriminator" in cfg:
        assert "loss_disc" in steps[-1] and steps[-1]["gen_weight"] > 0


def test_causal_vae_config_uses_the_release_loss_params():
    release = json.loads((REPO / "configs" / "vae" / "causal_vae" / "release.json").read_text())
    expected = configs_from_lpips_with_discriminator(release["loss_params"], release["loss_type"])
    cfg = load_config(REPO / "configs" / "vae" / "train" / "causal_vae.py", [], OPTIONAL_KEYS)
    for key, value in expected.items():
        assert cfg[key].to_dict() == value, key
    assert cfg.vae_loss_config.learn_logvar is False  # the release's optimizer never stepped its logvar


def test_linear_warmup_matches_open_sora():
    optimizer = build_optimizer([torch.nn.Parameter(torch.zeros(1))], dict(cls="AdamW", lr=1.0))
    scheduler = LinearWarmupLR(optimizer, warmup_steps=3)
    lrs = []
    for _ in range(5):
        lrs.append(optimizer.param_groups[0]["lr"])
        optimizer.step()
        scheduler.step()
    assert lrs == pytest.approx([1 / 4, 2 / 4, 3 / 4, 1.0, 1.0])


def _lrs(optimizer: torch.optim.Optimizer, scheduler, steps: int) -> list[float]:
    lrs = []
    for _ in range(steps):
        lrs.append(optimizer.param_groups[0]["lr"])
        optimizer.step()
        scheduler.step()
    return lrs


def test_cosine_decay_after_warmup_matches_torch_and_resumes_from_json():
    def fresh():
        return build_optimizer([torch.nn.Parameter(torch.zeros(1))], dict(cls="AdamW", lr=2.0))

    cfg = dict(warmup_steps=3, decay="cosine", decay_steps=13, min_lr_ratio=0.1)
    optimizer = fresh()
    ours = _lrs(optimizer, build_lr_scheduler(optimizer, cfg), 16)
    reference_optimizer = fresh()  # torch's own cosine over the 10 decay steps, eta_min = 0.1 * lr
    cosine = torch.optim.lr_scheduler.CosineAnnealingLR(reference_optimizer, T_max=10, eta_min=0.2)
    reference = [2.0 * k / 4 for k in (1, 2, 3)] + _lrs(reference_optimizer, cosine, 11) + [0.2, 0.2]
    assert ours == pytest.approx(reference)
    optimizer = fresh()
    scheduler = build_lr_scheduler(optimizer, cfg)
    _lrs(optimizer, scheduler, 7)
    state = json.loads(json.dumps(scheduler.state_dict()))
    resumed_optimizer = fresh()
    resumed = build_lr_scheduler(resumed_optimizer, cfg)
    resumed.load_state_dict(state)
    resumed_optimizer.param_groups[0]["lr"] = resumed.get_last_lr()[0]
    assert _lrs(resumed_optimizer, resumed, 9) == pytest.approx(ours[7:])
    optimizer = fresh()  # decay_steps defaults to the run's max_steps
    del cfg["decay_steps"]
    assert _lrs(optimizer, build_lr_scheduler(optimizer, cfg, max_steps=13), 16) == pytest.approx(ours)
    optimizer = fresh()  # a run shorter than its warm-up: warm-up only
    assert _lrs(optimizer, build_lr_scheduler(optimizer, cfg, max_steps=2), 2) == pytest.approx(ours[:2])
    for bad, message in ((dict(decay="linear"), "decay='linear'"), (dict(decay_steps=5), "only apply with"),
                         (dict(decay="cosine", warmup_steps=5, decay_steps=5), "decay_steps=5 must be larger"),
                         (dict(warmup=3), "unknown entries ['warmup']"),
                         (dict(decay="cosine"), "needs decay_steps (or a max_steps")):
        with pytest.raises(ValueError, match=re.escape(message)):
            build_lr_scheduler(fresh(), bad)


def test_load_of_a_non_checkpoint_is_a_clear_error(tmp_path, clips):
    with pytest.raises(FileNotFoundError, match="not a training checkpoint"):
        _train_in_process(tmp_path, tiny_config(clips), overrides=("--load", str(tmp_path)))
    assert not (tmp_path / "run").exists()


def test_bad_config_values_are_one_line_errors():
    with pytest.raises(ValueError, match="optim.cls='SGD'"):
        build_optimizer([torch.nn.Parameter(torch.zeros(1))], dict(cls="SGD"))
    with pytest.raises(ValueError, match="unknown entries"):
        build_optimizer([torch.nn.Parameter(torch.zeros(1))], dict(lr=1.0, momentum=0.9))


def test_wandb_goes_offline_without_api_key(monkeypatch, tmp_path):
    monkeypatch.delenv("WANDB_MODE", raising=False)
    monkeypatch.delenv("WANDB_API_KEY", raising=False)
    monkeypatch.setenv("HOME", str(tmp_path))
    assert wandb_mode() == "offline"
    monkeypatch.setenv("WANDB_MODE", "disabled")
    assert wandb_mode() == "disabled"


@pytest.mark.slow
def test_wandb_run_logs_offline_with_a_reconstruction_video(tmp_path, clips, monkeypatch):
    monkeypatch.setenv("WANDB_MODE", "offline")
    run_dir = _train_in_process(tmp_path, tiny_config(clips, max_steps=2, ckpt_every=2, wandb=True))
    assert [r["mode"] for r in _records(run_dir) if r.get("event") == "wandb"] == ["offline"]
    assert (run_dir / "wandb_media" / "reconstruction_step2.mp4").stat().st_size > 0
    assert list((run_dir / "wandb").glob("offline-run-*"))


def test_random_clip_length_rules():
    rng = random.Random(0)
    assert {random_clip_length(9, "4k+1", rng) for _ in range(200)} == {1, 5, 9}
    assert {random_clip_length(3, "any", rng) for _ in range(200)} == {1, 2, 3}


def test_random_clip_length_depends_only_on_seed_and_step():
    # Every rank must cut to the same length (FSDP2 needs the same block calls on all ranks): the per-rank random
    # streams (seeded seed + rank) must not matter, only the config seed and the optimizer step.
    cfg = Config(dict(mixed_strategy="mixed_video_random", random_length_rule="any", seed=5))
    batch = {"video": torch.zeros(1, 3, 33, 2, 2)}
    per_rank = []
    for rank in range(2):
        random.seed(1000 + rank)
        torch.manual_seed(1000 + rank)
        per_rank.append([batch_video(batch, cfg, torch.device("cpu"), step).shape[2] for step in range(20)])
    assert per_rank[0] == per_rank[1]
    assert len(set(per_rank[0])) > 3 and all(1 <= n <= 33 for n in per_rank[0])


# ---- learnable logvar ---------------------------------------------------------------------------------------


def _assert_same_files(a: Path, b: Path, names: tuple[str, ...]) -> None:
    for name in names:
        first, second = load_safetensors(a / name), load_safetensors(b / name)
        assert first.keys() == second.keys() and all(torch.equal(first[k], second[k]) for k in first), name


def test_learnable_logvar_trains_and_resumes_exactly(tmp_path, clips):
    learned = dict(perceptual_loss_weight=0.0, kl_loss_weight=0.0, logvar_init=0.25, learn_logvar=True)
    cfg = tiny_config(clips, max_steps=6, ckpt_every=3, vae_loss_config=learned,
                      optim=dict(cls="AdamW", lr=1e-2, weight_decay=0.1, betas=(0.9, 0.98)))
    full = _train_in_process(tmp_path, cfg, "full")
    logvars = [r["logvar"] for r in _steps(full)]
    assert len(logvars) == 6 and len(set(logvars)) == 6 and logvars[0] != 0.25
    final = full / "epoch2-global_step6"
    assert load_safetensors(final / "loss.safetensors")["logvar"].item() == pytest.approx(logvars[-1])
    optim = torch.load(final / "optimizer.pt", weights_only=True)
    # One optimizer: the model's group with weight decay, the logvar's without.
    assert optim["param_groups"][1]["params"] == ["loss.logvar"] and optim["param_groups"][1]["weight_decay"] == 0
    assert optim["param_groups"][0]["weight_decay"] == 0.1 and float(optim["state"]["loss.logvar"]["step"]) == 6

    resumed = _train_in_process(tmp_path, cfg, "resumed", ("--load", str(full / "epoch1-global_step3")))
    _assert_same_files(final, resumed / "epoch2-global_step6", ("model.safetensors", "ema.safetensors",
                                                                 "loss.safetensors"))
    resumed_optim = torch.load(resumed / "epoch2-global_step6" / "optimizer.pt", weights_only=True)
    for key, state in optim["state"].items():
        for field, value in state.items():
            assert torch.equal(torch.as_tensor(value), torch.as_tensor(resumed_optim["state"][key][field])), key

    fixed = tiny_config(clips, vae_loss_config=dict(learned, learn_logvar=False))
    with pytest.raises(ValueError, match="learn_logvar=True"):
        _train_in_process(tmp_path, fixed, "fixed", ("--load", str(full / "epoch1-global_step3")))


# ---- wrapping for data parallelism, in a one-process gloo group (DDP's and FSDP2's code paths are the same) ---


@pytest.fixture
def one_rank_group(tmp_path) -> parallel.DistContext:
    dist.init_process_group("gloo", init_method=f"file://{tmp_path / 'rendezvous'}", rank=0, world_size=1)
    yield parallel.DistContext(rank=0, world_size=1, local_rank=0, device=torch.device("cpu"))
    dist.destroy_process_group()


@pytest.mark.parametrize("find_unused", [False, True])
def test_find_unused_parameters_reaches_ddp(one_rank_group, clips, find_unused):
    cfg = Config(tiny_config(clips, model=dict(target="train_helpers.TinyConvAEWithUnusedBranch"),
                             find_unused_parameters=find_unused))
    models = build_models(cfg, one_rank_group)
    assert isinstance(models.model_ddp, torch.nn.parallel.DistributedDataParallel)
    x = torch.rand(1, 3, 2, 8, 8)

    def two_steps() -> None:
        for _ in range(2):
            models.model_ddp(x)[0].mean().backward()

    if find_unused:
        two_steps()
        assert models.model.unused_head.weight.grad is None
    else:
        # DDP's own error for a parameter without gradient: what find_unused_parameters=True is for.
        with pytest.raises(RuntimeError, match="find_unused_parameters"):
            two_steps()


def test_fsdp_units_recurse_into_nested_containers(one_rank_group):
    model = TinyConvAE()
    reference = TinyConvAE()
    reference.load_state_dict(model.state_dict())
    level0, level1 = model.decoder_levels
    # Elements of a nested ModuleList and the children of a plain holder module become units; the holders do not
    # (fully_shard refuses lists, and a holder without forward would never gather its parameters).
    assert parallel._shard_units(model, model.get_last_layer()) == [level0[0], level1.upsample]
    sharded = parallel.wrap_model(model, one_rank_group, "zero2", keep_unsharded=model.get_last_layer())
    x = torch.rand(1, 3, 2, 8, 8)
    out, expected = sharded(x)[0], reference(x)[0]
    torch.testing.assert_close(out, expected)
    out.square().mean().backward()
    expected.square().mean().backward()
    grad = level0[0][0].weight.grad
    torch.testing.assert_close(parallel.to_local_scalar(grad), reference.decoder_levels[0][0][0].weight.grad)


def test_logged_losses_are_window_means(tmp_path):
    from opensora_ae.train.logging import TrainLogger

    logger = TrainLogger(tmp_path, is_main=True, total_steps=4)
    for step, loss in enumerate([4.0, 2.0, 3.0], start=1):
        logger.accumulate({"loss": loss, "loss_recon": loss / 2, "lr": 0.1 * step})
    window = logger.window_metrics()
    assert window == {"loss": 3.0, "loss_recon": 1.5, "lr": pytest.approx(0.3)}
    assert logger.window_metrics() == {}
    logger.close()


def test_channels_last_trains_like_the_default_layout(tmp_path, clips, monkeypatch):
    """``channels_last=True``: the model really runs in NDHWC (weights and batches) and trains to the same weights
    as the default layout (convolution order of summation differs: 1e-5); checkpoints hold contiguous tensors."""
    seen_layouts = []
    real_batch_video = batch_video

    def recording_batch_video(*args, **kwargs):
        x = real_batch_video(*args, **kwargs)
        seen_layouts.append(x.is_contiguous(memory_format=torch.channels_last_3d) and not x.is_contiguous())
        return x

    monkeypatch.setattr("opensora_ae.train.loop.batch_video", recording_batch_video)
    base = dict(max_steps=3, model=TINY_DC_AE, ema_decay=None, ckpt_every=3, keep_n_latest=1)
    runs = {layout: _train_in_process(tmp_path, tiny_config(clips, channels_last=layout, **base), name=str(layout))
            for layout in (False, True)}
    assert seen_layouts == [False] * 3 + [True] * 3
    weights = {layout: load_safetensors(next(run.glob("epoch*-global_step3")) / "model.safetensors")
               for layout, run in runs.items()}
    assert weights[True].keys() == weights[False].keys()
    for name, value in weights[False].items():
        assert weights[True][name].is_contiguous()
        torch.testing.assert_close(weights[True][name], value, rtol=1e-4, atol=1e-5, msg=name)
    losses = {layout: [r["loss"] for r in _steps(run)] for layout, run in runs.items()}
    assert losses[True][-1] != losses[True][0]  # the run trained
    assert losses[True] == pytest.approx(losses[False], rel=1e-4)


def test_batches_travel_as_uint8_and_train_bit_identically_to_float_batches(tmp_path, clips, monkeypatch):
    """The loop's dataset ships uint8 clips (a quarter of the bytes through the workers) and ``batch_video`` maps
    them to [-1, 1] on the device: the run is bit-identical to one whose dataset ships float clips, with workers."""
    dtypes = []
    real_batch_video = batch_video

    def recording_batch_video(batch, *args, **kwargs):
        dtypes.append(batch["video"].dtype)
        return real_batch_video(batch, *args, **kwargs)

    monkeypatch.setattr("opensora_ae.train.loop.batch_video", recording_batch_video)
    base = dict(max_steps=2, ema_decay=None, ckpt_every=2, keep_n_latest=1, num_workers=1)
    runs = {}
    for dtype in ("uint8", "float32"):
        cfg = tiny_config(clips, **base)
        if dtype == "float32":
            cfg["dataset"] = {**cfg["dataset"], "video_dtype": "float32"}
        runs[dtype] = _train_in_process(tmp_path, cfg, name=dtype)
    assert dtypes == [torch.uint8] * 2 + [torch.float32] * 2
    weights = {dtype: load_safetensors(next(run.glob("epoch*-global_step2")) / "model.safetensors")
               for dtype, run in runs.items()}
    assert all(torch.equal(weights["uint8"][name], value) for name, value in weights["float32"].items())
    assert [r["loss"] for r in _steps(runs["uint8"])] == [r["loss"] for r in _steps(runs["float32"])]
