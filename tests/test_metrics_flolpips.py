"""FloLPIPS and the pure-torch PWC-Net: key names, cost volume, weighting formula, zero-flow guard."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F
import torchvision

from opensora_ae.metrics import PWCNet, build_lpips, flolpips, flow_weighted_sum, load_pwcnet, lpips_distance
from opensora_ae.metrics.lpips import lpips_package
from opensora_ae.metrics.pwcnet import backwarp, correlation


def expected_pwcnet_keys() -> set[str]:
    """Parameter names of sniklaus/pytorch-pwc's Network (its weight file says ``module`` for ``net``)."""
    keys = []
    for level in ("One", "Two", "Thr", "Fou", "Fiv", "Six"):
        keys += [f"netExtractor.net{level}.{index}.{p}" for index in (0, 2, 4) for p in ("weight", "bias")]
    for decoder in ("Two", "Thr", "Fou", "Fiv", "Six"):
        layers = ["netOne.0", "netTwo.0", "netThr.0", "netFou.0", "netFiv.0", "netSix.0"]
        if decoder != "Six":
            layers += ["netUpflow", "netUpfeat"]
        keys += [f"net{decoder}.{layer}.{p}" for layer in layers for p in ("weight", "bias")]
    keys += [f"netRefiner.netMain.{index}.{p}" for index in (0, 2, 4, 6, 8, 10, 12) for p in ("weight", "bias")]
    return set(keys)


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    """LPIPS with a random AlexNet backbone (saved like torchvision's file) and a random PWC-Net."""
    torch.manual_seed(0)
    backbone = tmp_path_factory.mktemp("weights") / "alexnet.pth"
    torch.save(torchvision.models.alexnet(weights=None).state_dict(), backbone)
    return build_lpips(str(backbone)), PWCNet().eval().requires_grad_(False)


def test_pwcnet_state_dict_keys_and_shapes():
    network = PWCNet()
    state = network.state_dict()
    assert set(state) == expected_pwcnet_keys()
    assert state["netExtractor.netSix.0.weight"].shape == (196, 128, 3, 3)
    assert state["netTwo.netOne.0.weight"].shape == (128, 81 + 32 + 2 + 2, 3, 3)
    assert state["netFiv.netUpfeat.weight"].shape == (81 + 128 + 128 + 96 + 64 + 32, 2, 4, 4)
    assert state["netRefiner.netMain.0.weight"].shape == (128, 81 + 32 + 2 + 2 + 448, 3, 3)
    assert sum(p.numel() for p in network.parameters()) == 9374274


def test_correlation_matches_explicit_loop():
    generator = torch.Generator().manual_seed(0)
    first = torch.randn(2, 5, 6, 7, generator=generator)
    second = torch.randn(2, 5, 6, 7, generator=generator)
    volume = correlation(first, second)
    assert volume.shape == (2, 81, 6, 7)
    expected = torch.zeros_like(volume)
    for dy in range(-4, 5):
        for dx in range(-4, 5):
            channel = (dy + 4) * 9 + (dx + 4)
            for y in range(6):
                for x in range(7):
                    if 0 <= y + dy < 6 and 0 <= x + dx < 7:
                        expected[:, channel, y, x] = (first[:, :, y, x] * second[:, :, y + dy, x + dx]).mean(1)
    torch.testing.assert_close(volume, expected)


def test_backwarp_with_zero_flow_is_identity():
    features = torch.randn(1, 4, 8, 12)
    torch.testing.assert_close(backwarp(features, torch.zeros(1, 2, 8, 12)), features)


def test_pwcnet_loads_original_module_names(tmp_path):
    torch.manual_seed(1)
    source = PWCNet()
    original_names = {key.replace("net", "module"): value for key, value in source.state_dict().items()}
    path = tmp_path / "network-default.pytorch"
    torch.save(original_names, path)
    loaded = load_pwcnet(str(path))
    frames = torch.rand(2, 3, 40, 56)
    with torch.no_grad():
        flow = loaded(frames[:1], frames[1:])
        torch.testing.assert_close(flow, source.eval()(frames[:1], frames[1:]))
    assert flow.shape == (1, 2, 40, 56)


def test_pwcnet_without_weights_is_a_clear_error(tmp_path):
    with pytest.raises(FileNotFoundError, match="--pwcnet_weights"):
        load_pwcnet(None)
    with pytest.raises(FileNotFoundError, match="does not exist"):
        load_pwcnet(str(tmp_path / "missing.pytorch"))


def test_flolpips_shape_finite_and_zero_for_identical_videos(models):
    lpips_model, flow_net = models
    real = torch.rand(3, 3, 64, 64)
    fake = (real + 0.1 * torch.randn_like(real)).clamp(0, 1)
    with torch.no_grad():
        values = flolpips(lpips_model, flow_net, real, fake)
        same = flolpips(lpips_model, flow_net, real, real)
    assert values.shape == (2,) and torch.isfinite(values).all() and (values > 0).all()
    assert torch.isfinite(same).all() and same.abs().max().item() == 0.0


def test_zero_flow_difference_falls_back_to_plain_lpips(models):
    lpips_model, _ = models
    still_net = PWCNet().eval().requires_grad_(False)
    for parameter in still_net.parameters():
        parameter.zero_()  # predicts zero flow for every video: the reference would return NaN
    real = torch.rand(3, 3, 64, 64)
    fake = (real + 0.1).clamp(0, 1)
    with torch.no_grad():
        values = flolpips(lpips_model, still_net, real, fake)
        plain = lpips_distance(lpips_model, real[:-1], fake[:-1])
    assert torch.isfinite(values).all()
    torch.testing.assert_close(values, plain, rtol=1e-5, atol=1e-6)


def test_flolpips_matches_straightforward_recomputation(models):
    """One frame pair, recomputed step by step: flows one at a time, LPIPS layer maps, numpy weighting."""
    lpips_model, flow_net = models
    generator = torch.Generator().manual_seed(3)
    real = torch.rand(2, 3, 48, 64, generator=generator)
    fake = (real + 0.2 * torch.randn(real.shape, generator=generator)).clamp(0, 1)
    with torch.no_grad():
        ours = flolpips(lpips_model, flow_net, real, fake)
        difference = flow_net(real[:1], real[1:]) - flow_net(fake[:1], fake[1:])
        features_real = lpips_model.net(lpips_model.scaling_layer(real[:1] * 2 - 1))
        features_fake = lpips_model.net(lpips_model.scaling_layer(fake[:1] * 2 - 1))
        expected = 0.0
        for head, f_real, f_fake in zip(lpips_model.lins, features_real, features_fake):
            distance = head((lpips_package.normalize_tensor(f_real) - lpips_package.normalize_tensor(f_fake)) ** 2)
            distance = distance[0, 0].numpy()
            resized = F.interpolate(difference, size=distance.shape, mode="bilinear", align_corners=False)[0]
            magnitude = np.sqrt(resized[0].numpy() ** 2 + resized[1].numpy() ** 2)
            expected += float(np.sum(distance * magnitude / np.sum(magnitude)))
    assert ours.shape == (1,)
    assert ours.item() == pytest.approx(expected, rel=1e-4)


def test_flow_weighted_sum_formula():
    distance = torch.arange(4.0).view(1, 1, 2, 2)
    flow = torch.zeros(1, 2, 2, 2)
    flow[0, 0, 0, 0] = 3.0
    flow[0, 1, 0, 0] = 4.0  # magnitude 5 at (0, 0)
    flow[0, 0, 1, 1] = 5.0  # magnitude 5 at (1, 1)
    # weights 1/2 at (0, 0) and (1, 1): 0 * 0.5 + 3 * 0.5
    assert flow_weighted_sum(distance, flow).item() == pytest.approx(1.5)
    assert flow_weighted_sum(distance, torch.zeros(1, 2, 2, 2)).item() == pytest.approx(1.5)
