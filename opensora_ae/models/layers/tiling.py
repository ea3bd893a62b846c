"""Tiled (streamed) encode/decode shared by every model family.

A long or large video is cut into overlapping tiles along time and/or space, each tile goes through the
model's plain ``encode``/``decode`` function, and neighbouring outputs are cross-faded linearly over their
overlap, so peak memory depends on the tile size and not on the video length.

Config keys (constructor kwargs of every model, names as in Open-Sora)::

    use_spatial_tiling   bool   tile H and W
    use_temporal_tiling  bool   tile T
    spatial_tile_size    int    tile height/width in PIXELS (latent tile = size / spatial compression)
    temporal_tile_size   int    tile length in FRAMES (latent tile = size / temporal compression)
    tile_overlap_factor  float  fraction of a tile shared with the next one

Usage from a model (the helper the families call)::

    self.tiler = VideoTiler(TilingConfig(**tiling_kwargs), compression=(4, 8, 8), causal=True)
    moments = self.tiler.encode(x, lambda clip: self.quant_conv(self.encoder(clip)))   # x: B C T H W pixels
    x_rec = self.tiler.decode(z, lambda lat: self.decoder(self.post_quant_conv(lat)))  # z: B C t h w latents

``encode`` tiles in time when ``T > temporal_tile_size``, else in space when ``H`` or ``W > spatial_tile_size``;
inside a temporal tile it tiles in space when the tile is still too large. ``decode`` does the same with the
latent tile sizes. Geometry per axis (``c`` = compression of that axis, ``o`` = overlap factor):

* encode: tiles of ``S`` pixels/frames every ``int(S (1 - o))`` (rounded down to a multiple of ``c``); outputs
  of ``S / c`` latents, of which ``int(S / c * o)`` are blended with the previous tile;
* decode: tiles of ``S / c`` latents every ``int(S / c * (1 - o))``; outputs of ``S`` frames/pixels, of which
  ``int(S o)`` are blended (blend extents are always in the units of the tensor being blended);
* ``causal=True`` (HunyuanVideo): a temporal tile reads one extra frame/latent (65 frames = 17 latents for a
  64-frame tile) and every tile after the first drops its first output, which the causal model computed from a
  lone first frame; the first tile keeps one output more.

Blending is ``b[k] = a[-e + k] * (1 - k / e) + b[k] * k / e`` for ``k < e`` (``e`` clipped to both tiles' lengths),
and a tile is blended with its neighbours' already-blended outputs, row by row then column by column, exactly as
the Open-Sora 2.0 / HunyuanVideo reference implementations do, so their tiled outputs are reproduced. Unlike the
references, the last tile along an axis keeps all of its output, so the result has exactly the untiled shape
for any size. ``skip_covered_tiles=True`` stops adding tiles once one reaches the end of an axis (DC-AE needs
it: a trailing one-latent tile would take its single-frame path and decode to 1 frame instead of 4).
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any, Callable

import torch

TileFn = Callable[[torch.Tensor], torch.Tensor]
TIME_DIM, HEIGHT_DIM, WIDTH_DIM = 2, 3, 4


@dataclass(frozen=True)
class TilingConfig:
    """The five tiling keys; see the module docstring."""

    use_spatial_tiling: bool = False
    use_temporal_tiling: bool = False
    spatial_tile_size: int = 256
    temporal_tile_size: int = 32
    tile_overlap_factor: float = 0.25

    def check(self, compression: tuple[int, int, int]) -> None:
        """Raise a one-line error when the sizes do not fit the model's compression."""
        ct, ch, cw = compression
        if not 0.0 <= self.tile_overlap_factor < 1.0:
            raise ValueError(f"tile_overlap_factor={self.tile_overlap_factor} must be in [0, 1)")
        if self.spatial_tile_size <= 0 or self.spatial_tile_size % max(ch, cw):
            raise ValueError(
                f"spatial_tile_size={self.spatial_tile_size} must be a positive multiple of the spatial "
                f"compression {max(ch, cw)}"
            )
        if self.temporal_tile_size <= 0 or self.temporal_tile_size % ct:
            raise ValueError(
                f"temporal_tile_size={self.temporal_tile_size} must be a positive multiple of the temporal "
                f"compression {ct}"
            )

    @property
    def enabled(self) -> bool:
        return self.use_spatial_tiling or self.use_temporal_tiling


@dataclass(frozen=True)
class AxisTiling:
    """How one tensor dim is cut into tiles.

    ``size`` input units are read per tile (plus one when ``causal``), a tile starts every ``stride`` input
    units, each tile contributes ``out_stride`` outputs (the first causal tile one more, the last tile all of
    its outputs) and its first ``blend`` outputs are cross-faded with the previous tile.
    """

    dim: int
    size: int
    stride: int
    out_stride: int
    blend: int
    causal: bool = False
    skip_covered: bool = False

    def starts(self, length: int) -> list[int]:
        """Start offsets of the tiles along an axis of ``length`` input units."""
        starts = []
        for start in range(0, length, self.stride):
            # A causal tile drops its first output; a tile holding one input unit would contribute nothing.
            if self.causal and start > 0 and length - start <= 1:
                break
            starts.append(start)
            if self.skip_covered and start + self.size >= length:
                break
        return starts

    def read(self, x: torch.Tensor, start: int) -> torch.Tensor:
        size = self.size + 1 if self.causal else self.size
        return x.narrow(self.dim, start, min(size, x.shape[self.dim] - start))


def axis_tiling(
    dim: int,
    tile_size: int,
    compression: int,
    overlap: float,
    encode: bool,
    causal: bool = False,
    skip_covered: bool = False,
) -> AxisTiling:
    """Geometry of one axis. ``tile_size`` is in pixels/frames; ``encode`` selects input = pixels/frames."""
    latent_tile = tile_size // compression
    if encode:
        stride = max(compression, int(tile_size * (1 - overlap)) // compression * compression)
        size, out_stride, out_tile = tile_size, stride // compression, latent_tile
    else:
        stride = max(1, int(latent_tile * (1 - overlap)))
        size, out_stride, out_tile = latent_tile, stride * compression, tile_size
    blend = max(0, min(int(out_tile * overlap), out_tile - out_stride))
    return AxisTiling(dim, size, stride, out_stride, blend, causal, skip_covered)


def cross_fade(previous: torch.Tensor, current: torch.Tensor, extent: int, dim: int) -> torch.Tensor:
    """Return ``current`` with its first ``extent`` entries along ``dim`` faded in from ``previous``'s last ones."""
    extent = min(previous.shape[dim], current.shape[dim], extent)
    if extent <= 0:
        return current
    shape = [1] * current.ndim
    shape[dim] = extent
    weight = (torch.arange(extent, device=current.device, dtype=torch.float32) / extent).to(current.dtype)
    weight = weight.view(shape)
    tail = previous.narrow(dim, previous.shape[dim] - extent, extent)
    head = current.narrow(dim, 0, extent)
    faded = tail * (1 - weight) + head * weight
    return torch.cat([faded, current.narrow(dim, extent, current.shape[dim] - extent)], dim=dim)


def _kept(output: torch.Tensor, axis: AxisTiling, index: int, last: bool) -> torch.Tensor:
    """The part of a tile's output that goes into the result, copied so the full tile can be freed."""
    if last:
        count = output.shape[axis.dim]
    else:
        count = min(axis.out_stride + (1 if axis.causal and index == 0 else 0), output.shape[axis.dim])
    return output.narrow(axis.dim, 0, count).clone(memory_format=torch.contiguous_format)


def tile_1d(x: torch.Tensor, fn: TileFn, axis: AxisTiling) -> torch.Tensor:
    """Apply ``fn`` to overlapping tiles of ``x`` along ``axis.dim`` and blend the outputs."""
    starts = axis.starts(x.shape[axis.dim])
    kept: list[torch.Tensor] = []
    previous = None
    for index, start in enumerate(starts):
        output = fn(axis.read(x, start))
        if axis.causal and index > 0:
            output = output.narrow(axis.dim, 1, output.shape[axis.dim] - 1)
        if previous is not None:
            output = cross_fade(previous, output, axis.blend, axis.dim)
        kept.append(_kept(output, axis, index, index == len(starts) - 1))
        previous = output
    return torch.cat(kept, dim=axis.dim)


def tile_2d(x: torch.Tensor, fn: TileFn, rows: AxisTiling, cols: AxisTiling) -> torch.Tensor:
    """Apply ``fn`` to a grid of overlapping tiles; each tile is blended with the (already blended) tile above,
    then with the one to its left."""
    row_starts = rows.starts(x.shape[rows.dim])
    col_starts = cols.starts(x.shape[cols.dim])
    result_rows: list[torch.Tensor] = []
    previous_row: list[torch.Tensor] | None = None
    for i, row_start in enumerate(row_starts):
        band = rows.read(x, row_start)
        current_row: list[torch.Tensor] = []
        kept: list[torch.Tensor] = []
        for j, col_start in enumerate(col_starts):
            output = fn(cols.read(band, col_start))
            if previous_row is not None:
                output = cross_fade(previous_row[j], output, rows.blend, rows.dim)
            if j > 0:
                output = cross_fade(current_row[j - 1], output, cols.blend, cols.dim)
            current_row.append(output)
            part = _kept(output, rows, i, i == len(row_starts) - 1)
            kept.append(_kept(part, cols, j, j == len(col_starts) - 1))
        result_rows.append(torch.cat(kept, dim=cols.dim))
        previous_row = current_row
    return torch.cat(result_rows, dim=rows.dim)


class VideoTiler:
    """Tiled encode/decode of ``B C T H W`` tensors for one model (see the module docstring).

    Args:
        config: the tiling keys.
        compression: the model's ``(t, h, w)`` compression.
        causal: temporal tiles of a causal model (read one extra frame, drop the first output of later tiles).
        skip_covered_tiles: stop adding tiles along an axis once a tile reaches its end.
    """

    def __init__(
        self,
        config: TilingConfig,
        compression: tuple[int, int, int],
        causal: bool = False,
        skip_covered_tiles: bool = False,
    ) -> None:
        config.check(compression)
        self.config = config
        self.compression = tuple(compression)
        self.causal = causal
        self.skip_covered_tiles = skip_covered_tiles

    def with_changes(self, **changes: Any) -> "VideoTiler":
        """A tiler with some tiling keys changed (unknown keys raise a one-line error)."""
        unknown = set(changes) - set(TilingConfig.__dataclass_fields__)
        if unknown:
            raise KeyError(f"unknown tiling keys {sorted(unknown)}; valid: {sorted(TilingConfig.__dataclass_fields__)}")
        return VideoTiler(replace(self.config, **changes), self.compression, self.causal, self.skip_covered_tiles)

    def _axis(self, dim: int, encode: bool) -> AxisTiling:
        cfg = self.config
        if dim == TIME_DIM:
            return axis_tiling(
                dim, cfg.temporal_tile_size, self.compression[0], cfg.tile_overlap_factor, encode,
                causal=self.causal, skip_covered=self.skip_covered_tiles,
            )
        return axis_tiling(
            dim, cfg.spatial_tile_size, self.compression[dim - 2], cfg.tile_overlap_factor, encode,
            skip_covered=self.skip_covered_tiles,
        )

    def _spatial(self, x: torch.Tensor, fn: TileFn, encode: bool) -> torch.Tensor:
        rows, cols = self._axis(HEIGHT_DIM, encode), self._axis(WIDTH_DIM, encode)
        too_large = x.shape[HEIGHT_DIM] > rows.size or x.shape[WIDTH_DIM] > cols.size
        if self.config.use_spatial_tiling and too_large:
            return tile_2d(x, fn, rows, cols)
        return fn(x)

    def _run(self, x: torch.Tensor, fn: TileFn, encode: bool) -> torch.Tensor:
        if x.ndim != 5:
            raise ValueError(f"tiling expects B C T H W tensors, got shape {tuple(x.shape)}")
        time_axis = self._axis(TIME_DIM, encode)
        if self.config.use_temporal_tiling and x.shape[TIME_DIM] > time_axis.size:
            return tile_1d(x, lambda clip: self._spatial(clip, fn, encode), time_axis)
        return self._spatial(x, fn, encode)

    def encode(self, x: torch.Tensor, fn: TileFn) -> torch.Tensor:
        """Pixels ``B C T H W`` -> ``fn`` outputs (latents or posterior moments), tiled as configured."""
        return self._run(x, fn, encode=True)

    def decode(self, z: torch.Tensor, fn: TileFn) -> torch.Tensor:
        """Latents ``B C t h w`` -> ``fn`` outputs (pixels), tiled as configured."""
        return self._run(z, fn, encode=False)
