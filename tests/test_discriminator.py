"""N-layer PatchGAN discriminator: Open-Sora 2.0 layout, output shapes, per-frame 2-D variant, weight loading."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file
from torch import nn

from opensora_ae.models.checkpoint_io import CheckpointError
from opensora_ae.models.discriminator import NLayerDiscriminator
from opensora_ae.registry import DISCRIMINATORS, build

OPEN_SORA_CONFIG = dict(type="N_Layer_discriminator_3D", input_nc=3, n_layers=5, conv_cls="conv3d", from_pretrained=None)


def open_sora_keys() -> list[str]:
    """State-dict keys of Open-Sora 2.0's NLayerDiscriminator3D(n_layers=5): conv, 5 x (conv, BN, act, drop), conv."""
    keys = ["main.0.weight", "main.0.bias"]
    for conv_index in (2, 6, 10, 14, 18):
        bn = conv_index + 1
        keys += [f"main.{conv_index}.weight"]
        keys += [f"main.{bn}.{name}" for name in ("weight", "bias", "running_mean", "running_var", "num_batches_tracked")]
    return keys + ["main.22.weight", "main.22.bias"]


def test_open_sora_config_gives_8x8x8_logits_for_32x256x256() -> None:
    with torch.device("meta"):
        disc = build(OPEN_SORA_CONFIG, DISCRIMINATORS)
        logits = disc(torch.empty(1, 3, 32, 256, 256))
    assert logits.shape == (1, 1, 8, 8, 8)


def test_open_sora_layout_widths_and_keys() -> None:
    with torch.device("meta"):
        disc = build(OPEN_SORA_CONFIG, DISCRIMINATORS)
    convs = [m for m in disc.main if isinstance(m, nn.Conv3d)]
    assert [c.out_channels for c in convs] == [64, 128, 256, 512, 512, 512, 1]
    assert all(c.kernel_size == (3, 3, 3) and c.padding == (1, 1, 1) for c in convs)
    assert [c.stride for c in convs] == [(2, 2, 2), (2, 2, 2), (1, 2, 2), (1, 2, 2), (1, 2, 2), (1, 1, 1), (1, 1, 1)]
    assert [c.bias is not None for c in convs] == [True, False, False, False, False, False, True]
    assert sum(isinstance(m, nn.BatchNorm3d) for m in disc.main) == 5
    assert all(m.negative_slope == 0.2 for m in disc.main if isinstance(m, nn.LeakyReLU))
    assert list(disc.state_dict()) == open_sora_keys()


def test_2d_variant_is_applied_per_frame() -> None:
    with torch.device("meta"):
        disc = build({**OPEN_SORA_CONFIG, "conv_cls": "conv2d"}, DISCRIMINATORS)
        assert disc(torch.empty(2, 3, 5, 256, 256)).shape == (2, 1, 5, 8, 8)
    assert list(disc.state_dict()) == open_sora_keys()

    small = NLayerDiscriminator(n_layers=2, ndf=8, conv_cls="conv2d").eval()
    clip = torch.randn(2, 3, 3, 32, 32)
    logits = small(clip)
    for t in range(3):
        torch.testing.assert_close(logits[:, :, t], small.main(clip[:, :, t]))


def test_real_forward_backward_small_clip() -> None:
    disc = NLayerDiscriminator(ndf=8, n_layers=3)
    clip = torch.randn(2, 3, 8, 32, 32, requires_grad=True)
    logits = disc(clip)
    # T: 8 -> 4 -> 2 -> 2 -> 2 -> 2; H: 32 -> 16 -> 8 -> 4 -> 4 -> 4
    assert logits.shape == (2, 1, 2, 4, 4)
    logits.mean().backward()
    assert clip.grad is not None and disc.main[0].weight.grad is not None


def test_init_statistics() -> None:
    disc = NLayerDiscriminator(ndf=16, n_layers=3)
    conv_weight = disc.main[6].weight  # 64 x 32 x 3^3 values
    assert abs(conv_weight.std().item() - 0.02) < 0.002
    bn = disc.main[3]
    assert abs(bn.weight.mean().item() - 1.0) < 0.02 and torch.all(bn.bias == 0)


@pytest.mark.parametrize("suffix", [".safetensors", ".pt"])
def test_from_pretrained_loads_safetensors_and_pt(tmp_path: Path, suffix: str) -> None:
    source = NLayerDiscriminator(ndf=8, n_layers=3)
    path = tmp_path / f"discriminator{suffix}"
    state = {k: v.contiguous() for k, v in source.state_dict().items()}
    if suffix == ".safetensors":
        save_file(state, str(path))
    else:
        torch.save({"module." + k: v for k, v in state.items()}, path)  # DDP-prefixed keys load too
    loaded = build(dict(type="N_Layer_discriminator_3D", ndf=8, n_layers=3, from_pretrained=str(path)), DISCRIMINATORS)
    for key, value in source.state_dict().items():
        assert torch.equal(loaded.state_dict()[key], value), key


def test_from_pretrained_mismatch_is_one_error(tmp_path: Path) -> None:
    path = tmp_path / "disc.safetensors"
    save_file({k: v.contiguous() for k, v in NLayerDiscriminator(ndf=8, n_layers=2).state_dict().items()}, str(path))
    with pytest.raises(CheckpointError, match="does not fit NLayerDiscriminator"):
        NLayerDiscriminator(ndf=8, n_layers=3, from_pretrained=path)


def test_bad_arguments() -> None:
    with pytest.raises(ValueError, match="conv_cls='conv1d'"):
        NLayerDiscriminator(conv_cls="conv1d")
    with pytest.raises(ValueError, match="B C T H W"):
        NLayerDiscriminator(ndf=8, n_layers=1)(torch.zeros(1, 3, 16, 16))
