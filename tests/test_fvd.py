"""FVD: I3D weight files in both released formats, preprocessing, clip prefixes and the Fréchet distance,
checked against an independent implementation of Open-Sora-Plan's procedure (numpy / scipy)."""

from __future__ import annotations

import math

import numpy as np
import pytest
import scipy.linalg
import torch
import torch.nn.functional as F

from opensora_ae.data.video_io import write_video
from opensora_ae.inference.evaluate import EvalOptions, MetricWeights, evaluate
from opensora_ae.metrics.fvd import FVDSet, frechet_distance, i3d_input, load_i3d
from opensora_ae.metrics.i3d import InceptionI3d


class StyleGANVStandIn(torch.nn.Module):
    """Same call signature as StyleGAN-V's ``i3d_torchscript.pt``; refuses the flags FVD must not set."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = torch.nn.Conv3d(3, 8, kernel_size=(3, 8, 8), stride=(2, 8, 8))
        self.head = torch.nn.Linear(8 * 4 * 4, 400)

    def forward(self, x: torch.Tensor, rescale: bool = False, resize: bool = False,
                return_features: bool = False) -> torch.Tensor:
        if rescale or resize or not return_features:
            raise RuntimeError("FVD calls the detector with rescale=False, resize=False, return_features=True")
        if x.shape[-1] != 224 or bool(x.abs().max() > 1.0001):
            raise RuntimeError("expected 224x224 clips in [-1, 1]")
        features = F.adaptive_avg_pool3d(torch.relu(self.conv(x)), (1, 4, 4)).flatten(1)
        return torch.tanh(self.head(features))


def reference_preprocess(video: np.ndarray, quantise: bool) -> torch.Tensor:
    """Open-Sora-Plan's ``preprocess_single`` for one ``T H W C`` float video in [0, 1] -> ``C T 224 224``."""
    if quantise:
        video = (video * 255).astype(np.uint8).astype(np.float32) / 255.0
    frames = torch.from_numpy(video.astype(np.float32)).permute(3, 0, 1, 2)  # C T H W
    h, w = frames.shape[-2:]
    scale = 224 / min(h, w)
    size = (224, math.ceil(w * scale)) if h < w else (math.ceil(h * scale), 224)
    frames = F.interpolate(frames, size=size, mode="bilinear", align_corners=False)
    top, left = (frames.shape[-2] - 224) // 2, (frames.shape[-1] - 224) // 2
    return (frames[:, :, top : top + 224, left : left + 224] - 0.5) * 2


def reference_frechet(a: np.ndarray, b: np.ndarray) -> float:
    """StyleGAN-V's ``frechet_distance`` (scipy ``sqrtm``), written out here."""
    mean_term = np.square(a.mean(axis=0) - b.mean(axis=0)).sum()
    if a.shape[0] < 2:
        return float(mean_term)
    if a.shape[0] == 2:
        # Rank-1 covariances d d^T / 2: tr sqrt(S_a S_b) = |d_a . d_b| / 2 exactly (scipy's sqrtm of such a
        # product is off by ~1e-4 relative, more than the tolerance).
        d_a, d_b = a[0] - a[1], b[0] - b[1]
        return float(mean_term + (d_a @ d_a + d_b @ d_b) / 2 - abs(d_a @ d_b))
    sigma_a, sigma_b = np.cov(a, rowvar=False), np.cov(b, rowvar=False)
    root, _ = scipy.linalg.sqrtm(sigma_a @ sigma_b, disp=False)
    return float(np.real(mean_term + np.trace(sigma_a + sigma_b - 2 * root)))


def reference_fvd(detector, real: list[np.ndarray], fake: list[np.ndarray], variant: str,
                  group_size: int | None = None) -> float:
    """Open-Sora-Plan: for each group of videos and each prefix of 10..T frames, the FD of I3D features; mean."""
    group_size = group_size or len(real)
    values = []
    for begin in range(0, len(real), group_size):
        quantise = variant == "videogpt"
        real_group = torch.stack([reference_preprocess(v, quantise) for v in real[begin : begin + group_size]])
        fake_group = torch.stack([reference_preprocess(v, quantise) for v in fake[begin : begin + group_size]])
        for length in range(10, real_group.shape[2] + 1):
            with torch.no_grad():
                if variant == "styleganv":
                    kwargs = dict(rescale=False, resize=False, return_features=True)
                    feats = [detector(g[:, :, :length], **kwargs).double().numpy() for g in (real_group, fake_group)]
                else:
                    feats = [detector(g[:, :, :length]).double().numpy() for g in (real_group, fake_group)]
            values.append(reference_frechet(feats[1], feats[0]))
    return float(np.mean(values))


def make_videos(seed: int, count: int, frames: int, height: int, width: int) -> tuple[list, list]:
    """Real clips (smooth moving blobs) and degraded copies, uint8 ``T H W 3``."""
    rng = np.random.default_rng(seed)
    real, fake = [], []
    for _ in range(count):
        base = rng.random((height // 4 + frames, width // 4, 3))
        coarse = np.stack([base[t : t + height // 4] for t in range(frames)])
        video = np.repeat(np.repeat(coarse, 4, axis=1), 4, axis=2)
        real.append((video * 255).round().astype(np.uint8))
        noisy = video + rng.normal(0, 0.08, size=video.shape)
        fake.append((np.clip(noisy, 0, 1) * 255).round().astype(np.uint8))
    return real, fake


def write_folders(root, real: list, fake: list) -> tuple[str, str]:
    for index, (real_video, fake_video) in enumerate(zip(real, fake)):
        write_video(root / "real" / f"v{index}.mp4", real_video, fps=8, lossless=True, preset="ultrafast")
        write_video(root / "fake" / f"v{index}.mp4", fake_video, fps=8, lossless=True, preset="ultrafast")
    return str(root / "real"), str(root / "fake")


@pytest.fixture(scope="module")
def styleganv_file(tmp_path_factory):
    torch.manual_seed(3)
    path = tmp_path_factory.mktemp("i3d") / "i3d_torchscript.pt"
    torch.jit.save(torch.jit.script(StyleGANVStandIn().eval()), str(path))
    return str(path)


def test_frechet_distance_float64_matches_scipy_and_is_zero_against_itself():
    rng = np.random.default_rng(0)
    a = rng.normal(size=(40, 16))
    b = rng.normal(0.3, 1.2, size=(30, 16)) @ rng.normal(size=(16, 16)) * 0.3
    assert frechet_distance(a, b) == pytest.approx(reference_frechet(a, b), rel=1e-8)
    assert frechet_distance(torch.from_numpy(a).float(), torch.from_numpy(a).float()) == pytest.approx(0, abs=1e-9)
    # Fewer clips than feature dimensions (rank-deficient covariances), as with any small FVD set.
    c, d = rng.normal(size=(5, 400)), rng.normal(0.1, 1.0, size=(5, 400))
    assert frechet_distance(c, d) == pytest.approx(reference_frechet(c, d), rel=1e-6)
    assert frechet_distance(c[:1], d[:1]) == pytest.approx(np.square(c[0] - d[0]).sum())
    assert frechet_distance(c[:2], d[:2]) == pytest.approx(reference_frechet(c[:2], d[:2]), rel=1e-9)


def test_videogpt_i3d_has_the_released_key_names_and_loads_strict(tmp_path):
    state = InceptionI3d().state_dict()
    assert state["Conv3d_1a_7x7.conv3d.weight"].shape == (64, 3, 7, 7, 7)
    assert state["Mixed_3b.b1b.conv3d.weight"].shape == (128, 96, 3, 3, 3)
    assert state["Mixed_5c.b3b.bn.running_var"].shape == (128,)
    assert state["logits.conv3d.weight"].shape == (400, 1024, 1, 1, 1) and state["logits.conv3d.bias"].shape == (400,)
    assert not any(key.startswith("logits.bn") for key in state)
    # The 2020 release predates num_batches_tracked; such a file must load too.
    released = {key: value for key, value in state.items() if not key.endswith("num_batches_tracked")}
    torch.save(released, tmp_path / "i3d_pretrained_400.pt")
    model = load_i3d("videogpt", str(tmp_path / "i3d_pretrained_400.pt"))
    torch.testing.assert_close(model.state_dict()["Mixed_4f.b2b.conv3d.weight"], state["Mixed_4f.b2b.conv3d.weight"])
    torch.save({**released, "extra.weight": torch.zeros(1)}, tmp_path / "wrong.pt")
    with pytest.raises(ValueError, match="wrong.pt is not VideoGPT's I3D state dict"):
        load_i3d("videogpt", str(tmp_path / "wrong.pt"))


def test_missing_i3d_file_is_one_line_naming_it(tmp_path):
    with pytest.raises(FileNotFoundError, match="i3d_pretrained_400.pt") as error:
        load_i3d("videogpt", str(tmp_path / "nothing.pt"))
    assert "\n" not in str(error.value)
    with pytest.raises(FileNotFoundError, match="i3d_torchscript.pt"):
        load_i3d("styleganv", str(tmp_path / "nothing.pt"))


def test_i3d_input_resizes_like_open_sora_plan():
    video = np.random.default_rng(1).random((3, 30, 52, 3)).astype(np.float32)
    ours = i3d_input(torch.from_numpy(video).permute(0, 3, 1, 2)[None], "styleganv")[0]
    assert ours.shape == (3, 3, 224, 224)
    torch.testing.assert_close(ours, reference_preprocess(video, quantise=False), atol=1e-6, rtol=0)
    quantised = i3d_input(torch.from_numpy(video).permute(0, 3, 1, 2)[None], "videogpt")[0]
    torch.testing.assert_close(quantised, reference_preprocess(video, quantise=True), atol=1e-6, rtol=0)


@pytest.mark.parametrize("group_size", [None, 2])
def test_styleganv_fvd_through_eval_matches_reference(tmp_path, styleganv_file, group_size):
    real, fake = make_videos(4, count=5, frames=11, height=36, width=44)
    real_dir, fake_dir = write_folders(tmp_path, real, fake)
    results = evaluate(real_dir, fake_dir, ["psnr", "fvd"],
                       EvalOptions(fvd_variant="styleganv", fvd_group_size=group_size),
                       MetricWeights(i3d=styleganv_file))
    summary = results["metrics"]["fvd"]
    assert summary["count"] == 5 and sorted(summary["per_clip_length"]) == ["10", "11"]
    detector = torch.jit.load(styleganv_file).eval()
    expected = reference_fvd(detector, [v / 255.0 for v in real], [v / 255.0 for v in fake], "styleganv", group_size)
    assert expected > 0
    assert summary["mean"] == pytest.approx(expected, rel=1e-4)
    assert "one FVD" in results["definitions"]["fvd"]
    same = evaluate(real_dir, real_dir, ["fvd"], EvalOptions(), MetricWeights(i3d=styleganv_file))
    assert abs(same["metrics"]["fvd"]["mean"]) < 1e-6 * expected


def test_fvd_skips_short_clips_and_reports_missing_weights(tmp_path, styleganv_file):
    real, fake = make_videos(5, count=2, frames=8, height=24, width=24)
    real_dir, fake_dir = write_folders(tmp_path, real, fake)
    results = evaluate(real_dir, fake_dir, ["psnr", "fvd"], EvalOptions(), MetricWeights(i3d=styleganv_file))
    assert results["metrics"]["psnr"]["count"] == 2
    assert "shorter than the 10 frames" in results["skipped"]["metric_failed"]["fvd"]["v0"]
    assert results["metrics"]["fvd"]["error"] == "fvd: no video pair could be scored"
    missing = evaluate(real_dir, fake_dir, ["psnr", "fvd"], EvalOptions(fvd_variant="videogpt"),
                       MetricWeights(i3d=str(tmp_path / "i3d_pretrained_400.pt")))
    assert "i3d_pretrained_400.pt" in missing["metrics"]["fvd"]["error"]
    assert missing["metrics"]["psnr"]["count"] == 2


@pytest.mark.slow
def test_videogpt_fvd_matches_reference_with_random_i3d(tmp_path):
    torch.manual_seed(5)
    network = InceptionI3d().eval()
    path = tmp_path / "i3d_pretrained_400.pt"
    torch.save(network.state_dict(), path)
    real, fake = make_videos(6, count=2, frames=10, height=32, width=40)
    fvd_set = FVDSet(load_i3d("videogpt", str(path)), "videogpt", "cpu")
    for real_video, fake_video in zip(real, fake):
        fvd_set.add(torch.from_numpy(real_video).permute(0, 3, 1, 2), torch.from_numpy(fake_video).permute(0, 3, 1, 2))
    ours = fvd_set.result()["mean"]
    expected = reference_fvd(network, [v / 255.0 for v in real], [v / 255.0 for v in fake], "videogpt")
    assert expected > 0 and ours == pytest.approx(expected, rel=1e-4)
