"""HunyuanVideo causal 3-D VAE: reference parity, released key layout, diffusers interop, checkpoint formats,
tiling semantics and the causal samplers."""

from __future__ import annotations

import json

import pytest
import torch
import torch.nn.functional as F
from parity_utils import (
    assert_matches_reference,
    assert_released_layout,
    fixture_dir,
    load_io,
    model_config,
    one_thread,  # noqa: F401  (fixture)
    released_keys,
    state_dict_shapes,
)
from safetensors.torch import load_file, save_file

from opensora_ae.models import build_model
from opensora_ae.models.checkpoint_io import CheckpointError
from opensora_ae.models.hunyuan_vae import HunyuanVAE, stage_factors
from opensora_ae.models.layers.sampling import CausalDownsample, CausalUpsample, causal_nearest_upsample

pytestmark = pytest.mark.usefixtures("one_thread")
NAME = "hunyuan_vae"
FIXTURE = fixture_dir(NAME)
# Small enough for CI, wide enough for 4 GroupNorm groups and every block type of the release.
INTEROP_KWARGS = dict(latent_channels=4, layers_per_block=1, norm_num_groups=4, block_out_channels=(8, 16, 32, 32))
assert_matches = assert_matches_reference


def tiny_config(**overrides) -> dict:
    """The fixture's ``model.py`` model dict (weights path resolved), updated with ``overrides``."""
    return model_config(NAME, **overrides)


@pytest.fixture(scope="module")
def model() -> HunyuanVAE:
    return build_model(tiny_config()).eval()


@pytest.fixture(scope="module")
def io() -> dict[str, torch.Tensor]:
    return load_io(NAME)


# ---- parity with the Open-Sora 2.0 reference ------------------------------------------------------------------
@torch.no_grad()
def test_parity_encode_decode(model, io):
    z, posterior = model.encode_with_posterior(io["x"])
    assert_matches(z, io["z"], "z")
    assert_matches(posterior.mean, io["posterior_mean"], "posterior_mean")
    assert_matches(posterior.logvar, io["posterior_logvar"], "posterior_logvar")
    assert_matches(model.decode(io["z"]), io["x_rec"], "x_rec")


@torch.no_grad()
def test_parity_tiled(model, io):
    tiled = build_model(tiny_config(use_spatial_tiling=True, use_temporal_tiling=True)).eval()
    assert_matches(tiled.encode(io["x"]), io["z_tiled"], "z_tiled")
    assert_matches(tiled.decode(io["z_tiled"]), io["x_rec_tiled"], "x_rec_tiled")
    model.set_tiling(use_spatial_tiling=True, use_temporal_tiling=True)
    try:
        assert_matches(model.encode(io["x"]), io["z_tiled"], "z_tiled via set_tiling")
    finally:
        model.set_tiling(use_spatial_tiling=False, use_temporal_tiling=False)


def test_released_key_layout_on_meta_device():
    with torch.device("meta"):
        released = HunyuanVAE()  # defaults are the released hyper-parameters
    assert_released_layout(state_dict_shapes(released), NAME)
    expected = sum(torch.Size(shape).numel() for shape in released_keys(NAME).values())
    assert sum(t.numel() for t in released.parameters()) == expected


def test_stage_factors_follow_the_reference():
    assert stage_factors(4, 8, 4) == [(1, 2, 2), (2, 2, 2), (2, 2, 2), (1, 1, 1)]
    with pytest.raises(ValueError, match="powers of 2"):
        stage_factors(4, 6, 4)
    with pytest.raises(ValueError, match="at most 3 resampling stages"):
        stage_factors(4, 16, 4)


# ---- frame rules and interface --------------------------------------------------------------------------------
@torch.no_grad()
@pytest.mark.parametrize("frames,latents", [(1, 1), (5, 2), (9, 3)])
def test_causal_frame_counts(model, frames, latents):
    x = torch.rand(1, 3, frames, 16, 24) * 2 - 1
    z = model.encode(x)
    assert z.shape == (1, 4, latents, 2, 3)
    assert model.get_latent_size(frames, 16, 24) == (latents, 2, 3)
    assert model.decode(z).shape == (1, 3, frames, 16, 24)
    assert model.decode(z, num_frames=frames - 1 or 1).shape[2] == (frames - 1 or 1)


def test_bad_inputs_give_clear_errors(model):
    with pytest.raises(ValueError, match="multiples of 8"):
        model.encode(torch.zeros(1, 3, 5, 12, 16))
    with pytest.raises(ValueError, match="B 4 t h w"):
        model.decode(torch.zeros(1, 3, 2, 2, 2))
    with pytest.raises(ValueError, match="act_fn"):
        HunyuanVAE(act_fn="gelu", **INTEROP_KWARGS)
    with pytest.raises(ValueError, match=r"got 8 frames but the encoder needs T = 1 \+ 4\*k"):
        model(torch.zeros(1, 3, 8, 16, 16))


def test_old_scale_factor_name_still_loads():
    """Configs written before the rename (``scale_factor``) build the same model and save the new name."""
    model = HunyuanVAE(scale_factor=0.25, **INTEROP_KWARGS)
    assert model.scaling_factor == 0.25
    assert "scale_factor" not in model.config and model.config["scaling_factor"] == 0.25


# ---- diffusers AutoencoderKLHunyuanVideo ----------------------------------------------------------------------
def diffusers_model(**kwargs):
    diffusers = pytest.importorskip("diffusers")
    model = diffusers.AutoencoderKLHunyuanVideo(**{**INTEROP_KWARGS, **kwargs}).eval()
    # diffusers tiles more than 16 frames by default; compare the plain (untiled) computation.
    model.use_framewise_encoding = model.use_framewise_decoding = False
    return model


def assert_same_state(a: torch.nn.Module, b: torch.nn.Module) -> None:
    sa, sb = a.state_dict(), b.state_dict()
    assert sorted(sa) == sorted(sb)
    assert all(torch.equal(sa[k], sb[k]) for k in sa)


@torch.no_grad()
@pytest.mark.parametrize("direction", ["diffusers_to_ours", "ours_to_diffusers"])
def test_same_outputs_as_diffusers(direction):
    torch.manual_seed(0)
    theirs, ours = diffusers_model(), HunyuanVAE(**INTEROP_KWARGS).eval()
    if direction == "diffusers_to_ours":
        ours.load_state_dict(theirs.state_dict(), strict=True)
    else:
        for p in ours.parameters():  # move away from the default init so every tensor matters
            p.add_(0.05 * torch.randn_like(p))
        theirs.load_state_dict(ours.state_dict(), strict=True)
    x = torch.rand(1, 3, 9, 16, 24) * 2 - 1
    posterior = theirs.encode(x).latent_dist
    z, ours_posterior = ours.encode_with_posterior(x)
    assert_matches(ours_posterior.mean, posterior.mean, "posterior mean")
    assert_matches(ours_posterior.logvar, posterior.logvar, "posterior logvar")
    assert_matches(z, theirs.config.scaling_factor * posterior.mean, "z")
    assert_matches(ours.decode(z), theirs.decode(z / theirs.config.scaling_factor).sample, "decode")


def test_save_pretrained_diffusers_loads_in_diffusers_and_back(tmp_path):
    diffusers = pytest.importorskip("diffusers")
    torch.manual_seed(0)
    ours = HunyuanVAE(**INTEROP_KWARGS)
    folder = ours.save_pretrained(tmp_path / "diffusers", format="diffusers")
    assert sorted(p.name for p in folder.iterdir()) == ["config.json", "diffusion_pytorch_model.safetensors"]
    theirs = diffusers.AutoencoderKLHunyuanVideo.from_pretrained(folder)
    assert list(theirs.config.block_out_channels) == [8, 16, 32, 32] and theirs.config.norm_num_groups == 4
    assert_same_state(ours, theirs)
    # build_model takes the hyper-parameters from the diffusers config.json.
    rebuilt = build_model(dict(type="hunyuan_vae", from_pretrained=str(folder)))
    assert rebuilt.latent_channels == 4 and rebuilt.config["block_out_channels"] == [8, 16, 32, 32]
    assert_same_state(ours, rebuilt)
    with pytest.raises(ValueError, match="format='toolkit'"):
        HunyuanVAE(shift_factor=0.1, **INTEROP_KWARGS).save_pretrained(tmp_path / "bad", format="diffusers")


def test_build_from_diffusers_folder(tmp_path):
    theirs = diffusers_model(scaling_factor=0.5)
    theirs.save_pretrained(tmp_path)
    ours = build_model(dict(type="hunyuan_vae", from_pretrained=str(tmp_path)))
    assert ours.scaling_factor == 0.5 and ours.compression == (4, 8, 8)
    assert_same_state(ours, theirs)
    config = json.loads((tmp_path / "config.json").read_text())
    config["down_block_types"][0] = "SomethingElse3D"
    (tmp_path / "config.json").write_text(json.dumps(config))
    with pytest.raises(CheckpointError, match="down_block_types"):
        build_model(dict(type="hunyuan_vae", from_pretrained=str(tmp_path)))


# ---- checkpoint formats ---------------------------------------------------------------------------------------
@pytest.mark.parametrize("wrapper", [None, "state_dict", "module"])
def test_loads_tencent_checkpoint(tmp_path, wrapper):
    weights = load_file(str(FIXTURE / "weights.safetensors"))
    state = {f"vae.{k}": v for k, v in weights.items()}
    path = tmp_path / "pytorch_model.pt"
    torch.save(state if wrapper is None else {wrapper: state}, path)
    model = build_model(tiny_config(from_pretrained=str(path)))
    assert_same_state(model, build_model(tiny_config()))


def test_safetensors_file_and_toolkit_folder_round_trip(tmp_path, model):
    path = tmp_path / "vae.safetensors"
    save_file(model.state_dict(), str(path))
    assert_same_state(build_model(tiny_config(from_pretrained=str(path))), model)
    folder = model.save_pretrained(tmp_path / "toolkit")
    rebuilt = HunyuanVAE.from_pretrained(folder)
    assert rebuilt.config == json.loads(json.dumps(model.config))
    assert_same_state(rebuilt, model)


def test_strict_loading_names_missing_keys(tmp_path):
    weights = load_file(str(FIXTURE / "weights.safetensors"))
    weights.pop("decoder.conv_out.conv.weight")
    path = tmp_path / "partial.safetensors"
    save_file(weights, str(path))
    with pytest.raises(CheckpointError, match="decoder.conv_out.conv.weight"):
        build_model(tiny_config(from_pretrained=str(path)))


# ---- tiling semantics -----------------------------------------------------------------------------------------
def record_lengths(module: torch.nn.Module) -> list[int]:
    """Frame counts of the inputs that ``module`` sees, appended as it runs."""
    lengths: list[int] = []
    module.register_forward_pre_hook(lambda _, args: lengths.append(args[0].shape[2]))
    return lengths


@torch.no_grad()
def test_temporal_tiles_read_tile_plus_one_frames_and_drop_first_output(model):
    """Released geometry: 64-frame tiles read 65 frames (17 latents); later tiles drop their first latent."""
    tiled = build_model(tiny_config(use_temporal_tiling=True, temporal_tile_size=64))
    encoder_lengths, decoder_lengths = record_lengths(tiled.encoder), record_lengths(tiled.decoder)
    x = torch.rand(1, 3, 129, 8, 8) * 2 - 1
    z = tiled.encode(x)
    # Tiles start every int(64 * 0.75) = 48 frames and read 65 frames.
    assert encoder_lengths == [65, 65, 33]
    assert z.shape == (1, 4, 33, 1, 1)
    # First tile: 17 latents computed from frames 0..64, of which 12 + 1 are kept unblended.
    assert_matches(z[:, :, :13], model.encode(x[:, :, :65])[:, :, :13], "first tile")
    # Second tile (frames 48..112): its first latent (lone frame 48) is dropped, the next 4 are blended, and
    # latents 5..12 of the tile land unchanged at 17..24.
    assert_matches(z[:, :, 17:25], model.encode(x[:, :, 48:113])[:, :, 5:13], "second tile")
    x_rec = tiled.decode(z)
    # Latent tiles of 16 start every 12 latents and read 17.
    assert decoder_lengths == [17, 17, 9]
    assert x_rec.shape == x.shape
    assert_matches(x_rec[:, :, :49], model.decode(z[:, :, :17])[:, :, :49], "first decoded tile")


@torch.no_grad()
def test_tiled_output_has_untiled_shape_for_odd_sizes(model):
    tiled = build_model(tiny_config(use_spatial_tiling=True, use_temporal_tiling=True))
    x = torch.rand(1, 3, 21, 40, 72) * 2 - 1
    z = tiled.encode(x)
    assert z.shape == model.encode(x).shape == (1, 4, 6, 5, 9)
    assert tiled.decode(z).shape == x.shape


def test_released_tiling_defaults():
    with torch.device("meta"):
        released = HunyuanVAE(use_spatial_tiling=True, use_temporal_tiling=True)
    config = released.tiler.config
    assert (config.spatial_tile_size, config.temporal_tile_size, config.tile_overlap_factor) == (256, 64, 0.25)


# ---- causal samplers ------------------------------------------------------------------------------------------
def test_causal_nearest_upsample_matches_split_first_frame():
    x = torch.randn(2, 3, 4, 5, 6)
    first = F.interpolate(x[:, :, 0], scale_factor=(2, 2), mode="nearest").unsqueeze(2)
    rest = F.interpolate(x[:, :, 1:], scale_factor=(2, 2, 2), mode="nearest")
    torch.testing.assert_close(causal_nearest_upsample(x, (2, 2, 2)), torch.cat([first, rest], dim=2), rtol=0, atol=0)
    spatial = F.interpolate(x, scale_factor=(1, 2, 2), mode="nearest")
    torch.testing.assert_close(causal_nearest_upsample(x, (1, 2, 2)), spatial, rtol=0, atol=0)
    assert causal_nearest_upsample(x[:, :, :1], (2, 2, 2)).shape == (2, 3, 1, 10, 12)


@torch.no_grad()
def test_causal_samplers_frame_counts_and_causality():
    down, up = CausalDownsample(4, stride=(2, 2, 2)), CausalUpsample(4, 6, scale_factor=(2, 2, 2))
    x = torch.randn(1, 4, 9, 8, 8)
    assert down(x).shape == (1, 4, 5, 4, 4)  # 2k+1 -> k+1
    assert up(x).shape == (1, 6, 17, 16, 16)  # k+1 -> 2k+1
    later = x.clone()
    later[:, :, 5:] += 1.0
    for layer, kept in ((down, 3), (up, 9)):  # outputs that depend on frames < 5 only
        torch.testing.assert_close(layer(x)[:, :, :kept], layer(later)[:, :, :kept])
        assert (layer(x)[:, :, kept:] - layer(later)[:, :, kept:]).abs().max() > 1e-3
    # The first output frame sees the first input frame alone.
    first_alone = F.pad(x[:, :, :1].expand(-1, -1, 3, -1, -1), (1, 1, 1, 1, 0, 0), mode="replicate")
    torch.testing.assert_close(down(x)[:, :, :1], down.conv.conv(first_alone))


@pytest.mark.parametrize("scale", [(2, 2, 2), (1, 2, 2), (2, 1, 1)])
@pytest.mark.parametrize("space_pad", ["replicate", "zeros"])
def test_folded_upsample_equals_upsample_then_conv(scale, space_pad):
    """The phase-folded conv (no upsampled tensor) equals conv(nearest upsample), values and gradients."""
    layer = CausalUpsample(4, 6, scale_factor=scale, space_pad=space_pad)
    assert layer.fold_upsampling
    results = []
    for frames in (1, 4):
        x = torch.randn(2, 4, frames, 5, 7, requires_grad=True)
        for compute in (layer, lambda t: layer.conv(causal_nearest_upsample(t, scale))):
            layer.zero_grad()
            out = compute(x)
            (out * torch.linspace(-1, 1, out.numel()).view_as(out)).sum().backward()
            results.append((out.detach(), x.grad.clone(), layer.conv.conv.weight.grad.clone()))
            x.grad = None
    for folded, plain in zip(results[0::2], results[1::2]):
        for a, b in zip(folded, plain):
            torch.testing.assert_close(a, b, atol=1e-4, rtol=1e-4)  # weight grads sum ~1000 products


@pytest.mark.parametrize("time_pad,space_pad", [("replicate", "replicate"), ("zeros", "zeros")])
def test_resnet_inference_path_equals_autograd_path(time_pad, space_pad):
    """Without autograd the shared ResnetBlock pads before SiLU (in place); values must not change."""
    from opensora_ae.models.layers.conv import CausalConv3d
    from opensora_ae.models.layers.resnet import ResnetBlock

    block = ResnetBlock(
        4, 8, lambda i, o, k: CausalConv3d(i, o, k, time_pad=time_pad, space_pad=space_pad), num_groups=2
    ).eval()
    x = torch.randn(1, 4, 5, 6, 7)
    with torch.enable_grad():
        expected = block(x)
    with torch.inference_mode():
        actual = block(x)
    torch.testing.assert_close(actual, expected.detach(), atol=1e-6, rtol=1e-6)
