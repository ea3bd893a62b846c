"""The three Open-Sora 1.2 VAE training stages (configs/vae/train/stage{1,2,3}.py) on a tiny pipeline.

The configs are used as shipped; only sizes, device and step counts are overridden. The stages are chained as in
a real run: stage 1 starts from a diffusers 2-D VAE folder, stage 2 from stage 1's checkpoint, stage 3 from
stage 2's.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from opensora_ae.config import load_config
from opensora_ae.models import build_model
from opensora_ae.train.loop import OPTIONAL_KEYS, train

from parity_utils import model_config, one_thread  # noqa: F401  (fixture)
from train_helpers import REPO, write_fixed_clips

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def runs(tmp_path_factory) -> dict[str, Path]:
    """Run the three stages once (shared by the tests below); returns the run folders and the 2-D VAE folder."""
    root = tmp_path_factory.mktemp("os12_stages")
    tiny = model_config("opensora1_2_vae")
    sdxl_like = build_model(tiny)
    sdxl_like.spatial_vae.module.save_pretrained(root / "sdxl_vae" / "vae")
    clips17 = write_fixed_clips(root / "clips17", count=2, frames=17, size=16, distinct=True)
    clips33 = write_fixed_clips(root / "clips33", count=2, frames=33, size=16, distinct=True)

    stage1 = run_stage(
        1, clips17, root / "stage1", max_steps=8, mixed_image_ratio=0.5, ckpt_every=4,
        model=dict(vae_2d_pretrained=str(root / "sdxl_vae"), vae_temporal=tiny["vae_temporal"]),
    )
    stage2 = run_stage(2, clips17, root / "stage2", max_steps=4, model=dict(from_pretrained=str(last_checkpoint(stage1))))
    stage3 = run_stage(
        3, clips33, root / "stage3", max_steps=6, skip_missing_perceptual=True,
        model=dict(from_pretrained=str(last_checkpoint(stage2))),
    )
    return dict(sdxl_vae=root / "sdxl_vae" / "vae", stage1=stage1, stage2=stage2, stage3=stage3)


def run_stage(stage: int, data: Path, run_dir: Path, model: dict, **overrides) -> Path:
    cfg = load_config(REPO / "configs" / "vae" / "train" / f"stage{stage}.py", ["--save-dir", str(run_dir)], OPTIONAL_KEYS)
    cfg.merge_from_dict(
        dict(
            model=model,
            dataset=dict(data_path=str(data), image_size=16),
            optim=dict(lr=1e-3),
            dtype="fp32",
            device="cpu",
            plugin="ddp",
            num_workers=0,
            seed=3,
            **{"ckpt_every": 0, **overrides},
        )
    )
    return train(cfg)


def checkpoints(run_dir: Path) -> list[Path]:
    """The run's checkpoint folders, oldest first."""
    return sorted(run_dir.glob("epoch*-global_step*"), key=lambda p: int(p.name.rsplit("global_step", 1)[1]))


def last_checkpoint(run_dir: Path) -> Path:
    return checkpoints(run_dir)[-1]


def steps(run_dir: Path) -> list[dict]:
    records = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    return [r for r in records if "event" not in r]


def weights(run_dir: Path, prefix: str) -> dict[str, torch.Tensor]:
    state = load_file(str(last_checkpoint(run_dir) / "model.safetensors"))
    return {k: v for k, v in state.items() if k.startswith(prefix)}


def changed(before: dict[str, torch.Tensor], after: dict[str, torch.Tensor]) -> int:
    assert before.keys() == after.keys() and before
    return sum(not torch.equal(before[k], after[k]) for k in before)


@pytest.mark.slow
def test_stage1_trains_the_temporal_vae_on_latents_with_identity_on_images(runs):
    records = steps(runs["stage1"])
    assert len(records) == 8
    images = [r for r in records if r["frames"] == 1]
    videos = [r for r in records if r["frames"] == 17]
    assert images and videos and len(images) + len(videos) == 8
    assert all(r["loss_identity"] > 0 for r in images) and all(r["loss_identity"] == 0 for r in videos)
    assert all(r["loss_latent_recon"] > 0 and r["loss_recon"] == 0 for r in records)
    for r in records:  # total = latent reconstruction + identity (no pixel term, no KL)
        assert r["loss"] == pytest.approx(r["loss_latent_recon"] + r["loss_identity"], rel=1e-5)
    first, last = videos[0]["loss_latent_recon"], videos[-1]["loss_latent_recon"]
    assert last < first, (first, last)
    # The 2-D VAE stays exactly the diffusers folder's; the temporal VAE moved.
    sdxl = load_file(str(runs["sdxl_vae"] / "diffusion_pytorch_model.safetensors"))
    spatial = weights(runs["stage1"], "spatial_vae.module.")
    assert changed({f"spatial_vae.module.{k}": v for k, v in sdxl.items()}, spatial) == 0
    halfway = load_file(str(checkpoints(runs["stage1"])[0] / "model.safetensors"))
    temporal = weights(runs["stage1"], "temporal_vae.")
    assert changed({k: halfway[k] for k in temporal}, temporal) == len(temporal)
    config = json.loads((last_checkpoint(runs["stage1"]) / "config.json").read_text())
    assert config["vae_2d_pretrained"] is None and config["freeze_vae_2d"] is True


@pytest.mark.slow
def test_stage2_trains_the_spatial_encoder_without_identity_loss(runs):
    records = steps(runs["stage2"])
    assert len(records) == 4
    assert all(r["loss_identity"] == 0 and r["loss_recon"] == 0 and r["loss_latent_recon"] > 0 for r in records)
    before, after = weights(runs["stage1"], "spatial_vae.module."), weights(runs["stage2"], "spatial_vae.module.")
    encoder = [k for k in before if ".encoder." in k or ".quant_conv." in k]
    decoder = [k for k in before if ".decoder." in k or ".post_quant_conv." in k]
    assert changed({k: before[k] for k in encoder}, {k: after[k] for k in encoder}) > 0
    # Only latent losses: the 2-D decoder gets no gradient in this stage (and is frozen by the config).
    assert changed({k: before[k] for k in decoder}, {k: after[k] for k in decoder}) == 0


@pytest.mark.slow
def test_stage3_pixel_loss_on_random_clip_lengths(runs):
    records = steps(runs["stage3"])
    assert len(records) == 6
    lengths = {int(r["frames"]) for r in records}
    assert len(lengths) > 1 and all(1 <= n <= 33 for n in lengths)
    for r in records:
        assert r["loss_recon"] > 0 and r["loss_kl"] > 0 and r["loss_latent_recon"] == 0 and r["loss_identity"] == 0
        assert r["loss"] == pytest.approx(r["loss_nll"] + 1e-6 * r["loss_kl"], rel=1e-5)
    before, after = weights(runs["stage2"], "spatial_vae.module."), weights(runs["stage3"], "spatial_vae.module.")
    decoder = [k for k in before if ".decoder." in k]
    assert changed({k: before[k] for k in decoder}, {k: after[k] for k in decoder}) > 0


def test_stage3_config_is_the_release_recipe():
    cfg = load_config(REPO / "configs" / "vae" / "train" / "stage3.py", [], OPTIONAL_KEYS)
    assert cfg.vae_loss_config.perceptual_loss_weight == 0.1 and cfg.vae_loss_config.perceptual_net == "vgg"
    assert cfg.vae_loss_config.kl_loss_weight == 1e-6 and cfg.vae_loss_config.recon_loss_weight == 1.0
    assert cfg.dataset.num_frames == 33 and cfg.mixed_strategy == "mixed_video_random"
    assert cfg.forward_kwargs == {} and cfg.loss_inputs == {}
    assert not cfg.model.freeze_vae_2d and not cfg.model.freeze_vae_2d_decoder
    stage2 = load_config(REPO / "configs" / "vae" / "train" / "stage2.py", [], OPTIONAL_KEYS)
    assert not stage2.model.freeze_vae_2d and stage2.model.freeze_vae_2d_decoder
    assert stage2.vae_loss_config.identity_loss_weight == 0 and stage2.vae_loss_config.latent_recon_loss_weight == 1
    stage1 = load_config(REPO / "configs" / "vae" / "train" / "stage1.py", [], OPTIONAL_KEYS)
    assert stage1.model.freeze_vae_2d and stage1.mixed_image_ratio == 0.2 and stage1.dataset.num_frames == 17
    assert stage1.vae_loss_config.identity_loss_weight == 1 and stage1.vae_loss_config.recon_loss_weight == 0
    assert stage1.optim.lr == 1e-5 and stage1.plugin == "ddp"
