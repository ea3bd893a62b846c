"""Metrics against independent computations: numpy PSNR, skimage SSIM, the lpips package."""

from __future__ import annotations

import warnings

import lpips as lpips_package
import numpy as np
import pytest
import torch
import torch.nn.functional as F
import torchvision
from skimage.metrics import structural_similarity

from opensora_ae.metrics import blocks as blocks_module
from opensora_ae.metrics import build_lpips, lpips_distance, lpips_layer_maps, psnr, ssim
from opensora_ae.metrics.lpips import ALEXNET_FILE_NAME


def smooth_frames(seed: int, n: int = 3, h: int = 40, w: int = 48) -> torch.Tensor:
    """``N 3 H W`` frames in [0, 1] with some structure (blurred noise), quantised like decoded video."""
    generator = torch.Generator().manual_seed(seed)
    noise = torch.rand(n, 3, h // 4, w // 4, generator=generator)
    frames = F.interpolate(noise, size=(h, w), mode="bicubic", align_corners=False).clamp(0, 1)
    return (frames * 255).round() / 255


def perturbed(frames: torch.Tensor, seed: int, amount: float = 0.05) -> torch.Tensor:
    generator = torch.Generator().manual_seed(seed)
    noisy = frames + amount * torch.randn(frames.shape, generator=generator)
    return (noisy.clamp(0, 1) * 255).round() / 255


def test_psnr_matches_numpy_by_hand():
    real = smooth_frames(0)
    fake = perturbed(real, 1)
    fake[1] = real[1]  # one identical frame: infinite PSNR is capped at 100
    a, b = real.double().numpy(), fake.double().numpy()
    expected = []
    for frame_a, frame_b in zip(a, b):
        mse = np.mean((frame_a - frame_b) ** 2)
        expected.append(100.0 if mse < 1e-10 else 20 * np.log10(1.0 / np.sqrt(mse)))
    np.testing.assert_allclose(psnr(real, fake).numpy(), expected, rtol=0, atol=1e-4)
    assert psnr(real, fake)[1].item() == 100.0


def test_ssim_matches_skimage():
    real = smooth_frames(2)
    fake = perturbed(real, 3, amount=0.1)
    ours = ssim(real, fake).numpy()
    for index in range(real.shape[0]):
        expected = structural_similarity(
            real[index].permute(1, 2, 0).double().numpy(),
            fake[index].permute(1, 2, 0).double().numpy(),
            gaussian_weights=True,
            sigma=1.5,
            use_sample_covariance=False,
            data_range=1,
            channel_axis=-1,
        )
        assert abs(ours[index] - expected) < 1e-4
    np.testing.assert_allclose(ssim(real, real).numpy(), 1.0, atol=1e-6)


def test_ssim_cpu_blocks_do_not_change_values(monkeypatch):
    real = smooth_frames(4, n=5)
    fake = perturbed(real, 5, amount=0.1)
    monkeypatch.setattr(blocks_module, "CPU_BLOCK_VALUES", 10**9)
    whole = ssim(real, fake)
    monkeypatch.setattr(blocks_module, "CPU_BLOCK_VALUES", 2 * 3 * 40 * 48)  # blocks of 2, 2 and 1 frames
    blocked = ssim(real, fake)
    assert blocked.shape == (5,)
    torch.testing.assert_close(blocked, whole, rtol=0, atol=1e-6)
    assert len(set(whole.tolist())) == 5  # each frame has its own value: no block was repeated or dropped


def test_ssim_rejects_frames_smaller_than_window():
    with pytest.raises(ValueError, match="smaller than the 11x11 window"):
        ssim(torch.rand(1, 3, 8, 32), torch.rand(1, 3, 8, 32))


def test_lpips_matches_lpips_package_frame_by_frame(tmp_path):
    backbone = tmp_path / ALEXNET_FILE_NAME
    torch.save(torchvision.models.alexnet(weights=None).state_dict(), backbone)  # random: seeded by conftest
    ours_model = build_lpips(str(backbone))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # torchvision's `pretrained=` deprecation inside lpips
        reference = lpips_package.LPIPS(net="alex", version="0.1", pnet_rand=True, verbose=False).eval()
    reference.load_state_dict(ours_model.state_dict())  # same random backbone, same v0.1 heads
    real = smooth_frames(4, n=3, h=64, w=64)
    fake = perturbed(real, 5)
    with torch.no_grad():
        ours = lpips_distance(ours_model, real, fake)
        expected = [reference(real[i : i + 1] * 2 - 1, fake[i : i + 1] * 2 - 1).item() for i in range(3)]
    assert ours.shape == (3,)
    np.testing.assert_allclose(ours.numpy(), expected, rtol=1e-4, atol=1e-6)
    assert lpips_distance(ours_model, real, real).abs().max().item() == 0.0


def test_lpips_cpu_blocks_do_not_change_maps(tmp_path, monkeypatch):
    backbone = tmp_path / ALEXNET_FILE_NAME
    torch.save(torchvision.models.alexnet(weights=None).state_dict(), backbone)
    model = build_lpips(str(backbone))
    real = smooth_frames(6, n=3, h=64, w=64)
    fake = perturbed(real, 7)
    with torch.no_grad():
        monkeypatch.setattr(blocks_module, "CPU_BLOCK_VALUES", 10**9)
        whole = lpips_layer_maps(model, real, fake)
        monkeypatch.setattr(blocks_module, "CPU_BLOCK_VALUES", 2 * 3 * 64 * 64)  # blocks of 2 and 1 frames
        blocked = lpips_layer_maps(model, real, fake)
    assert [tuple(layer.shape) for layer in blocked] == [tuple(layer.shape) for layer in whole]
    assert blocked[0].shape[0] == 3 and len(blocked) == 5
    for layer_blocked, layer_whole in zip(blocked, whole):
        torch.testing.assert_close(layer_blocked, layer_whole, rtol=1e-5, atol=1e-7)


def test_lpips_loads_torchvision_alexnet_backbone(tmp_path):
    torch.manual_seed(1)
    alexnet = torchvision.models.alexnet(weights=None)
    path = tmp_path / ALEXNET_FILE_NAME
    torch.save(alexnet.state_dict(), path)
    model = build_lpips(backbone_path=str(path))
    loaded = model.net.state_dict()
    torch.testing.assert_close(loaded["slice1.0.weight"], alexnet.features[0].weight)
    torch.testing.assert_close(loaded["slice5.10.bias"], alexnet.features[10].bias)


def test_lpips_missing_backbone_names_where_to_put_it(tmp_path, monkeypatch):
    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(tmp_path))
    with pytest.raises(FileNotFoundError, match=f"put {ALEXNET_FILE_NAME} at {tmp_path}/checkpoints"):
        build_lpips()
