"""The model contract, checked once for every registered family (tiny configs, random weights).

A new family adds its tiny config to ``FAMILIES`` and inherits every check: build, save/load round trip, strict
loading errors, eval mode after loading, the shapes rule, tiling, slicing, gradient checkpointing, dtype/device
and torch.compile without graph breaks. Family files keep only what is their own (parity, released layouts).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import torch

from opensora_ae.models import MODELS, VideoAutoencoder, build_model
from opensora_ae.models.causal_vae import CausalVAEModel
from opensora_ae.models.checkpoint_io import CheckpointError, load_weights
from parity_utils import model_config

CAUSAL_VAE_V1_1 = Path(__file__).resolve().parents[1] / "configs" / "vae" / "causal_vae" / "v1_1.json"


@dataclass(frozen=True)
class Family:
    """A family's tiny config, an input it takes (``B C T H W``), tile sizes that tile that input, and a frame
    count it cannot take (None: it takes every count)."""

    config: dict[str, Any]
    shape: tuple[int, int, int, int, int]
    tiling: dict[str, Any] = field(default_factory=dict)
    bad_frames: int | None = None
    # The smallest input (T, H, W) of the graph-break check (tracing time grows with frames and tiles).
    compile_size: tuple[int, int, int] = (5, 8, 8)


def _opensora_v1_2() -> dict[str, Any]:
    config = model_config("opensora1_2_vae")
    config.pop("from_pretrained")
    return config


def _causal_vae() -> dict[str, Any]:
    config = CausalVAEModel.config_from_file(CAUSAL_VAE_V1_1)
    config.update(hidden_size=32, hidden_size_mult=[1, 1, 1, 1], num_res_blocks=1)
    return dict(type="causal_vae", **config)


FAMILIES: dict[str, Family] = {
    "dc_ae": Family(
        dict(
            type="dc_ae", latent_channels=4, width_list=(4, 8, 32, 32), encoder_depth_list=(1, 1, 1, 1),
            decoder_depth_list=(1, 1, 1, 1), encoder_block_types=("ResBlock", "ResBlock", "EViTS5_GLU", "EViT_GLU"),
            decoder_block_types=("ResBlock", "ResBlock", "EViTS5_GLU", "EViT_GLU"),
            temporal_downsample=(False, True, True, False), disc_off_grad_ckpt=True,
        ),
        (2, 3, 16, 32, 32),
        dict(spatial_tile_size=16, temporal_tile_size=8),
        bad_frames=5,
        compile_size=(8, 8, 8),
    ),
    "hunyuan_vae": Family(
        dict(type="hunyuan_vae", latent_channels=4, block_out_channels=(4, 8, 8, 8), layers_per_block=1,
             norm_num_groups=2),
        (2, 3, 9, 16, 16),
        dict(spatial_tile_size=8, temporal_tile_size=4),
        bad_frames=8,
    ),
    "causal_vae": Family(_causal_vae(), (2, 3, 9, 16, 16), dict(spatial_tile_size=8, temporal_tile_size=4), 8),
    "opensora_v1_2_vae": Family(_opensora_v1_2(), (2, 3, 9, 16, 16)),
}
NAMES = sorted(FAMILIES)


def build(name: str, **overrides: Any) -> VideoAutoencoder:
    torch.manual_seed(0)
    return build_model({**FAMILIES[name].config, **overrides})


def pixels(name: str, seed: int = 1) -> torch.Tensor:
    generator = torch.Generator().manual_seed(seed)
    return torch.rand(FAMILIES[name].shape, generator=generator) * 2 - 1


def shipped_families() -> dict[str, type]:
    """The registered families of the package (test modules register their own toy models too)."""
    return {name: cls for name, cls in MODELS.module_dict.items() if cls.__module__.startswith("opensora_ae.")}


def test_every_registered_family_has_a_tiny_config():
    assert NAMES == sorted(shipped_families())


@pytest.mark.parametrize("name", NAMES)
def test_save_load_round_trip_is_exact_and_in_eval_mode(name, tmp_path):
    model = build(name).eval()
    x = pixels(name)
    model.save_pretrained(tmp_path)
    again = build_model(dict(from_pretrained=str(tmp_path), type=FAMILIES[name].config["type"]))
    assert not again.training
    assert again.config == model.config
    for key, value in model.state_dict().items():
        assert torch.equal(again.state_dict()[key], value), key
    with torch.no_grad():
        assert torch.equal(again.encode(x), model.encode(x))


@pytest.mark.parametrize("name", NAMES)
def test_strict_load_names_missing_and_unexpected_keys(name):
    model = build(name)
    state = model.state_dict()
    missing = next(iter(state))
    state.pop(missing)
    state["not_a_layer.weight"] = torch.zeros(1)
    with pytest.raises(CheckpointError) as info:
        load_weights(model, state, strict=True)
    assert missing in str(info.value) and "not_a_layer.weight" in str(info.value)


@pytest.mark.parametrize("name", NAMES)
def test_shapes_rule(name):
    model = build(name).eval()
    x = pixels(name)
    with torch.no_grad():
        x_rec, _, z = model(x)
        assert x_rec.shape == x.shape
        assert tuple(z.shape[2:]) == model.get_latent_size(*x.shape[2:])
        assert z.shape[1] == model.latent_channels
        assert model.reconstruct(x)["recn"].shape == x.shape
        assert model.decode(z, num_frames=x.shape[2]).shape == x.shape
    bad = FAMILIES[name].bad_frames
    if bad is not None:
        with pytest.raises(ValueError, match=f"got {bad} frames"):
            model(x[:, :, :bad])


@pytest.mark.parametrize("name", NAMES)
def test_tiled_close_to_untiled(name):
    family = FAMILIES[name]
    model = build(name).eval()
    if not family.tiling:
        with pytest.raises(ValueError, match="no tiled inference"):
            model.enable_tiling()
        return
    x = pixels(name)[:1]
    with torch.no_grad():
        z = model.encode(x)
        x_rec = model.decode(z, num_frames=x.shape[2])
        model.enable_tiling(**family.tiling)
        assert model.config["use_spatial_tiling"] and model.config["use_temporal_tiling"]
        z_tiled = model.encode(x)
        x_rec_tiled = model.decode(z, num_frames=x.shape[2])
        model.disable_tiling()
        assert torch.equal(model.encode(x), z)
    assert z_tiled.shape == z.shape and x_rec_tiled.shape == x_rec.shape
    # Every tile of these tiny inputs is a few latents wide and GroupNorm/attention statistics are per tile, so
    # random weights give outputs that are close, not equal (the parity tests match the references' tiling
    # exactly); a misplaced or unblended tile decorrelates them.
    assert not torch.equal(z_tiled, z)
    assert (z_tiled - z).abs().mean() < 0.8 * z.abs().mean()
    assert torch.nn.functional.cosine_similarity(x_rec_tiled.flatten(), x_rec.flatten(), dim=0) > 0.15


@pytest.mark.parametrize("name", NAMES)
def test_slicing_gives_the_same_outputs(name):
    model = build(name).eval()
    x = pixels(name)
    with torch.no_grad():
        z = model.encode(x)
        x_rec = model.decode(z, num_frames=x.shape[2])
        model.enable_slicing()
        torch.testing.assert_close(model.encode(x), z, atol=3e-4, rtol=1e-3)
        torch.testing.assert_close(model.decode(z, num_frames=x.shape[2]), x_rec, atol=3e-4, rtol=1e-3)
        _, posterior, _ = model(x, sample_posterior=False)
        model.disable_slicing()
        _, whole, _ = model(x, sample_posterior=False)
    if whole is not None:
        torch.testing.assert_close(posterior.mean, whole.mean, atol=3e-4, rtol=1e-3)


def _gradients(model: VideoAutoencoder, x: torch.Tensor) -> dict[str, torch.Tensor]:
    model.zero_grad()
    x_rec, _, z = model(x, sample_posterior=False)
    ((x_rec - x).abs().mean() + z.square().mean()).backward()
    return {name: p.grad.clone() for name, p in model.named_parameters() if p.grad is not None}


@pytest.mark.parametrize("name", NAMES)
def test_gradient_checkpointing_gives_the_same_gradients(name):
    model = build(name).train()
    x = pixels(name)[:1]
    reference = _gradients(model, x)
    model.enable_gradient_checkpointing()
    assert model.is_gradient_checkpointing
    checkpointed = _gradients(model, x)
    assert checkpointed.keys() == reference.keys() and len(reference) > 0
    for key, grad in reference.items():
        torch.testing.assert_close(checkpointed[key], grad, atol=1e-6, rtol=1e-5, msg=key)
    if model.disc_off_grad_ckpt:
        last = model.get_last_layer()
        holders = [b for b in model.checkpointed_blocks() if any(p is last for p in b.parameters())]
        assert holders and not any(block.gradient_checkpointing for block in holders)
    model.disable_gradient_checkpointing()
    assert not model.is_gradient_checkpointing


@pytest.mark.parametrize("name", NAMES)
def test_dtype_and_device(name):
    model = build(name)
    assert model.dtype == torch.float32 and model.device == torch.device("cpu")
    model.to(torch.float64)
    assert model.dtype == torch.float64
    with torch.no_grad():
        assert model.encode(pixels(name).double()).dtype == torch.float64


@pytest.mark.slow
@pytest.mark.parametrize("name", NAMES)
def test_compile_without_graph_breaks(name):
    torch._dynamo.reset()
    model = build(name).eval()
    t, h, w = FAMILIES[name].compile_size
    x = pixels(name)[:1, :, :t, :h, :w]
    with torch.no_grad():
        z = model.encode(x)
        encode = torch._dynamo.explain(model.encode)(x)
        decode = torch._dynamo.explain(model.decode)(z, x.shape[2])
    model.train()
    forward = torch._dynamo.explain(model)(x)
    for what, explained in (("encode", encode), ("decode", decode), ("forward", forward)):
        assert explained.graph_break_count == 0, (what, explained.break_reasons)


def test_top_level_api_names_every_family():
    import opensora_ae

    assert opensora_ae.build_model is build_model and opensora_ae.MODELS is MODELS
    exported = {getattr(opensora_ae, name) for name in ("VideoDCAE", "HunyuanVAE", "OpenSoraVAEV12", "CausalVAEModel")}
    assert exported == set(shipped_families().values())
    assert all(issubclass(cls, opensora_ae.VideoAutoencoder) for cls in exported)
    with pytest.raises(AttributeError, match="no attribute 'Nope'"):
        opensora_ae.Nope  # noqa: B018


def test_compile_blocks_and_the_compile_key():
    from opensora_ae.inference.runner import build_inference_model

    model = build("hunyuan_vae").eval()
    x = pixels("hunyuan_vae")[:1]
    with torch.no_grad():
        expected = model.encode(x)
        model.compile_blocks(backend="eager")
        compiled = [b for b in model.checkpointed_blocks() if b._compiled_call_impl is not None]
        assert compiled and len(compiled) == len(list(model.checkpointed_blocks()))
        torch.testing.assert_close(model.encode(x), expected)
    built = build_inference_model(
        {**FAMILIES["dc_ae"].config, "random_init": True, "compile": True}, torch.device("cpu"), torch.float32
    )
    stages = list(built.encoder.stages)
    assert all(stage._compiled_call_impl is not None for stage in stages)
    # Only the outermost blocks are compiled (nested ones run inside their parent's graph).
    assert all(inner._compiled_call_impl is None for stage in stages for inner in stage.modules() if inner is not stage)


@pytest.mark.parametrize("name", NAMES)
def test_config_keys_are_the_saved_config(name):
    """``config_keys()`` lists what ``config.json`` holds: every key the constructor takes, shared ones included."""
    model = build(name)
    assert set(model.config) <= set(type(model).config_keys())
    assert {"disc_off_grad_ckpt"} <= set(model.config)
