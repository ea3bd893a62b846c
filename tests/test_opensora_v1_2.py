"""Open-Sora 1.2 VAE pipeline: parity with the reference fixture, released key layout, frame rules, training knobs."""

from __future__ import annotations

import json

import pytest
import torch
from safetensors.torch import load_file

from opensora_ae.models import build_model
from opensora_ae.models.checkpoint_io import CheckpointError, load_weights
from opensora_ae.models.opensora_v1_2 import OpenSoraVAEV12, time_depth_to_space
from parity_utils import (
    assert_io_matches,
    assert_matches_reference,
    assert_released_layout,
    build_fixture_model,
    fixture_dir,
    load_io,
    model_config,
    one_thread,  # noqa: F401  (fixture)
    state_dict_shapes,
)

pytestmark = pytest.mark.usefixtures("one_thread")
FIXTURE = "opensora1_2_vae"


def tiny_kwargs(**overrides) -> dict:
    """Constructor kwargs of the fixture's tiny pipeline (no weights)."""
    config = model_config(FIXTURE, **overrides)
    config.pop("type")
    config.pop("from_pretrained")
    return config


@pytest.fixture(scope="module")
def model() -> OpenSoraVAEV12:
    return build_fixture_model(FIXTURE)


@pytest.fixture(scope="module")
def io() -> dict[str, torch.Tensor]:
    return load_io(FIXTURE)


@torch.no_grad()
def test_parity_every_stage(model, io):
    x = io["x"]
    spatial = model.spatial_vae.encode_distribution(x)
    assert_matches_reference(spatial.mode() * 0.18215, io["x_z"], "x_z")
    assert_matches_reference(spatial.logvar, io["x_z_logvar"], "x_z_logvar")
    stages = model.forward_stages(x, sample_posterior=False, decode_pixels=False)
    assert_matches_reference(stages["x_z"], io["x_z"], "forward_stages x_z")
    assert_matches_reference(stages["posterior"].mean, io["posterior_mean"], "posterior_mean")
    assert_matches_reference(stages["posterior"].logvar, io["posterior_logvar"], "posterior_logvar")
    assert_matches_reference(stages["z"], io["z"], "forward_stages z")
    assert_matches_reference(model.encode(x), io["z"], "encode z")
    x_z_rec = model.decode_temporal(model.denormalize(io["z"]), num_frames=17)
    assert_matches_reference(x_z_rec, io["x_z_rec"], "x_z_rec")
    assert_matches_reference(stages["x_z_rec"], io["x_z_rec"], "forward_stages x_z_rec")
    assert_matches_reference(model.decode(io["z"], num_frames=17), io["x_rec"], "x_rec")


@torch.no_grad()
def test_parity_micro_frame_chunks(model, io):
    """22 frames: chunks [0:17] and [17:22] are encoded independently (5 + 2 latents), decoded as 17 + 5 frames."""
    z, posterior = model.encode_with_posterior(io["x_chunked"])
    assert_io_matches(
        io,
        z_chunked=z,
        posterior_mean_chunked=posterior.mean,
        posterior_logvar_chunked=posterior.logvar,
        x_rec_chunked=model.decode(io["z_chunked"], num_frames=22),
    )


def test_strict_loading_names_the_bad_keys():
    state = load_file(str(fixture_dir(FIXTURE) / "weights.safetensors"))
    state.pop("shift")
    state["temporal_vae.encoder.conv_blocks.0.conv.weight"] = torch.zeros(1)
    model = OpenSoraVAEV12(**tiny_kwargs())
    with pytest.raises(CheckpointError, match=r"missing keys: \[shift\].*conv_blocks\.0\.conv\.weight"):
        load_weights(model, state, strict=True)


def test_released_layout_on_meta_device():
    """The released hyper-parameters give exactly the keys and shapes of hpcai-tech/OpenSora-VAE-v1.2."""
    with torch.device("meta"):
        released = OpenSoraVAEV12()
    assert_released_layout(state_dict_shapes(released), FIXTURE)
    assert released.compression == (4, 8, 8) and released.micro_frame_size == 17
    assert released.spatial_vae.micro_batch_size == 4 and released.spatial_vae.scaling_factor == 0.18215


@torch.no_grad()
def test_frame_rules(model):
    x = torch.rand(1, 3, 17, 16, 16) * 2 - 1
    z = model.encode(x)
    assert z.shape == (1, 4, 5, 2, 2) and model.get_latent_size(17, 16, 16) == (5, 2, 2)
    assert model.decode(z, num_frames=17).shape == x.shape
    image = x[:, :, :1]
    z_image = model.encode(image)
    assert z_image.shape[2] == 1 and model.decode(z_image, num_frames=1).shape == image.shape
    # 22 frames = 17 + 5 -> 5 + 2 latents with micro_frame_size=17, 6 latents without chunking.
    assert model.get_latent_size(22, 32, 32) == (7, 4, 4)
    unchunked = OpenSoraVAEV12(**tiny_kwargs(micro_frame_size=None))
    assert unchunked.get_latent_size(22, 32, 32) == (6, 4, 4)
    with pytest.raises(ValueError, match="needs num_frames"):
        model.decode(z)
    with pytest.raises(ValueError, match="num_frames=33 corresponds to 9 latent frames"):
        model.decode(z, num_frames=33)
    with pytest.raises(ValueError, match="multiples of 8"):
        model.encode(torch.zeros(1, 3, 5, 20, 16))


@torch.no_grad()
def test_temporal_front_padding_is_zeros(model):
    """17 spatial-latent frames are encoded as 3 zero frames + 17, and decoding drops exactly those 3."""
    temporal = model.temporal_vae
    x_z = torch.randn(1, 4, 17, 2, 2) * 0.2
    padded = torch.cat([torch.zeros(1, 4, 3, 2, 2), x_z], dim=2)
    torch.testing.assert_close(temporal.encode(x_z).parameters, temporal.encode(padded).parameters, rtol=0, atol=0)
    z = temporal.encode(x_z).mode()
    assert z.shape[2] == 5
    torch.testing.assert_close(temporal.decode(z, 17), temporal.decode(z, 20)[:, :, 3:], rtol=0, atol=0)


def test_time_depth_to_space_channel_order():
    x = torch.arange(2 * 3 * 2).float().reshape(1, 6, 2, 1, 1)  # channel k = c * 3 + s
    y = time_depth_to_space(x, 3)
    assert y.shape == (1, 2, 6, 1, 1)
    for c in range(2):
        for t in range(2):
            for s in range(3):
                assert y[0, c, t * 3 + s, 0, 0] == x[0, c * 3 + s, t, 0, 0]


@torch.no_grad()
def test_forward_stages_and_sampling(model):
    x = torch.rand(1, 3, 9, 16, 16) * 2 - 1
    stages = model.forward_stages(x, sample_posterior=True, decode_spatial_only=True)
    assert stages["x_z"].shape == stages["x_z_rec"].shape == (1, 4, 9, 2, 2)
    assert stages["x_rec"].shape == stages["x_rec_spatial"].shape == x.shape
    torch.testing.assert_close(stages["z"], model.normalize(stages["z_raw"]))
    torch.testing.assert_close(model.decode_spatial(stages["x_z"]), stages["x_rec_spatial"])
    mode = model.encode(x, sample_posterior=False)
    assert (model.encode(x, sample_posterior=True) - mode).abs().max() > 1e-3
    outputs = model.reconstruct(x)
    assert sorted(outputs) == ["latent", "recn", "spatial"]
    torch.testing.assert_close(outputs["latent"], mode)
    torch.testing.assert_close(outputs["recn"], model.decode(mode, num_frames=9), rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(outputs["spatial"], model.decode_spatial(model.encode_spatial(x)))


@torch.no_grad()
def test_micro_batch_size_has_no_numerical_effect(model):
    x = torch.rand(2, 3, 5, 16, 16) * 2 - 1
    whole = OpenSoraVAEV12(**tiny_kwargs(micro_batch_size=None)).eval()
    whole.load_state_dict(model.state_dict())
    torch.testing.assert_close(whole.encode_spatial(x), model.encode_spatial(x), rtol=1e-5, atol=1e-6)


def test_freeze_vae_2d_and_gradient_checkpointing():
    torch.manual_seed(0)
    frozen = build_fixture_model(FIXTURE, freeze_vae_2d=True).train()
    assert not any(p.requires_grad for p in frozen.spatial_vae.parameters())
    assert all(p.requires_grad for p in frozen.temporal_vae.parameters())
    x = torch.rand(1, 3, 5, 16, 16) * 2 - 1

    def latent_loss_grads() -> list[torch.Tensor]:
        frozen.zero_grad()
        stages = frozen.forward_stages(x, sample_posterior=False, decode_pixels=False)
        (stages["x_z_rec"] - stages["x_z"]).abs().mean().backward()
        return [p.grad.clone() for p in frozen.temporal_vae.parameters()]

    plain = latent_loss_grads()
    stages = frozen(x, return_stages=True, pixel_grad=False)
    assert stages["x_z_rec"].requires_grad and not stages["x_rec"].requires_grad
    assert stages["x_rec"].shape == x.shape and stages["z_raw"].shape == (1, 4, 2, 2, 2)
    assert all(p.grad is None for p in frozen.spatial_vae.parameters())
    frozen.set_gradient_checkpointing(True)
    assert frozen.temporal_vae.encoder.res_blocks[0].gradient_checkpointing
    assert frozen.temporal_vae.decoder.block_res_blocks[0][1].gradient_checkpointing
    assert frozen.spatial_vae.module.encoder.gradient_checkpointing
    for reference, checkpointed in zip(plain, latent_loss_grads()):
        torch.testing.assert_close(checkpointed, reference)
    frozen.set_gradient_checkpointing(False)
    assert not frozen.temporal_vae.decoder.res_blocks[0].gradient_checkpointing

    encoder_only = OpenSoraVAEV12(**tiny_kwargs(freeze_vae_2d_decoder=True))
    frozen_names = {n for n, p in encoder_only.spatial_vae.module.named_parameters() if not p.requires_grad}
    assert frozen_names and all(n.startswith(("decoder.", "post_quant_conv.")) for n in frozen_names)
    assert encoder_only.spatial_vae.module.encoder.conv_in.weight.requires_grad

    trainable = build_model(model_config(FIXTURE))
    trainable.set_gradient_checkpointing(True)
    x_rec, posterior, _ = trainable(x)
    (x_rec.abs().mean() + posterior.kl().mean()).backward()
    assert trainable.spatial_vae.module.encoder.conv_in.weight.grad is not None
    assert trainable.get_last_layer() is trainable.temporal_vae.decoder.conv_out.conv.weight
    assert trainable.get_last_layer().grad is not None


@torch.no_grad()
def test_spatial_weights_from_a_diffusers_folder_and_round_trip(tmp_path, model):
    """``vae_2d_pretrained`` takes a diffusers AutoencoderKL folder (or its pipeline's ``vae/`` subfolder);
    ``save_pretrained`` then stores a self-contained pipeline."""
    model.spatial_vae.module.save_pretrained(tmp_path / "pixart" / "vae")
    kwargs = tiny_kwargs()
    kwargs.pop("vae_2d")
    pipeline = OpenSoraVAEV12(vae_2d_pretrained=str(tmp_path / "pixart"), **kwargs).eval()
    assert list(pipeline.spatial_vae.module.config.block_out_channels) == [4, 8, 16, 16]
    for key, value in model.spatial_vae.state_dict().items():
        torch.testing.assert_close(pipeline.spatial_vae.state_dict()[key], value, rtol=0, atol=0)
    x = torch.rand(1, 3, 5, 16, 16) * 2 - 1
    torch.testing.assert_close(pipeline.encode_spatial(x), model.encode_spatial(x), rtol=0, atol=0)

    pipeline.load_state_dict(model.state_dict())
    pipeline.save_pretrained(tmp_path / "saved")
    config = json.loads((tmp_path / "saved" / "config.json").read_text())
    assert config["type"] == "opensora_v1_2_vae" and config["vae_2d_pretrained"] is None
    restored = build_model(dict(type="opensora_v1_2_vae", from_pretrained=str(tmp_path / "saved"))).eval()
    torch.testing.assert_close(restored.encode(x), model.encode(x), rtol=0, atol=0)

    with pytest.raises(ValueError, match="vae_2d: unknown AutoencoderKL keys"):
        OpenSoraVAEV12(vae_2d=dict(block_out=[4]))
    with pytest.raises(ValueError, match="vae_temporal: unknown keys"):
        OpenSoraVAEV12(vae_temporal=dict(filter=4))


def test_released_huggingface_folder_config(tmp_path):
    """The hpcai-tech/OpenSora-VAE-v1.2 folder: a transformers config.json plus model.safetensors."""
    released = dict(
        architectures=["VideoAutoencoderPipeline"],
        model_type="VideoAutoencoderPipeline",
        cal_loss=False,
        freeze_vae_2d=False,
        from_pretrained=None,
        micro_frame_size=17,
        scale=[3.85, 2.32, 2.33, 3.06],
        shift=[-0.1, 0.34, 0.27, 0.98],
        vae_2d=dict(
            type="VideoAutoencoderKL",
            from_pretrained="PixArt-alpha/pixart_sigma_sdxlvae_T5_diffusers",
            subfolder="vae",
            micro_batch_size=4,
        ),
        vae_temporal=dict(type="VAE_Temporal_SD", from_pretrained=None),
        torch_dtype="float32",
        transformers_version="4.36.2",
    )
    (tmp_path / "config.json").write_text(json.dumps(released))
    assert OpenSoraVAEV12.config_from_pretrained_dir(tmp_path) == dict(
        micro_frame_size=17, shift=released["shift"], scale=released["scale"], freeze_vae_2d=False, micro_batch_size=4
    )
    (tmp_path / "model.safetensors").write_bytes((fixture_dir(FIXTURE) / "weights.safetensors").read_bytes())
    kwargs = tiny_kwargs()
    tiny = build_model(
        dict(type="opensora_v1_2_vae", from_pretrained=str(tmp_path), vae_2d=kwargs["vae_2d"], vae_temporal=kwargs["vae_temporal"])
    )
    assert tiny.micro_frame_size == 17 and torch.equal(tiny.scale.flatten(), torch.tensor(released["scale"]))


def test_frozen_random_2d_vae_is_refused_unless_asked_for(tmp_path):
    """Stage 1 without --model.vae_2d_pretrained would train on a random frozen SDXL VAE: one clear error."""
    config = dict(type="opensora_v1_2_vae", **tiny_kwargs(freeze_vae_2d=True))
    with pytest.raises(ValueError, match="--model.vae_2d_pretrained"):
        build_model(config)
    model = build_model({**config, "vae_2d_random_init": True})
    assert not any(p.requires_grad for p in model.spatial_vae.parameters())
    model.save_pretrained(tmp_path)  # a stage-1 checkpoint (vae_2d_pretrained=None) loads again
    assert build_model(dict(type="opensora_v1_2_vae", from_pretrained=str(tmp_path))).config["freeze_vae_2d"]


def test_stage1_config_without_2d_weights_stops_before_building():
    from pathlib import Path

    from opensora_ae.config import load_config
    from opensora_ae.train.loop import OPTIONAL_KEYS

    stage1 = Path(__file__).resolve().parents[1] / "configs" / "vae" / "train" / "stage1.py"
    cfg = load_config(stage1, [], OPTIONAL_KEYS)
    with pytest.raises(ValueError, match="vae_2d_random_init true for a test"):
        build_model(dict(cfg.model))


def test_tiling_keys_are_refused():
    with pytest.raises(ValueError, match=r"no tiled inference: remove the tiling keys \['use_spatial_tiling'\]"):
        OpenSoraVAEV12(**tiny_kwargs(), use_spatial_tiling=False)
