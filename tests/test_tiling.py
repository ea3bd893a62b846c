"""Shared tiling engine: geometry, exact shapes for odd sizes, tiled vs untiled error, causal tiles.

The reference-parity of tiled DC-AE outputs is in ``test_dc_ae.py::test_parity_tiled`` (and the HunyuanVideo
tiled fixture in its own test file); here toy codecs with known behaviour isolate the engine:

* ``PoolCodec``: average-pool encode / nearest-repeat decode. Local and linear, so tiling must reproduce the
  untiled result to float precision for ANY input and size; any misaligned tile or wrong blend extent shows.
* ``BlurCodec``: the same plus a zero-padded 3x3x3 blur, so every tile border differs from the untiled result
  like a real conv net's; on a smooth input the cross-fade must hide those borders.
"""

from __future__ import annotations

import math
import sys
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from opensora_ae.models.layers.tiling import TilingConfig, VideoTiler, axis_tiling, cross_fade

sys.path.insert(0, str(Path(__file__).resolve().parent))
from parity_utils import one_thread  # noqa: E402,F401  (fixture)
from test_dc_ae import tiny  # noqa: E402

pytestmark = pytest.mark.usefixtures("one_thread")


class PoolCodec:
    """Encode = mean over ``ct x cs x cs`` blocks; decode = repeat. ``causal``: frame 0 alone, then groups."""

    def __init__(self, ct: int = 4, cs: int = 8, causal: bool = False) -> None:
        self.ct, self.cs, self.causal = ct, cs, causal

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        if self.causal:
            first = F.avg_pool3d(x[:, :, :1], (1, self.cs, self.cs))
            if x.shape[2] == 1:
                return first
            return torch.cat([first, F.avg_pool3d(x[:, :, 1:], (self.ct, self.cs, self.cs))], dim=2)
        return F.avg_pool3d(x, (self.ct, self.cs, self.cs))

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        x = z.repeat_interleave(self.cs, dim=3).repeat_interleave(self.cs, dim=4)
        if self.causal:
            return torch.cat([x[:, :, :1], x[:, :, 1:].repeat_interleave(self.ct, dim=2)], dim=2)
        return x.repeat_interleave(self.ct, dim=2)


class BlurCodec(PoolCodec):
    """PoolCodec with a zero-padded box blur before pooling and after upsampling (tile borders matter)."""

    @staticmethod
    def blur(x: torch.Tensor) -> torch.Tensor:
        channels = x.shape[1]
        kernel = torch.full((channels, 1, 3, 3, 3), 1 / 27, dtype=x.dtype)
        return F.conv3d(x, kernel, padding=1, groups=channels)

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        return super().encode(self.blur(x))

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        return self.blur(super().decode(z))


def smooth_video(frames: int, height: int, width: int) -> torch.Tensor:
    t = torch.linspace(0, 1, frames).view(frames, 1, 1)
    h = torch.linspace(0, 1, height).view(1, height, 1)
    w = torch.linspace(0, 1, width).view(1, 1, width)
    return 0.8 * torch.stack([torch.sin(2 * math.pi * (0.3 * t + 0.4 * h + 0.3 * w + c / 3)) for c in range(3)])[None]


def tiler(causal: bool = False, skip: bool = False, overlap: float = 0.25, **keys) -> VideoTiler:
    config = TilingConfig(True, True, keys.get("spatial", 32), keys.get("temporal", 16), overlap)
    return VideoTiler(config, (4, 8, 8), causal=causal, skip_covered_tiles=skip)


def test_released_geometry():
    # DC-AE release: 256 px / 32 frames / 0.25 with 4x32x32 compression.
    enc_space = axis_tiling(4, 256, 32, 0.25, encode=True)
    assert (enc_space.size, enc_space.stride, enc_space.out_stride, enc_space.blend) == (256, 192, 6, 2)
    dec_time = axis_tiling(2, 32, 4, 0.25, encode=False)
    assert (dec_time.size, dec_time.stride, dec_time.out_stride, dec_time.blend) == (8, 6, 24, 8)
    # HunyuanVideo release: a 64-frame temporal tile reads 65 frames = 17 latents.
    enc_time = axis_tiling(2, 64, 4, 0.25, encode=True, causal=True)
    assert (enc_time.stride, enc_time.out_stride, enc_time.blend) == (48, 12, 4)
    assert enc_time.read(torch.zeros(1, 1, 200, 1, 1), 48).shape[2] == 65
    dec = axis_tiling(2, 64, 4, 0.25, encode=False, causal=True)
    assert (dec.size, dec.stride, dec.out_stride, dec.blend) == (16, 12, 48, 16)
    assert dec.read(torch.zeros(1, 1, 40, 1, 1), 12).shape[2] == 17
    # A 2-latent spatial tile with overlap 0.25 (reference quirk b) still gives aligned, integral strides.
    odd = axis_tiling(3, 64, 32, 0.25, encode=True)
    assert (odd.stride, odd.out_stride, odd.blend) == (32, 1, 0)


def test_cross_fade_ramp():
    previous = torch.zeros(1, 1, 6, 1, 1)
    current = torch.ones(1, 1, 5, 1, 1)
    faded = cross_fade(previous, current, 4, dim=2).flatten().tolist()
    assert faded == [0.0, 0.25, 0.5, 0.75, 1.0]
    assert cross_fade(previous, current[:, :, :1], 4, dim=2).flatten().tolist() == [0.0]  # extent clipped to 1


@pytest.mark.parametrize("causal", [False, True])
@pytest.mark.parametrize("frames, height, width", [(17, 72, 120), (33, 40, 56), (9, 8, 8)])
def test_pool_codec_tiled_equals_untiled(causal, frames, height, width):
    if not causal:
        frames -= 1  # non-causal: a multiple of the temporal compression
    codec = PoolCodec(causal=causal)
    x = torch.randn(1, 3, frames, height, width)
    z = codec.encode(x)
    for skip in (False, True):
        tiles = tiler(causal, skip)
        z_tiled = tiles.encode(x, codec.encode)
        assert z_tiled.shape == z.shape
        torch.testing.assert_close(z_tiled, z, atol=1e-5, rtol=1e-5)
        x_tiled = tiles.decode(z, codec.decode)
        assert x_tiled.shape == codec.decode(z).shape == x.shape
        torch.testing.assert_close(x_tiled, codec.decode(z), atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("causal", [False, True])
def test_blur_codec_small_error_on_smooth_input(causal):
    """Released-like geometry (8-latent tiles). A zero-padded border is off by ~1/3 of the signal; the cross-fade
    gives a border sample weight <= 1/extent, so the tiled error stays a small fraction of the signal, while
    without overlap the borders show as seams."""
    codec = BlurCodec(causal=causal)
    x = smooth_video(49 if causal else 48, 72, 136)
    z, x_rec = codec.encode(x), codec.decode(codec.encode(x))
    errors = {}
    for overlap in (0.25, 0.0):
        tiles = tiler(causal, overlap=overlap, spatial=64, temporal=32)
        z_tiled = tiles.encode(x, codec.encode)
        x_tiled = tiles.decode(z, codec.decode)
        assert z_tiled.shape == z.shape and x_tiled.shape == x_rec.shape == x.shape
        errors[overlap] = ((z_tiled - z).abs().max().item(), (x_tiled - x_rec).abs().max().item())
    signal = x.abs().max().item()
    assert max(errors[0.25]) < 0.1 * signal
    assert errors[0.0][0] > 1.5 * errors[0.25][0] and errors[0.0][1] > 5 * errors[0.25][1]


def test_only_spatial_or_only_temporal():
    codec = PoolCodec()
    x = torch.randn(1, 3, 24, 72, 40)
    for keys in (dict(use_temporal_tiling=False), dict(use_spatial_tiling=False)):
        tiles = tiler().with_changes(**keys)
        torch.testing.assert_close(tiles.encode(x, codec.encode), codec.encode(x))
    with pytest.raises(KeyError, match="unknown tiling keys"):
        tiler().with_changes(tile_size=3)
    with pytest.raises(ValueError, match="tile_overlap_factor"):
        tiler(overlap=1.0)


def test_dc_ae_temporal_tiling_keeps_length():
    """The reference returns 121 frames for 124; ours returns exactly the input length."""
    model = tiny(use_temporal_tiling=True, temporal_tile_size=32).eval()
    x = torch.rand(1, 3, 124, 8, 8) * 2 - 1
    with torch.no_grad():
        z = model.encode(x)
        assert z.shape[2] == 31
        assert model.decode(z).shape == x.shape
        model.set_tiling(use_spatial_tiling=True, spatial_tile_size=8)
        x_odd = torch.rand(1, 3, 8, 16, 24) * 2 - 1
        z_odd = model.encode(x_odd)
        assert z_odd.shape == (1, 4, 2, 2, 3) and model.decode(z_odd).shape == x_odd.shape
