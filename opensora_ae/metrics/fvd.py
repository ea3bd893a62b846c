"""Fréchet Video Distance (Unterthiner et al. 2018) as Open-Sora-Plan's ``cal_fvd.py`` computes it.

Two I3D feature extractors, as Open-Sora-Plan offers them (``--fvd_method``):

* ``styleganv``: the StyleGAN-V I3D TorchScript ``i3d_torchscript.pt``, called as StyleGAN-V and
  Open-Sora-Plan call it, ``detector(x, rescale=False, resize=False, return_features=True)``: 400 features per clip.
* ``videogpt``: VideoGPT's PyTorch I3D (:class:`opensora_ae.metrics.i3d.InceptionI3d`) with its state dict
  ``i3d_pretrained_400.pt``: the 400 logits averaged over time. VideoGPT first quantises frames to uint8
  (``(x * 255).astype(uint8)``, truncating), which is kept.

Both resize each clip as Open-Sora-Plan's ``preprocess_single``: the short side to 224 (the long side
``ceil``-ed), bilinear without antialias, the centred 224x224 crop at the floored offset, values mapped from
[0, 1] to [-1, 1]. Open-Sora-Plan computes the FVD of every clip prefix of 10, 11, ..., T frames (I3D needs
10) and averages them; :func:`fvd_clip_lengths` gives those lengths. The Fréchet distance is computed here in
float64 from the eigenvalues of ``sqrt(S1) S2 sqrt(S1)``; it needs many clips to mean anything (features are
400-dimensional: with fewer than ~400 clips the covariances are rank deficient).
"""

from __future__ import annotations

import math
import os

import numpy as np
import torch
import torch.nn.functional as F

from opensora_ae.metrics.i3d import InceptionI3d

FVD_VARIANTS = ("styleganv", "videogpt")
I3D_FILE_NAMES = {"styleganv": "i3d_torchscript.pt", "videogpt": "i3d_pretrained_400.pt"}
I3D_RESOLUTION = 224
MIN_CLIP_FRAMES = 10


def default_i3d_path(variant: str) -> str:
    """Where the I3D file of ``variant`` is looked for by default: torch hub's checkpoint folder."""
    return os.path.join(torch.hub.get_dir(), "checkpoints", I3D_FILE_NAMES[check_variant(variant)])


def check_variant(variant: str) -> str:
    if variant not in FVD_VARIANTS:
        raise ValueError(f"--fvd_method {variant!r} is unknown; choose from {list(FVD_VARIANTS)}")
    return variant


def load_i3d(variant: str, path: str | None = None, device: str = "cpu") -> torch.nn.Module:
    """The frozen I3D of ``variant`` from a local file (default :func:`default_i3d_path`); nothing is
    downloaded. A missing file or one of the wrong kind is one error naming it."""
    path = path or default_i3d_path(variant)
    if not os.path.isfile(path):
        raise FileNotFoundError(f"FVD ({variant}) needs the I3D weights {I3D_FILE_NAMES[variant]}: no file at "
                                f"{path} (pass its path with --i3d_weights)")
    if variant == "styleganv":
        try:
            model = torch.jit.load(path, map_location=device)
        except RuntimeError as err:
            raise ValueError(f"{path} is not a TorchScript file ({str(err).splitlines()[0]}); --fvd_method "
                             f"styleganv needs StyleGAN-V's {I3D_FILE_NAMES['styleganv']}") from err
        return model.eval()
    model = InceptionI3d()
    try:
        model.load_state_dict(torch.load(path, map_location="cpu", weights_only=True), strict=True)
    except (RuntimeError, KeyError) as err:
        raise ValueError(f"{path} is not VideoGPT's I3D state dict ({str(err).splitlines()[0]}); --fvd_method "
                         f"videogpt needs {I3D_FILE_NAMES['videogpt']}") from err
    return model.to(device).eval().requires_grad_(False)


def fvd_clip_lengths(num_frames: int) -> list[int]:
    """The clip prefixes Open-Sora-Plan scores: 10, 11, ..., ``num_frames`` frames."""
    if num_frames < MIN_CLIP_FRAMES:
        raise ValueError(f"fvd: clips of {num_frames} frames are shorter than the {MIN_CLIP_FRAMES} frames I3D "
                         "needs; use --num_frames 10 or more")
    return list(range(MIN_CLIP_FRAMES, num_frames + 1))


def i3d_size(height: int, width: int) -> tuple[int, int]:
    """Short side to 224, long side ``ceil(long * 224 / short)`` (Open-Sora-Plan's ``preprocess_single``)."""
    scale = I3D_RESOLUTION / min(height, width)
    if height < width:
        return I3D_RESOLUTION, math.ceil(width * scale)
    return math.ceil(height * scale), I3D_RESOLUTION


def i3d_input(videos: torch.Tensor, variant: str) -> torch.Tensor:
    """``B T C H W`` float videos in [0, 1] -> ``B C T 224 224`` I3D input in [-1, 1] (see the module notes)."""
    batch, frames, channels, height, width = videos.shape
    flat = videos.reshape(batch * frames, channels, height, width).float()
    if variant == "videogpt":
        flat = (flat * 255).to(torch.uint8).float() / 255.0
    flat = F.interpolate(flat, size=i3d_size(height, width), mode="bilinear", align_corners=False)
    top = (flat.shape[-2] - I3D_RESOLUTION) // 2
    left = (flat.shape[-1] - I3D_RESOLUTION) // 2
    flat = flat[:, :, top : top + I3D_RESOLUTION, left : left + I3D_RESOLUTION]
    clips = flat.reshape(batch, frames, channels, I3D_RESOLUTION, I3D_RESOLUTION).transpose(1, 2)
    return ((clips - 0.5) * 2).contiguous()


@torch.inference_mode()
def i3d_features(model: torch.nn.Module, clips: torch.Tensor, variant: str) -> torch.Tensor:
    """Features of ``B C T 224 224`` I3D inputs (:func:`i3d_input`), one forward for the batch: ``B 400``."""
    if variant == "styleganv":
        features = model(clips, rescale=False, resize=False, return_features=True)
    else:
        features = model(clips)
    return features.flatten(1).double().cpu()


def frechet_distance(features_a: torch.Tensor | np.ndarray, features_b: torch.Tensor | np.ndarray) -> float:
    """Fréchet distance between Gaussians fitted to two ``N D`` feature sets, in float64.

    ``|mu_a - mu_b|^2 + tr(S_a) + tr(S_b) - 2 tr(sqrt(S_a S_b))`` with unbiased (ddof 1) covariances; the
    trace of the matrix square root is the sum of the square roots of the eigenvalues of
    ``sqrt(S_a) S_b sqrt(S_a)`` (symmetric, so ``eigvalsh`` applies and no complex parts arise). With one
    clip per set only the mean term remains, as in Open-Sora-Plan.
    """
    a = torch.as_tensor(features_a, dtype=torch.float64)
    b = torch.as_tensor(features_b, dtype=torch.float64)
    mean_term = (a.mean(dim=0) - b.mean(dim=0)).square().sum()
    if a.shape[0] < 2 or b.shape[0] < 2:
        return float(mean_term)
    cov_a, cov_b = torch.cov(a.T), torch.cov(b.T)
    values, vectors = torch.linalg.eigh(cov_a)
    sqrt_a = (vectors * _drop_rounding_noise(values).sqrt()) @ vectors.T
    product = sqrt_a @ cov_b @ sqrt_a
    trace_sqrt = _drop_rounding_noise(torch.linalg.eigvalsh((product + product.T) / 2)).sqrt().sum()
    return float(mean_term + torch.trace(cov_a) + torch.trace(cov_b) - 2 * trace_sqrt)


def _drop_rounding_noise(eigenvalues: torch.Tensor) -> torch.Tensor:
    """Eigenvalues of a PSD matrix with the rounding noise of its null space (below 1e-12 of the largest, or
    negative) set to 0: with fewer clips than features most eigenvalues are 0, and the square root would
    otherwise turn their ~1e-18 noise into a visible bias."""
    floor = eigenvalues.abs().max() * 1e-12
    return torch.where(eigenvalues > floor, eigenvalues, torch.zeros_like(eigenvalues))


class FVDSet:
    """Real and generated clips, collected video by video, and their FVD at the end.

    Each added pair is resized for I3D at once; every ``batch_videos`` pairs, the real and generated clips
    of every prefix length go through I3D together in one forward. ``group_size`` None scores the whole set
    (the FVD definition); ``group_size=n`` reproduces Open-Sora-Plan's loop, which computes one FVD per
    DataLoader batch of ``n`` videos and averages them.
    """

    def __init__(self, model: torch.nn.Module, variant: str, device: str, batch_videos: int = 10,
                 group_size: int | None = None) -> None:
        self.model, self.variant, self.device = model, check_variant(variant), device
        self.batch_videos, self.group_size = batch_videos, group_size
        self.num_frames: int | None = None
        self.pending: list[tuple[torch.Tensor, torch.Tensor]] = []
        self.features: dict[int, tuple[list[torch.Tensor], list[torch.Tensor]]] = {}
        self.count = 0

    def add(self, real: torch.Tensor, fake: torch.Tensor) -> None:
        """Add one pair of ``T C H W`` videos in [0, 1]; every clip needs the length of the first one."""
        frames = real.shape[0]
        if self.num_frames is None:
            fvd_clip_lengths(frames)
        elif frames != self.num_frames:
            raise ValueError(f"fvd: a clip of {frames} frames where the others have {self.num_frames}; all clips "
                             "need one length (set --num_frames)")
        self.num_frames = frames
        both = torch.stack([real, fake]).to(self.device)
        both = both.float() / 255.0 if both.dtype == torch.uint8 else both.float()
        clips = i3d_input(both, self.variant)
        self.pending.append((clips[0], clips[1]))
        self.count += 1
        if len(self.pending) >= self.batch_videos:
            self._flush()

    def _flush(self) -> None:
        if not self.pending:
            return
        real = torch.stack([pair[0] for pair in self.pending])
        fake = torch.stack([pair[1] for pair in self.pending])
        self.pending = []
        for length in fvd_clip_lengths(self.num_frames):
            features = i3d_features(self.model, torch.cat([real[:, :, :length], fake[:, :, :length]]), self.variant)
            real_list, fake_list = self.features.setdefault(length, ([], []))
            real_list.append(features[: real.shape[0]])
            fake_list.append(features[real.shape[0] :])

    def result(self) -> dict:
        """``mean`` over clip lengths (and groups), ``std`` of those values, ``count`` of videos, the
        ``per_clip_length`` means, ``variant`` and ``group_size``."""
        self._flush()
        if self.count == 0:
            raise ValueError("fvd: no video pair could be scored")
        per_length: dict[int, list[float]] = {}
        for length, (real_list, fake_list) in self.features.items():
            real, fake = torch.cat(real_list), torch.cat(fake_list)
            size = self.group_size or real.shape[0]
            per_length[length] = [frechet_distance(real[begin : begin + size], fake[begin : begin + size])
                                  for begin in range(0, real.shape[0], size)]
        values = np.asarray([value for group_values in per_length.values() for value in group_values])
        return {"mean": float(values.mean()), "std": float(values.std()), "count": self.count,
                "variant": self.variant, "group_size": self.group_size,
                "per_clip_length": {str(length): float(np.mean(group_values))
                                    for length, group_values in per_length.items()}}
