"""Causal up- and down-samplers for video autoencoders.

Both keep the causal rule of the encoders they serve: the first frame is handled on its own, so a causal
model maps ``1 + s*k`` frames to ``1 + k`` frames (down) and ``1 + k`` to ``1 + s*k`` (up) per temporal stage.
Each sampler wraps its conv at ``.conv`` (a ``CausalConv3d``, whose own ``nn.Conv3d`` sits at ``.conv.conv``),
which gives the released key names ``downsamplers.0.conv.conv.weight`` / ``upsamplers.0.conv.conv.weight``.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .conv import CausalConv3d, SpacePad, TimePad, _triple


def causal_nearest_upsample(x: torch.Tensor, scale_factor: tuple[int, int, int]) -> torch.Tensor:
    """Nearest-neighbour upsampling of ``B C T H W`` that keeps the first frame single.

    The first frame is upsampled in space only, the remaining frames by ``(st, sh, sw)``: ``T`` frames become
    ``1 + st * (T - 1)``. Nearest upsampling only copies values, so repeating frames on the small input first
    and then upsampling in space gives exactly the per-part result with one large allocation instead of three.
    """
    st, sh, sw = scale_factor
    num_frames = x.shape[2]
    if st != 1 and num_frames > 1:
        repeats = torch.full((num_frames,), st, device=x.device)
        repeats[0] = 1
        x = x.repeat_interleave(repeats, dim=2, output_size=1 + st * (num_frames - 1))
    if sh == 1 and sw == 1:
        return x
    return F.interpolate(x, scale_factor=(1, sh, sw), mode="nearest")


# Taps of a 3-tap conv that an output sees on a 2x nearest-upsampled axis, as 2 taps on the low-resolution
# axis: output 2i sees low-res (i-1, i, i) -> weights (w0, w1 + w2); output 2i+1 sees (i, i, i+1) -> (w0 + w1, w2).
_EVEN_TAPS = ((1.0, 0.0, 0.0), (0.0, 1.0, 1.0))
_ODD_TAPS = ((1.0, 1.0, 0.0), (0.0, 0.0, 1.0))
_IDENTITY_TAPS = ((1.0, 0.0, 0.0), (0.0, 1.0, 0.0), (0.0, 0.0, 1.0))


def _phase_matrix(scale: int, *, first_frame: bool = False) -> torch.Tensor:
    """``phases x new_taps x 3`` tap combinations of one axis (see ``_EVEN_TAPS``)."""
    if first_frame:  # causal time, output frame 0: three copies of frame 0
        return torch.tensor([[[1.0, 1.0, 1.0]]])
    if scale == 1:
        return torch.tensor([_IDENTITY_TAPS])
    return torch.tensor([_EVEN_TAPS, _ODD_TAPS])


def _phase_weight(weight: torch.Tensor, scales: tuple[int, int, int], first_frame: bool = False) -> torch.Tensor:
    """Fold the upsampling into the conv weight: ``(Co, Ci, 3, 3, 3)`` -> ``(Pt*Ph*Pw*Co, Ci, kt, kh, kw)``.

    ``P*`` are the output phases per axis (2 for a 2x axis, else 1); ``k*`` the taps on the low-resolution input
    (2 for a 2x axis, else 3; 1 in time for the causal first frame).
    """
    mt, mh, mw = (
        _phase_matrix(scales[0], first_frame=first_frame).to(weight),
        _phase_matrix(scales[1]).to(weight),
        _phase_matrix(scales[2]).to(weight),
    )
    combined = torch.einsum("pax,qby,rcz,oixyz->pqroiabc", mt, mh, mw, weight)
    return combined.flatten(0, 3)


class CausalUpsample(nn.Module):
    """Causal nearest upsampling followed by a causal conv: ``B C T H W -> B C' (1+st(T-1)) sh*H sw*W``.

    The result is ``conv(causal_nearest_upsample(x))``. For the usual 3x3x3 conv with factors of 1 or 2 and
    replicated first frames it is computed without building the upsampled tensor: every output phase (even/odd
    position along each 2x axis) of a conv over nearest-upsampled input is a 2-tap conv over the low-resolution
    input with summed weights, so one conv over the small input with ``phases * C'`` output channels gives all
    phases (8/27 of the multiply-adds for a 2x2x2 factor) and they are interleaved into the output.

    Args:
        in_channels, out_channels: widths (``out_channels`` defaults to ``in_channels``).
        scale_factor: ``(st, sh, sw)`` integer factors.
        kernel_size: kernel of the conv after upsampling.
        time_pad, space_pad: padding modes of that conv (see ``CausalConv3d``).
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int | None = None,
        scale_factor: int | tuple[int, int, int] = 2,
        kernel_size: int | tuple[int, int, int] = 3,
        time_pad: TimePad = "replicate",
        space_pad: SpacePad = "replicate",
        bias: bool = True,
    ) -> None:
        super().__init__()
        self.scale_factor = _triple(scale_factor)
        self.conv = CausalConv3d(
            in_channels, out_channels or in_channels, kernel_size, bias=bias, time_pad=time_pad, space_pad=space_pad
        )
        self.fold_upsampling = (
            _triple(kernel_size) == (3, 3, 3) and set(self.scale_factor) <= {1, 2} and time_pad == "replicate"
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.fold_upsampling:
            return self.conv(causal_nearest_upsample(x, self.scale_factor))
        return self._folded_forward(x)

    def _folded_forward(self, x: torch.Tensor) -> torch.Tensor:
        st, sh, sw = self.scale_factor
        weight, bias = self.conv.conv.weight, self.conv.conv.bias
        out_channels = weight.shape[0]
        batch, _, frames, height, width = x.shape
        # Low-resolution input padded by one pixel in space (padding commutes with nearest upsampling); in time
        # a 1x axis gets the usual two replicated front frames, a 2x axis uses pairs (m-1, m) and frame 0 alone.
        time_front = 2 if st == 1 else 0
        if self.conv.space_pad == "replicate":
            padded = F.pad(x, (1, 1, 1, 1, time_front, 0), mode="replicate")
        else:
            padded = F.pad(x, (1, 1, 1, 1))
            if time_front:
                padded = torch.cat([padded[:, :, :1].expand(-1, -1, time_front, -1, -1), padded], dim=2)
        out = x.new_empty(batch, out_channels, 1 + st * (frames - 1), sh * height, sw * width)
        phase_bias = None if bias is None else bias.repeat(st * sh * sw)
        if st == 2:
            first = F.conv3d(padded[:, :, :1], _phase_weight(weight, self.scale_factor, first_frame=True),
                             None if bias is None else bias.repeat(sh * sw))
            self._scatter(out[:, :, :1], first, (1, sh, sw), height, width)
            del first
        if frames > 1 or st == 1:
            main = F.conv3d(padded, _phase_weight(weight, self.scale_factor), phase_bias)
            # For a 2x time axis, phase 0 (w0, w1+w2) gives frames 2m, phase 1 (w0+w1, w2) frames 2m-1.
            target = out if st == 1 else out[:, :, 1:]
            self._scatter(target, main, (st, sh, sw), height, width, time_phase_start=(1, 0) if st == 2 else (0,))
        return out

    @staticmethod
    def _scatter(
        out: torch.Tensor,
        phases: torch.Tensor,
        scales: tuple[int, int, int],
        height: int,
        width: int,
        time_phase_start: tuple[int, ...] = (0,),
    ) -> None:
        """Interleave ``phases`` (``B (pt ph pw C) t h' w'``) into ``out`` (``B C T H W``).

        Along a 2x spatial axis, phase 0 takes windows ``0..n-1`` and phase 1 windows ``1..n`` of the ``n + 1``
        windows over the padded input; ``time_phase_start[p]`` is the first output frame of time phase ``p``.
        """
        st, sh, sw = scales
        out_channels = out.shape[1]
        phases = phases.unflatten(1, (st, sh, sw, out_channels))
        for pt in range(st):
            for ph in range(sh):
                for pw in range(sw):
                    h0 = ph if sh == 2 else 0
                    w0 = pw if sw == 2 else 0
                    source = phases[:, pt, ph, pw, :, :, h0 : h0 + height, w0 : w0 + width]
                    out[:, :, time_phase_start[pt] :: st, ph::sh, pw::sw] = source

class CausalDownsample(nn.Module):
    """Strided causal conv: ``B C T H W -> B C' (1+(T-1)//st) H/sh W/sw`` for ``T = 1 + st*k``.

    The time axis gets ``kt - 1`` front frames whatever the stride, so the first output frame sees the first
    input frame alone and every later one sees ``st`` new frames (HunyuanVideo's convention).

    Args:
        in_channels, out_channels: widths (``out_channels`` defaults to ``in_channels``).
        stride: ``(st, sh, sw)``.
        kernel_size: conv kernel.
        time_pad, space_pad: padding modes (see ``CausalConv3d``).
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int | None = None,
        stride: int | tuple[int, int, int] = 2,
        kernel_size: int | tuple[int, int, int] = 3,
        time_pad: TimePad = "replicate",
        space_pad: SpacePad = "replicate",
        bias: bool = True,
    ) -> None:
        super().__init__()
        kt = _triple(kernel_size)[0]
        self.conv = CausalConv3d(
            in_channels,
            out_channels or in_channels,
            kernel_size,
            stride=stride,
            bias=bias,
            time_pad=time_pad,
            space_pad=space_pad,
            front_frames=kt - 1,
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(x)
