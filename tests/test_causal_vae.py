"""Open-Sora-Plan CausalVideoVAE: parity with the v1.1 reference, released layouts, loading paths, blocks."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from parity_utils import (
    assert_matches_reference,
    assert_released_layout,
    build_fixture_model,
    load_io,
    load_reference,
    model_config,
    state_dict_shapes,
)
from safetensors.torch import load_file

from opensora_ae.models import build_model
from opensora_ae.models.causal_vae import CausalVAEModel
from opensora_ae.models.causal_vae_blocks import (
    AttnBlock3D,
    AttnBlock3DFix,
    Downsample,
    ResnetBlock2D,
    ResnetBlock3D,
    SingleHeadAttentionBlock,
    SpatialDownsample2x,
    SpatialUpsample2x,
    TimeDownsample2x,
    TimeDownsampleRes2x,
    TimeUpsample2x,
    TimeUpsampleRes2x,
    Upsample,
    causal_conv,
    frame_conv,
)
from opensora_ae.models.checkpoint_io import CheckpointError, load_state_dict_file, load_weights

ROOT = Path(__file__).resolve().parents[1]
FIXTURE_NAME = "osp_causalvae_v1_1"
FIXTURE = ROOT / "tests" / "fixtures" / "parity" / FIXTURE_NAME
CONFIGS = ROOT / "configs" / "vae" / "causal_vae"


def tiny_kwargs(config: str = "v1_1.json", **overrides) -> dict:
    """A shipped config's block layout at the smallest width GroupNorm(32) allows."""
    kwargs = CausalVAEModel.config_from_file(CONFIGS / config)
    kwargs.update(hidden_size=32, hidden_size_mult=[1, 1, 1, 1], num_res_blocks=1)
    kwargs.update(overrides)
    return kwargs


def video(frames: int, height: int = 16, width: int = 16, channels: int = 3, batch: int = 1) -> torch.Tensor:
    return torch.rand(batch, channels, frames, height, width) * 2 - 1


# ---- parity and released layouts ------------------------------------------------------------------------------


def test_fixture_config_matches_reference_constructor() -> None:
    reference = load_reference(FIXTURE_NAME)["tiny_constructor"]["kwargs"]
    model_cfg = model_config(FIXTURE_NAME)
    for key in ("type", "from_pretrained", "scaling_factor"):
        model_cfg.pop(key)
    assert model_cfg == reference


def test_parity_with_reference() -> None:
    model = build_fixture_model(FIXTURE_NAME)  # strict load of the weights in the release's key layout
    io = load_io(FIXTURE_NAME)
    with torch.no_grad():
        z, posterior = model.encode_with_posterior(io["x"])
        x_rec = model.decode(io["z"])
    assert_matches_reference(z, io["z"], "z")
    assert_matches_reference(posterior.mean, io["posterior_mean"], "posterior_mean")
    assert_matches_reference(posterior.logvar, io["posterior_logvar"], "posterior_logvar")
    assert_matches_reference(x_rec, io["x_rec"], "x_rec")


def test_strict_loading_reports_missing_and_unexpected_keys() -> None:
    weights = load_file(str(FIXTURE / "weights.safetensors"))
    kwargs = CausalVAEModel.config_from_file(CONFIGS / "v1_1.json")
    kwargs.update(hidden_size=32, hidden_size_mult=[1, 2, 1, 1], num_res_blocks=1)
    model = CausalVAEModel(**kwargs)
    broken = dict(weights)
    del broken["encoder.mid.attn_1.q.conv.weight"]
    broken["encoder.mid.attn_1.q.weight"] = weights["encoder.mid.attn_1.q.conv.weight"]
    expected = r"missing keys.*attn_1\.q\.conv\.weight.*unexpected keys.*attn_1\.q\.weight"
    with pytest.raises(CheckpointError, match=expected):
        load_weights(model, broken)


def test_released_v1_1_config_gives_released_keys() -> None:
    with torch.device("meta"):
        model = CausalVAEModel.from_config_file(CONFIGS / "v1_1.json")
    assert_released_layout(state_dict_shapes(model), FIXTURE_NAME)
    assert model.compression == (4, 8, 8) and model.latent_channels == 4


def test_release_v1_0_config_layout() -> None:
    with torch.device("meta"):
        model = CausalVAEModel.from_config_file(CONFIGS / "release.json")
    shapes = {key: tuple(tensor.shape) for key, tensor in model.state_dict().items()}
    assert shapes["encoder.conv_in.conv.weight"] == (128, 3, 3, 3, 3)
    assert shapes["encoder.down.0.downsample.conv.conv.weight"] == (128, 128, 1, 3, 3)
    assert shapes["encoder.down.1.block.0.nin_shortcut.conv.weight"] == (256, 128, 1, 1, 1)
    assert shapes["decoder.up.3.upsample.conv.conv.weight"] == (512, 512, 1, 3, 3)
    assert shapes["encoder.mid.attn_1.proj_out.conv.weight"] == (512, 512, 1, 1, 1)
    # TimeDownsample2x / TimeUpsample2x are parameter-free: no time_* keys at all.
    assert not [key for key in shapes if "time_" in key]
    assert type(model.encoder.mid.attn_1) is AttnBlock3D and type(model.decoder.mid.attn_1) is AttnBlock3D
    assert model.compression == (4, 8, 8)


def test_checkpoint_hint_names_the_matching_config() -> None:
    weights = load_file(str(FIXTURE / "weights.safetensors"))
    assert "v1_1.json" in CausalVAEModel.checkpoint_hint(weights)
    assert "hidden_size=32" in CausalVAEModel.checkpoint_hint(weights)
    with torch.device("meta"):
        v1_0 = CausalVAEModel.from_config_file(CONFIGS / "release.json").state_dict()
    assert "release.json" in CausalVAEModel.checkpoint_hint(v1_0)
    assert CausalVAEModel.checkpoint_hint({"decoder.conv_out.weight": torch.zeros(1)}) is None


def test_bad_config_names_the_key() -> None:
    with pytest.raises(ValueError, match=r"encoder_resnet_blocks\[2\].*'ResnetBlock4D'"):
        blocks = ["ResnetBlock2D", "ResnetBlock2D", "ResnetBlock4D", "ResnetBlock3D"]
        CausalVAEModel(**tiny_kwargs(encoder_resnet_blocks=blocks))
    with pytest.raises(ValueError, match="decoder_temporal_upsample"):
        CausalVAEModel(**tiny_kwargs(decoder_temporal_upsample=["", "TimeUpsampleRes2x"]))
    with pytest.raises(ValueError, match="_class_name"):
        CausalVAEModel(**tiny_kwargs(_class_name="CausalVQVAEModel"))


def test_config_file_errors(tmp_path: Path) -> None:
    config = {**CausalVAEModel.config_from_file(CONFIGS / "v1_1.json"), "use_tiling": True}
    (tmp_path / "config.json").write_text(json.dumps(config))
    with pytest.raises(CheckpointError, match=r"config\.json: unknown CausalVAEModel config keys \['use_tiling'\]"):
        CausalVAEModel.from_config_file(tmp_path / "config.json")
    (tmp_path / "config.json").write_text(json.dumps({"type": "dc_ae"}))
    with pytest.raises(CheckpointError, match="'dc_ae' model, not causal_vae"):
        CausalVAEModel.from_pretrained(tmp_path)


# ---- loading paths ----------------------------------------------------------------------------------------------


def _tiny_state(model: CausalVAEModel, offset: float) -> dict[str, torch.Tensor]:
    return {key: tensor + offset for key, tensor in model.state_dict().items()}


def _assert_state_equal(model: CausalVAEModel, expected: dict[str, torch.Tensor]) -> None:
    state = model.state_dict()
    assert state.keys() == expected.keys()
    assert all(torch.equal(state[key], expected[key]) for key in state)


def test_lightning_checkpoint_paths(tmp_path: Path) -> None:
    source = CausalVAEModel(**tiny_kwargs())
    source.save_pretrained(tmp_path)  # config.json next to the .ckpt, as in a training run folder
    (tmp_path / "model.safetensors").unlink()
    plain, ema = _tiny_state(source, 0.0), _tiny_state(source, 1.0)
    loss_tensors = {"loss.logvar": torch.tensor(0.5), "loss.discriminator.main.0.weight": torch.zeros(4, 3, 3, 3, 3)}
    ckpt = {
        "epoch": 3,
        "global_step": 1200,
        "state_dict": {**plain, **loss_tensors},
        "ema_state_dict": {f"module.{key}": value for key, value in ema.items()},
    }
    torch.save(ckpt, tmp_path / "step-1200.ckpt")

    _assert_state_equal(CausalVAEModel.from_pretrained(tmp_path / "step-1200.ckpt"), ema)
    _assert_state_equal(CausalVAEModel.from_pretrained(tmp_path), ema)
    _assert_state_equal(CausalVAEModel.from_pretrained(tmp_path / "step-1200.ckpt", state_dict_key="state_dict"), plain)
    # build_model reads a .ckpt through the same loader: the EMA weights, loss.* dropped; the config.json beside it.
    built = build_model(dict(type="causal_vae", from_pretrained=str(tmp_path / "step-1200.ckpt")))
    _assert_state_equal(built, ema)

    torch.save({"state_dict": {**plain, **loss_tensors}, "ema_state_dict": {}}, tmp_path / "no-ema.ckpt")
    assert load_state_dict_file(tmp_path / "no-ema.ckpt").keys() == {*plain, *loss_tensors}
    with pytest.raises(CheckpointError, match="'ema_state_dict' is empty"):
        load_state_dict_file(tmp_path / "no-ema.ckpt", state_dict_key="ema_state_dict")


def test_config_json_round_trip(tmp_path: Path) -> None:
    shrink = dict(hidden_size=32, hidden_size_mult=[1, 1, 1, 1], num_res_blocks=1)
    model = CausalVAEModel.from_config_file(CONFIGS / "v1_1.json", **shrink).eval()
    model.save_pretrained(tmp_path)
    saved = json.loads((tmp_path / "config.json").read_text())
    release = json.loads((CONFIGS / "v1_1.json").read_text())
    assert saved["type"] == "causal_vae" and saved["scaling_factor"] == pytest.approx(0.18215)
    assert set(release) <= set(saved)
    # Metadata (_diffusers_version) is not read back; every field and _class_name round-trip.
    fields = [key for key in release if key != "_diffusers_version"]
    assert {k: saved[k] for k in fields} == {k: v for k, v in {**release, **shrink}.items() if k in fields}

    built = build_model(dict(type="causal_vae", from_pretrained=str(tmp_path)))
    for loaded in (CausalVAEModel.from_pretrained(tmp_path), built):
        _assert_state_equal(loaded, model.state_dict())
        assert loaded.config == model.config
    x = video(5)
    with torch.no_grad():
        assert torch.equal(model.encode(x), CausalVAEModel.from_pretrained(tmp_path).eval().encode(x))


# ---- frames, latents, interface ---------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def tiny_model() -> CausalVAEModel:
    torch.manual_seed(0)
    return CausalVAEModel(**tiny_kwargs()).eval()


def test_frame_rules(tiny_model: CausalVAEModel) -> None:
    x = video(17)
    with torch.no_grad():
        z = tiny_model.encode(x)
        assert z.shape == (1, 4, 5, 2, 2)
        assert tiny_model.get_latent_size(17, 16, 16) == (5, 2, 2)
        assert tiny_model.decode(z).shape == (1, 3, 17, 16, 16)
        assert tiny_model.decode(z, num_frames=15).shape[2] == 15
        assert tiny_model.encode(video(1)).shape[2] == 1
    with pytest.raises(ValueError, match=r"16 frames.*1 \+ 4\*k.*trim the clip"):
        tiny_model.encode(video(16))
    with pytest.raises(ValueError, match="multiples of 8x8"):
        tiny_model.encode(video(5, height=20))


def test_v1_0_layout_frame_rules() -> None:
    model = CausalVAEModel(**tiny_kwargs("release.json")).eval()
    with torch.no_grad():
        z = model.encode(video(9))
        assert z.shape == (1, 4, 3, 2, 2)
        assert model.decode(z).shape == (1, 3, 9, 16, 16)


def test_tiled_encode_decode(tiny_model: CausalVAEModel) -> None:
    """The shared tiling engine (tested on its own elsewhere) runs this model's encoder/decoder per tile."""
    tiled = CausalVAEModel(**tiny_kwargs(), use_spatial_tiling=True, spatial_tile_size=16).eval()
    tiled.load_state_dict(tiny_model.state_dict())
    x = video(5, 16, 24)
    with torch.no_grad():
        z, z_tiled = tiny_model.encode(x), tiled.encode(x)
        x_rec, x_rec_tiled = tiny_model.decode(z), tiled.decode(z)
        first_tile = tiny_model.encode(x[..., :16, :16])
        single_tile = x[..., :16, :16]  # fits in one tile: tiling changes nothing
        assert torch.equal(tiled.encode(single_tile), first_tile)
    assert z_tiled.shape == z.shape == (1, 4, 2, 2, 3) and x_rec_tiled.shape == x_rec.shape == x.shape
    # The first tile's top-left latent is not blended with any neighbour.
    assert torch.allclose(z_tiled[..., :1, :1], first_tile[..., :1, :1], atol=1e-6)
    assert not torch.allclose(z_tiled, z, atol=1e-4)


def test_latent_scaling(tiny_model: CausalVAEModel) -> None:
    x = video(5)
    with torch.no_grad():
        z, posterior = tiny_model.encode_with_posterior(x)
        assert torch.allclose(z, posterior.mean * 0.18215)
        unscaled = tiny_model.decoder(tiny_model.post_quant_conv(posterior.mean))
        assert torch.allclose(tiny_model.decode(z), unscaled, atol=1e-5)


def test_release_loss_params_map_to_toolkit_losses() -> None:
    from opensora_ae.losses import configs_from_lpips_with_discriminator

    release = CausalVAEModel.config_from_file(CONFIGS / "v1_1.json")
    configs = configs_from_lpips_with_discriminator(release["loss_params"], release["loss_type"])
    assert configs["vae_loss_config"]["kl_loss_weight"] == 1e-6
    assert configs["vae_loss_config"]["logvar_init"] == 0.0
    assert configs["gen_loss_config"]["gen_start"] == 2001 and configs["gen_loss_config"]["disc_weight"] == 0.5
    assert configs["disc_loss_config"]["disc_start"] == 2001
    assert configs["discriminator"]["conv_cls"] == "conv3d"  # LPIPSWithDiscriminator3D


# ---- blocks -------------------------------------------------------------------------------------------------------


def test_causal_conv_replicates_first_frame() -> None:
    conv = causal_conv(3, 4, 3)
    x = video(5, 8, 8)
    out = conv(x)
    assert out.shape == (1, 4, 5, 8, 8)
    first = conv.conv(torch.cat([x[:, :, :1]] * 3, dim=2))
    assert torch.allclose(out[:, :, :1], first, atol=1e-6)
    changed = x.clone()
    changed[:, :, 3:] += 1
    assert torch.equal(conv(changed)[:, :, :3], out[:, :, :3])  # causal: later frames never leak backwards


def test_conv2d_and_resnet2d_work_frame_by_frame() -> None:
    x = video(3, 8, 8, channels=32)
    conv = frame_conv(32, 16, 3)
    assert conv.weight.shape == (16, 32, 3, 3)
    block = ResnetBlock2D(32, 64)
    assert block.conv1.weight.shape == (64, 32, 3, 3) and block.nin_shortcut.weight.shape == (64, 32, 1, 1)
    for module in (conv, block):
        out = module(x)
        for t in range(3):
            assert torch.allclose(out[:, :, t], module(x[:, :, t]), atol=1e-5)


def test_resnet3d_is_causal_with_3d_keys() -> None:
    block = ResnetBlock3D(32, 64)
    keys = {key: tuple(v.shape) for key, v in block.state_dict().items()}
    assert keys["conv1.conv.weight"] == (64, 32, 3, 3, 3) and keys["nin_shortcut.conv.weight"] == (64, 32, 1, 1, 1)
    assert block.norm1.eps == 1e-6 and block.norm1.num_groups == 32
    x = video(4, 4, 4, channels=32)
    out = block(x)
    assert out.shape == (1, 64, 4, 4, 4)
    # GroupNorm pools over time, so only check causality of the convs: a single frame equals itself alone.
    assert torch.allclose(block(x[:, :, :1]), block.nin_shortcut(x[:, :, :1]) + block.conv2(
        F.silu(block.norm2(block.conv1(F.silu(block.norm1(x[:, :, :1])))))
    ), atol=1e-5)


def _attention_reference(
    block: SingleHeadAttentionBlock, x: torch.Tensor, fold
) -> tuple[torch.Tensor, torch.Tensor]:
    """Attention weights softmax(q^T k / sqrt(C)) and values, on the ``(groups, C, N)`` token groups ``fold`` makes."""
    h = block.norm(x)
    q, k, v = (fold(proj(h)) for proj in (block.q, block.k, block.v))  # (groups, C, N)
    weights = torch.softmax(q.transpose(1, 2) @ k * q.shape[1] ** -0.5, dim=2)
    return weights, v


def test_attention_blocks() -> None:
    torch.manual_seed(1)
    fix, old = AttnBlock3DFix(32), AttnBlock3D(32)
    old.load_state_dict(fix.state_dict())
    x = video(3, 4, 5, channels=32)
    b, c, t, h, w = x.shape

    weights, v = _attention_reference(fix, x, lambda y: y.permute(0, 2, 1, 3, 4).reshape(b * t, c, h * w))
    expected = (v @ weights.transpose(1, 2)).reshape(b, t, c, h, w).permute(0, 2, 1, 3, 4)
    assert torch.allclose(fix(x), x + fix.proj_out(expected), atol=1e-5)
    # The v1.0 block reshapes the channel-major tensor straight into B*T groups.
    weights, v = _attention_reference(old, x, lambda y: y.reshape(b * t, c, h * w))
    expected = (v @ weights.transpose(1, 2)).reshape(b, c, t, h, w)
    assert torch.allclose(old(x), x + old.proj_out(expected), atol=1e-5)
    assert not torch.allclose(old(x), fix(x), atol=1e-3)
    assert torch.allclose(old(x[:, :, :1]), fix(x[:, :, :1]), atol=1e-6)  # one frame: the two agree


def test_spatial_samplers() -> None:
    x = video(3, 8, 6, channels=4)
    down2d, down3d = Downsample(4, 4), SpatialDownsample2x(4, 4)
    down3d.conv.conv.weight.data = down2d.conv.weight.data[:, :, None].clone()
    down3d.conv.conv.bias.data = down2d.conv.bias.data.clone()
    out = down2d(x)
    assert out.shape == (1, 4, 3, 4, 3)
    assert torch.allclose(out, down3d(x), atol=1e-5)
    frame = F.conv2d(F.pad(x[:, :, 1], (0, 1, 0, 1)), down2d.conv.weight, down2d.conv.bias, stride=2)
    assert torch.allclose(out[:, :, 1], frame, atol=1e-5)

    up3d, up2d = SpatialUpsample2x(4, 4), Upsample(4, 4)
    assert up3d.conv.conv.weight.shape == (4, 4, 1, 3, 3) and up2d.conv.weight.shape == (4, 4, 3, 3)
    up2d.conv.weight.data = up3d.conv.conv.weight.data[:, :, 0].clone()
    up2d.conv.bias.data = up3d.conv.conv.bias.data.clone()
    assert up3d(x).shape == (1, 4, 3, 16, 12)
    assert torch.allclose(up3d(x), up2d(x), atol=1e-5)


def test_time_downsamplers() -> None:
    x = video(9, 2, 2, channels=4)
    pool = TimeDownsample2x(4, 4)
    assert len(list(pool.parameters())) == 0
    out = pool(x)
    assert out.shape[2] == 5
    assert torch.allclose(out[:, :, 0], x[:, :, 0], atol=1e-6)
    for k in range(1, 5):
        assert torch.allclose(out[:, :, k], x[:, :, 2 * k - 2 : 2 * k + 1].mean(dim=2), atol=1e-6)
    assert pool(x[:, :, :1]).shape[2] == 1

    res = TimeDownsampleRes2x(4, 4)
    assert res.mix_factor.shape == (1,) and res.conv.weight.shape == (4, 4, 3, 3, 3)
    res.mix_factor.data.fill_(50.0)
    assert torch.allclose(res(x), out, atol=1e-5)
    res.mix_factor.data.fill_(-50.0)
    padded = torch.cat([x[:, :, :1], x[:, :, :1], x], dim=2)
    conv_path = F.conv3d(padded, res.conv.weight, res.conv.bias, stride=(2, 1, 1), padding=(0, 1, 1))
    assert torch.allclose(res(x), conv_path, atol=1e-5)


def test_time_upsamplers() -> None:
    x = video(5, 2, 2, channels=4)
    up = TimeUpsample2x(4, 4)
    assert len(list(up.parameters())) == 0
    out = up(x)
    assert out.shape[2] == 9
    assert torch.equal(out[:, :, 0], x[:, :, 0])
    # Linear x2 of frames 1..4 (align_corners=False): ends copy, midpoints weigh 3/4 and 1/4.
    assert torch.allclose(out[:, :, 1], x[:, :, 1], atol=1e-6) and torch.allclose(out[:, :, 8], x[:, :, 4], atol=1e-6)
    assert torch.allclose(out[:, :, 2], 0.75 * x[:, :, 1] + 0.25 * x[:, :, 2], atol=1e-6)
    assert torch.allclose(out[:, :, 3], 0.25 * x[:, :, 1] + 0.75 * x[:, :, 2], atol=1e-6)
    assert torch.equal(up(x[:, :, :1]), x[:, :, :1])

    res = TimeUpsampleRes2x(4, 4)
    assert res.mix_factor.shape == (1,) and res.conv.conv.weight.shape == (4, 4, 3, 3, 3)
    alpha = torch.sigmoid(res.mix_factor)
    assert torch.allclose(res(x), alpha * out + (1 - alpha) * res.conv(out), atol=1e-6)


@pytest.mark.parametrize("config", ["v1_1.json", "release.json"])
def test_bfloat16_forward_on_cpu(config: str) -> None:
    """The inference config's bf16 runs on a CPU (the temporal mean pool is computed in float32)."""
    torch.manual_seed(0)
    model = CausalVAEModel(**tiny_kwargs(config)).eval()
    x = video(5)
    with torch.no_grad():
        reference = model(x, sample_posterior=False)[0]
        x_rec = model.to(torch.bfloat16)(x.bfloat16(), sample_posterior=False)[0]
    assert x_rec.dtype == torch.bfloat16 and x_rec.shape == x.shape
    # Random tiny weights amplify bf16 rounding; the output must still follow the float32 one.
    assert torch.isfinite(x_rec).all()
    assert F.cosine_similarity(x_rec.float().flatten(), reference.flatten(), dim=0) > 0.5
    pooled = TimeDownsample2x(4, 4)(torch.arange(5.0).view(1, 1, 5, 1, 1).expand(1, 4, 5, 1, 1).bfloat16())
    assert pooled.dtype == torch.bfloat16 and pooled[0, 0, :, 0, 0].tolist() == [0.0, 1.0, 3.0]
