"""Checkpoint first: a checkpoint that describes its own architecture (a folder's config.json, the config.json
beside a .ckpt) wins over the shipped config's architecture keys; runtime keys (tiling) still apply; keys the user
set that contradict the checkpoint are one error naming them."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from opensora_ae.config import load_config, parse_overrides
from opensora_ae.models import build_model
from opensora_ae.models.causal_vae import CausalVAEModel
from opensora_ae.models.checkpoint_io import CheckpointError
from opensora_ae.models.hunyuan_vae import HunyuanVAE
from opensora_ae.train.loop import OPTIONAL_KEYS, train

from train_helpers import REPO, run_training, write_fixed_clips

CONFIGS = REPO / "configs" / "vae"
TINY_V1_1 = dict(hidden_size=32, hidden_size_mult=[1, 1, 1, 1], num_res_blocks=1)


def _v1_1_folder(folder: Path) -> CausalVAEModel:
    """A tiny Open-Sora-Plan v1.1-layout release folder: config.json (with the release's metadata) + weights."""
    model = CausalVAEModel.from_config_file(CONFIGS / "causal_vae" / "v1_1.json", **TINY_V1_1)
    model.save_pretrained(folder)
    config = json.loads((folder / "config.json").read_text())
    config.pop("type")
    config.update(_name_or_path="/remote-home/opensora/vae", _diffusers_version="0.27.2")
    (folder / "config.json").write_text(json.dumps(config))
    return model


def _model_cfg(config: Path, tokens: list[str]) -> tuple[dict, set[str]]:
    """The model config of a shipped config file with CLI tokens applied, and the keys those tokens set."""
    cfg = load_config(config, tokens, OPTIONAL_KEYS)
    return cfg.model.to_dict(), {key for key, _ in parse_overrides(tokens)}


def _same_state(model: torch.nn.Module, expected: dict[str, torch.Tensor]) -> bool:
    state = model.state_dict()
    return state.keys() == expected.keys() and all(torch.equal(state[k], v) for k, v in expected.items())


@pytest.mark.slow
def test_causal_vae_train_config_fine_tunes_a_v1_1_folder(tmp_path: Path) -> None:
    """``configs/vae/train/causal_vae.py`` is the v1.0 architecture at width 128; a v1.1-layout folder fine-tunes
    through scripts/vae/train.py with it: the folder's architecture is built and trained."""
    release = tmp_path / "Open-Sora-Plan-v1.1.0" / "vae"
    source = _v1_1_folder(release)
    clips = write_fixed_clips(tmp_path / "clips", count=2, frames=5, size=16, distinct=True)
    args = [
        str(CONFIGS / "train" / "causal_vae.py"), "--model.from_pretrained", str(release),
        "--save-dir", str(tmp_path / "run"), "--dataset.data_path", str(clips), "--dataset.num_frames", "5",
        "--dataset.image_size", "16", "--bucket_config", "None", "--batch_size", "1", "--num_workers", "0",
        "--mixed_strategy", "None", "--dtype", "fp32", "--device", "cpu", "--max_steps", "2", "--ckpt_every", "2",
        "--log_every", "1", "--vae_loss_config.perceptual_loss_weight", "0", "--optim.lr", "1e-3",
        "--discriminator.n_layers", "2", "--discriminator.ndf", "4",
    ]  # fmt: skip
    run_training(args, timeout=420)
    checkpoint = next((tmp_path / "run").glob("epoch*-global_step2"))
    saved = json.loads((checkpoint / "config.json").read_text())
    assert saved["type"] == "causal_vae" and saved["hidden_size"] == 32
    assert saved["encoder_temporal_downsample"] == source.config["encoder_temporal_downsample"]
    assert saved["decoder_attention"] == "AttnBlock3DFix"  # v1.1, where the shipped config says AttnBlock3D
    trained = load_file(str(checkpoint / "model.safetensors"))
    start = source.state_dict()
    assert trained.keys() == start.keys()
    assert any(not torch.equal(trained[k], start[k]) for k in start)  # it trained ...
    assert max((trained[k] - start[k]).abs().max().item() for k in start) < 0.01  # ... from the folder's weights
    records = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert all(math.isfinite(r["loss"]) for r in records if "loss" in r)


def test_hunyuan_run_checkpoint_loads_with_the_inference_config(tmp_path: Path) -> None:
    clips = write_fixed_clips(tmp_path / "clips", count=2, frames=5, size=16, distinct=True)
    tiny = ["--model.block_out_channels", "(8, 16)", "--model.layers_per_block", "1", "--model.latent_channels", "4",
            "--model.norm_num_groups", "4", "--model.spatial_compression_ratio", "2",
            "--model.time_compression_ratio", "1", "--model.mid_block_add_attention", "False"]
    run = ["--save-dir", str(tmp_path / "run"), "--dataset.data_path", str(clips), "--dataset.num_frames", "5",
           "--dataset.image_size", "16", "--bucket_config", "None", "--batch_size", "1", "--num_workers", "0",
           "--mixed_strategy", "None", "--dtype", "fp32", "--plugin", "ddp", "--device", "cpu", "--max_steps", "1",
           "--ckpt_every", "1", "--vae_loss_config.perceptual_loss_weight", "0"]  # fmt: skip
    run_dir = train(load_config(CONFIGS / "train" / "hunyuan_vae.py", [*run, *tiny], OPTIONAL_KEYS))
    checkpoint = next(run_dir.glob("epoch*-global_step1"))

    tokens = ["--model.from_pretrained", str(checkpoint), "--model.spatial_tile_size", "8"]
    model_cfg, user_keys = _model_cfg(CONFIGS / "inference" / "hunyuanvideo_vae.py", tokens)
    assert model_cfg["latent_channels"] == 16 and model_cfg["layers_per_block"] == 2  # the shipped architecture
    model = build_model(model_cfg, user_keys=user_keys)
    assert isinstance(model, HunyuanVAE) and model.latent_channels == 4 and not model.training
    assert _same_state(model, load_file(str(checkpoint / "model.safetensors")))
    # Runtime keys come from the inference config and the command line: its tiling is on, the tile size is ours.
    assert model.config["use_spatial_tiling"] and model.config["use_temporal_tiling"]
    assert model.config["spatial_tile_size"] == 8
    with torch.no_grad():
        x_rec = model(torch.rand(1, 3, 5, 16, 16) * 2 - 1, sample_posterior=False)[0]
    assert x_rec.shape == (1, 3, 5, 16, 16)


def test_ckpt_file_reads_the_config_json_beside_it(tmp_path: Path) -> None:
    source = _v1_1_folder(tmp_path)
    (tmp_path / "model.safetensors").unlink()
    state = source.state_dict()
    ema = {f"module.{k}": v + 0.5 for k, v in state.items()}
    torch.save({"state_dict": state, "ema_state_dict": ema, "global_step": 100, "epoch": 1}, tmp_path / "step.ckpt")
    model_cfg, user_keys = _model_cfg(CONFIGS / "inference" / "causal_vae.py",
                                      ["--model.from_pretrained", str(tmp_path / "step.ckpt")])
    model = build_model(model_cfg, user_keys=user_keys)
    assert model.config["hidden_size"] == 32 and model.config["decoder_attention"] == "AttnBlock3DFix"
    assert _same_state(model, {k: v + 0.5 for k, v in state.items()})  # the EMA weights, the documented choice


def test_user_keys_that_contradict_the_checkpoint_are_one_error(tmp_path: Path) -> None:
    _v1_1_folder(tmp_path / "vae")
    config = CONFIGS / "train" / "causal_vae.py"
    tokens = ["--model.from_pretrained", str(tmp_path / "vae"), "--model.hidden_size", "64",
              "--model.decoder_attention", "AttnBlock3D", "--model.use_spatial_tiling", "True"]
    model_cfg, user_keys = _model_cfg(config, tokens)
    with pytest.raises(CheckpointError) as info:
        build_model(model_cfg, user_keys=user_keys)
    message = str(info.value)
    assert "\n" not in message
    assert "decoder_attention='AttnBlock3D' (checkpoint: 'AttnBlock3DFix')" in message
    assert "hidden_size=64 (checkpoint: 32)" in message and "use_spatial_tiling" not in message
    # The same values coming from the shipped config (not the user) are overridden by the checkpoint.
    model = build_model(model_cfg)
    assert model.config["hidden_size"] == 32 and model.config["use_spatial_tiling"] is True
    # A user-set key that agrees with the checkpoint is fine.
    agreeing, keys = _model_cfg(config, ["--model.from_pretrained", str(tmp_path / "vae"), "--model.hidden_size", "32"])
    assert build_model(agreeing, user_keys=keys).config["hidden_size"] == 32


def test_runtime_keys_of_the_next_stage_config_apply(tmp_path: Path) -> None:
    """A stage's checkpoint continues with the next stage's config: the architecture comes from the checkpoint,
    the freezing / checkpointing switches from the config (Open-Sora 1.2 stage 1 -> 2, DC-AE -> its GAN phase)."""
    from parity_utils import model_config

    from opensora_ae.models.dc_ae import VideoDCAE
    from opensora_ae.models.opensora_v1_2 import OpenSoraVAEV12

    tiny = {k: v for k, v in model_config("opensora1_2_vae").items() if k not in ("type", "from_pretrained")}
    stage1 = OpenSoraVAEV12(**tiny, freeze_vae_2d=True)
    stage1.save_pretrained(tmp_path / "stage1")
    model_cfg, _ = _model_cfg(CONFIGS / "train" / "stage2.py", ["--model.from_pretrained", str(tmp_path / "stage1")])
    stage2 = build_model(model_cfg)
    assert stage2.config["vae_temporal"] == stage1.config["vae_temporal"]  # the tiny architecture
    spatial = dict(stage2.spatial_vae.module.named_parameters())
    assert spatial["encoder.conv_in.weight"].requires_grad  # freeze_vae_2d=False from stage2.py
    assert not spatial["decoder.conv_in.weight"].requires_grad  # freeze_vae_2d_decoder=True from stage2.py
    assert _same_state(stage2, stage1.state_dict())

    dc_ae = VideoDCAE(latent_channels=4, width_list=(8, 16), encoder_depth_list=(1, 1), decoder_depth_list=(1, 1),
                      encoder_block_types=("ResBlock", "ResBlock"), decoder_block_types=("ResBlock", "ResBlock"),
                      temporal_downsample=(True, False))
    dc_ae.save_pretrained(tmp_path / "dc_ae")
    tokens = ["--model.from_pretrained", str(tmp_path / "dc_ae")]
    model_cfg, _ = _model_cfg(CONFIGS / "train" / "video_dc_ae_disc.py", tokens)
    disc_phase = build_model(model_cfg)
    assert disc_phase.latent_channels == 4 and disc_phase.config["disc_off_grad_ckpt"] is True
    assert disc_phase.disc_off_grad_ckpt


def test_command_line_model_keys_reach_the_checkpoint_check(tmp_path: Path) -> None:
    """The keys typed on the command line travel with the config (``cli_model_keys``) to the model builder of the
    scripts: a typed key that contradicts the checkpoint is one error, the shipped config's values are not."""
    from opensora_ae.command import INFERENCE_ALIASES, Command, load_command_config
    from opensora_ae.inference.runner import CLIP_KEYS, build_inference_model

    _v1_1_folder(tmp_path / "vae")
    command = Command("inference", "", "inference", CLIP_KEYS, INFERENCE_ALIASES)
    argv = [str(CONFIGS / "inference" / "causal_vae.py"), "--model.from_pretrained", str(tmp_path / "vae"),
            "--num_frames", "5"]
    cfg = load_command_config(command, [*argv, "--model.hidden_size", "64"])
    assert cfg.cli_model_keys == ["model.from_pretrained", "model.hidden_size"]
    with pytest.raises(CheckpointError, match=r"hidden_size=64 \(checkpoint: 32\)"):
        build_inference_model(cfg.model, torch.device("cpu"), torch.float32, cfg.cli_model_keys)
    cfg = load_command_config(command, argv)
    model = build_inference_model(cfg.model, torch.device("cpu"), torch.float32, cfg.cli_model_keys)
    assert model.config["hidden_size"] == 32 and not model.training
