"""Video DC-AE: parity with the Open-Sora 2.0 reference, released layout, frame rules, interface."""

from __future__ import annotations

import pytest
import torch

from opensora_ae.models import build_model
from opensora_ae.models.checkpoint_io import CheckpointError, load_weights
from opensora_ae.models.dc_ae import DC_AE_CONFIGS, VideoDCAE
from parity_utils import (
    assert_matches_reference,
    assert_released_layout,
    build_fixture_model,
    load_fixture_config,
    load_io,
    model_config,
    one_thread,  # noqa: F401  (fixture)
    state_dict_shapes,
)

pytestmark = pytest.mark.usefixtures("one_thread")

FIXTURE = "opensora2_dc_ae"


def tiny(**kwargs) -> VideoDCAE:
    """A very small DC-AE (two stages per kind) for interface tests."""
    base = dict(
        latent_channels=4,
        width_list=(4, 8, 32, 32),
        encoder_depth_list=(1, 1, 1, 1),
        decoder_depth_list=(1, 1, 1, 1),
        encoder_block_types=("ResBlock", "ResBlock", "EViTS5_GLU", "EViT_GLU"),
        decoder_block_types=("ResBlock", "ResBlock", "EViTS5_GLU", "EViT_GLU"),
        temporal_downsample=(False, True, True, False),
    )
    return VideoDCAE(**{**base, **kwargs})


@pytest.fixture(scope="module")
def io():
    return load_io(FIXTURE)


@pytest.fixture(scope="module")
def fixture_model():
    return build_fixture_model(FIXTURE)


def test_parity_encode_decode(fixture_model, io):
    with torch.no_grad():
        assert_matches_reference(fixture_model.encode(io["x"]), io["z"], "z")
        assert_matches_reference(fixture_model.decode(io["z"]), io["x_rec"], "x_rec")


def test_parity_tiled(io):
    model = build_fixture_model(FIXTURE, **load_fixture_config(FIXTURE).tiling)
    with torch.no_grad():
        z_tiled = model.encode(io["x"])
        assert_matches_reference(z_tiled, io["z_tiled"], "z_tiled")
        assert_matches_reference(model.decode(io["z_tiled"]), io["x_rec_tiled"], "x_rec_tiled")


def test_released_layout_on_meta_device():
    with torch.device("meta"):
        model = VideoDCAE(model_name="dc-ae-f32t4c128")
    assert_released_layout(state_dict_shapes(model), FIXTURE)
    assert sum(p.numel() for p in model.parameters()) == 459_462_147
    assert model.latent_channels == 128 and model.compression == (4, 32, 32) and not model.causal


# Open-Sora 2.0 divides the c256 latent by 0.46505: the same latent is ours times 1 / 0.46505.
@pytest.mark.parametrize("name, latent, scale", [("dc-ae-f32t4c64", 64, 1.0), ("dc-ae-f32t4c256", 256, 1 / 0.46505)])
def test_named_configs(name, latent, scale):
    with torch.device("meta"):
        model = VideoDCAE(model_name=name)
    assert model.latent_channels == latent and model.scaling_factor == scale
    assert model.encoder.project_out.main.op_list[0].conv.weight.shape[0] == latent
    assert set(DC_AE_CONFIGS) == {"dc-ae-f32t4c64", "dc-ae-f32t4c128", "dc-ae-f32t4c256"}


def test_strict_load_error_names_config():
    from safetensors.torch import load_file

    config = model_config(FIXTURE)
    weights = load_file(config.pop("from_pretrained"))
    config.pop("type")
    model = VideoDCAE(**{**config, "latent_channels": 16})
    with pytest.raises(CheckpointError) as info:
        load_weights(model, weights)
    message = str(info.value)
    assert "shape mismatches" in message and "latent width is 8" in message and "dc_ae" in message


def test_frame_rules():
    model = tiny().eval()
    with torch.no_grad():
        for frames, latents in [(1, 1), (2, 1), (8, 2), (12, 3)]:
            z = model.encode(torch.zeros(1, 3, frames, 16, 24))
            assert z.shape == (1, 4, latents, 2, 3) == (1, 4, *model.get_latent_size(frames, 16, 24))
        assert model.decode(torch.zeros(1, 4, 1, 1, 1)).shape[2] == 1
        assert model.decode(torch.zeros(1, 4, 3, 1, 1)).shape[2] == 12
        for frames, size in [(5, 16), (3, 16), (8, 12)]:
            with pytest.raises(ValueError, match="pad_to_valid=True"):
                model.encode(torch.zeros(1, 3, frames, size, size))
        with pytest.raises(ValueError, match="decode to 1; clips must follow"):
            model(torch.zeros(1, 3, 4, 16, 16))


def test_pad_to_valid_crops_back():
    model = tiny(pad_to_valid=True).eval()
    x = torch.rand(1, 3, 5, 40, 36) * 2 - 1
    with torch.no_grad():
        x_rec, posterior, z = model(x)
    assert posterior is None
    assert z.shape == (1, 4, 2, 5, 5) and model.get_latent_size(5, 40, 36) == (2, 5, 5)
    assert x_rec.shape == x.shape and model.reconstruct(x)["recn"].shape == x.shape


def test_scaling_and_shift_follow_diffusers():
    plain = tiny().eval()
    scaled = tiny(scaling_factor=0.5, shift_factor=0.25).eval()
    scaled.load_state_dict(plain.state_dict())
    x = torch.rand(1, 3, 8, 16, 16) * 2 - 1
    with torch.no_grad():
        z = plain.encode(x)
        torch.testing.assert_close(scaled.encode(x), (z - 0.25) * 0.5)
        torch.testing.assert_close(scaled.decode((z - 0.25) * 0.5), plain.decode(z))


def test_bad_config_errors():
    with pytest.raises(ValueError, match="unknown model_name"):
        VideoDCAE(model_name="dc-ae-f99")
    with pytest.raises(ValueError, match="unknown block type"):
        tiny(encoder_block_types=("ResBlock", "Nope", "EViTS5_GLU", "EViT_GLU"))
    with pytest.raises(ValueError, match="encoder_depth_list has 3 entries"):
        tiny(encoder_depth_list=(1, 1, 1))
    with pytest.raises(ValueError, match="temporal_tile_size"):
        tiny(temporal_tile_size=6)
    with pytest.raises(TypeError, match=r"unknown config keys \['use_tiling'\]"):
        tiny(use_tiling=True)


def test_width_and_latent_errors_name_the_config_key():
    with pytest.raises(ValueError, match=r"latent_channels=128 must divide width_list\[-1\]=64"):
        tiny(width_list=(4, 8, 32, 64), latent_channels=128)
    with pytest.raises(ValueError, match=r"width_list\[2\]=48 must divide 4 \* width_list\[1\]=32"):
        tiny(width_list=(4, 8, 48, 48))
    with pytest.raises(ValueError, match="attention_head_dim=32"):
        tiny(width_list=(4, 8, 16, 16))


def test_forward_hooks_fire_on_every_conv():
    """Convs run through their module (no backend-specific call), so hooks see every one."""
    model = tiny().eval()
    seen = []
    for module in model.modules():
        if isinstance(module, torch.nn.Conv3d):
            module.register_forward_hook(lambda m, args, out: seen.append(m))
    with torch.no_grad():
        model(torch.rand(1, 3, 8, 16, 16))
    assert {id(m) for m in seen} == {id(m) for m in model.modules() if isinstance(m, torch.nn.Conv3d)}


def test_saved_config_holds_the_architecture_resolved_from_model_name(tmp_path):
    """config.json spells out what model_name supplied: the folder rebuilds the model without DC_AE_CONFIGS."""
    import json

    from opensora_ae.models.dc_ae import DC_AE_CONFIGS, VideoDCAE

    named = DC_AE_CONFIGS["dc-ae-f32t4c128"]
    model = VideoDCAE(model_name="dc-ae-f32t4c128", width_list=[8, 8, 16, 16, 32, 32], latent_channels=16,
                      attention_head_dim=8)
    model.save_pretrained(tmp_path)
    saved = json.loads((tmp_path / "config.json").read_text())
    assert saved["encoder_block_types"] == list(named["encoder_block_types"])
    assert saved["temporal_downsample"] == [bool(v) for v in named["temporal_downsample"]]
    assert saved["width_list"] == [8, 8, 16, 16, 32, 32] and saved["latent_channels"] == 16
    rebuilt = VideoDCAE(**{k: v for k, v in saved.items() if k not in ("type", "model_name")})
    assert rebuilt.config == {**model.config, "model_name": None}


def test_first_stage_of_depth_zero_is_folded_into_the_projections():
    """A depth-0 first stage (the image DC-AE f32c32-in-1.0 layout): the encoder is a stride-2 conv straight to
    width_list[1], then stages 1+; the decoder ends in RMSNorm -> ReLU -> nearest 2x upsample -> conv. Checked
    against those ops written out with torch.nn.functional on the model's own weights."""
    import torch.nn.functional as F

    model = tiny(encoder_depth_list=(0, 1, 1, 1), decoder_depth_list=(0, 1, 1, 1)).eval()
    keys = set(model.state_dict())
    assert model.state_dict()["encoder.project_in.conv.weight"].shape == (8, 3, 3, 3, 3)
    assert model.state_dict()["decoder.project_out.op_list.2.conv.conv.weight"].shape == (3, 8, 3, 3, 3)
    assert not any(key.startswith(("encoder.stages.0.", "decoder.stages.0.")) for key in keys)
    assert model.get_last_layer() is model.decoder.project_out.op_list[2].conv.conv.weight
    x = torch.rand(1, 3, 8, 16, 16) * 2 - 1
    encoder, decoder = model.encoder, model.decoder
    with torch.no_grad():
        h = F.conv3d(x, encoder.project_in.conv.weight, encoder.project_in.conv.bias, stride=(1, 2, 2), padding=1)
        for stage in encoder.stages[1:]:
            h = stage(h)
        torch.testing.assert_close(model.encode(x), encoder.project_out(h), rtol=0, atol=0)
        z = model.encode(x)
        assert z.shape == (1, 4, 2, 2, 2)
        h = decoder.project_in(z)
        for stage in reversed(decoder.stages[1:]):
            h = stage(h)
        norm, head = decoder.project_out.op_list[0], decoder.project_out.op_list[2].conv.conv
        h = F.relu(norm(h))
        expected = F.conv3d(F.interpolate(h, scale_factor=(1, 2, 2), mode="nearest"), head.weight, head.bias,
                            padding=1)
        torch.testing.assert_close(model.decode(z), expected, rtol=0, atol=0)
    assert model.decode(z).shape == x.shape


def test_only_the_first_stage_may_have_depth_zero():
    with pytest.raises(ValueError, match=r"decoder_depth_list=\[1, 0, 1, 1\]: every stage but the first"):
        tiny(decoder_depth_list=(1, 0, 1, 1))
    encoder_only = tiny(encoder_depth_list=(0, 1, 1, 1)).eval()  # each side folds its own first stage
    with torch.no_grad():
        assert encoder_only(torch.rand(1, 3, 8, 16, 16))[0].shape == (1, 3, 8, 16, 16)
