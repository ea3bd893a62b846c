"""Video DC-AE of Open-Sora 2.0 (deep compression autoencoder, 4x32x32, plain AE without posterior).

Encoder: ``project_in`` conv -> six stages -> ``project_out`` (conv + channel-averaging shortcut). Stages 0-2 hold
ResBlocks (conv+SiLU, bias-free conv+RMSNorm), stages 3-5 EfficientViT blocks (multi-scale ReLU linear
attention over all T*H*W tokens, then a GLU MBConv). Every stage but the last ends with a stride-2 conv
downsample plus a parameter-free space-to-channel averaging shortcut; stages 3 and 4 also halve time.
The decoder mirrors it with nearest-upsample+conv blocks and channel-repeat shortcuts, and ends with
RMSNorm -> ReLU -> conv. All convs pad symmetrically with zeros (not causal).

Module names follow the released checkpoint (``encoder.stages.3.op_list.0.context_module.main.qkv.conv.weight``),
so ``F32T4C128_AE.safetensors`` loads with ``strict=True``.

Frames: ``T`` must be 1, 2 or a multiple of 4 and ``H``, ``W`` multiples of 32 (``pad_to_valid=True`` pads
instead: replicated last frame / edge pixels, cropped again by ``forward``, ``reconstruct`` and
``decode(num_frames=...)``). ``T = 4k`` gives ``k`` latent frames; ``T`` in ``{1, 2, 4}`` gives one latent frame,
which decodes to one frame.
"""

from __future__ import annotations

from typing import Any, Sequence, Unpack

import torch
import torch.nn.functional as F
from torch import nn

from ..registry import MODELS
from .base import SharedKeys, VideoAutoencoder
from .checkpoint_io import PretrainedMixin
from .layers.checkpointing import run_block
from .layers.norm import ChannelRMSNorm
from .layers.pixel_shuffle import ChannelRepeatShuffle, SpaceToChannelAverage

RES_BLOCK = "ResBlock"
EVIT_BLOCKS = {"EViTS5_GLU": (5,), "EViT_GLU": ()}  # block type -> multi-scale aggregation kernel sizes
BLOCK_TYPES = (RES_BLOCK, *EVIT_BLOCKS)

_VIDEO_ARCH: dict[str, Any] = dict(
    width_list=(128, 256, 512, 512, 1024, 1024),
    encoder_depth_list=(2, 2, 2, 3, 3, 3),
    decoder_depth_list=(3, 3, 3, 3, 3, 3),
    encoder_block_types=(RES_BLOCK,) * 3 + ("EViTS5_GLU",) * 3,
    decoder_block_types=(RES_BLOCK,) * 3 + ("EViTS5_GLU",) * 3,
    temporal_downsample=(False, False, False, True, True, False),
)
# Named configurations of the Open-Sora 2.0 release (dc-ae-f32t4c128 is the released F32T4C128_AE checkpoint).
DC_AE_CONFIGS: dict[str, dict[str, Any]] = {
    "dc-ae-f32t4c64": dict(_VIDEO_ARCH, latent_channels=64),
    "dc-ae-f32t4c128": dict(_VIDEO_ARCH, latent_channels=128),
    # Open-Sora 2.0 divides this latent by 0.46505; multiplying by the inverse is the same latent.
    "dc-ae-f32t4c256": dict(_VIDEO_ARCH, latent_channels=256, scaling_factor=1 / 0.46505),
}


class ConvLayer(nn.Module):
    """3-D conv with symmetric zero padding, then optional RMSNorm and activation (keys ``conv``, ``norm``)."""

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: int = 3,
        stride: int | tuple[int, int, int] = 1,
        groups: int = 1,
        bias: bool = True,
        norm: bool = False,
        act: nn.Module | None = None,
        eps: float = 1e-5,
    ) -> None:
        super().__init__()
        self.conv = nn.Conv3d(
            in_channels, out_channels, kernel_size, stride=stride, padding=kernel_size // 2, groups=groups, bias=bias
        )
        self.norm = ChannelRMSNorm(out_channels, eps) if norm else None
        self.act = act

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.conv(x)
        if self.norm is not None:
            x = self.norm(x)
        if self.act is not None:
            x = self.act(x)
        return x


class Residual(nn.Module):
    """``main(x) + shortcut(x)`` (keys ``main``; the shortcuts have no parameters)."""

    def __init__(self, main: nn.Module, shortcut: nn.Module | None = None) -> None:
        super().__init__()
        self.main = main
        self.shortcut = shortcut if shortcut is not None else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.main(x) + self.shortcut(x)


class OpSequence(nn.Module):
    """Modules applied in order, stored under ``op_list`` as in the released checkpoint."""

    def __init__(self, ops: Sequence[nn.Module]) -> None:
        super().__init__()
        self.op_list = nn.ModuleList(ops)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for op in self.op_list:
            x = op(x)
        return x


class ResBlockMain(nn.Module):
    """conv3 (bias) + SiLU -> conv3 (no bias) + RMSNorm; used inside an identity ``Residual``."""

    def __init__(self, channels: int, eps: float) -> None:
        super().__init__()
        self.conv1 = ConvLayer(channels, channels, 3, bias=True, act=nn.SiLU())
        self.conv2 = ConvLayer(channels, channels, 3, bias=False, norm=True, eps=eps)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv2(self.conv1(x))


def relu_linear_attention(qkv: torch.Tensor, head_dim: int, eps: float = 1e-15) -> torch.Tensor:
    """ReLU-kernel linear attention over all ``T*H*W`` tokens.

    ``qkv``: ``B (heads*3*d) T H W`` with channels grouped per head as ``[q | k | v]``. Returns ``B (heads*d) T H W``:
    ``out = (v relu(k)^T) relu(q) / (sum_n relu(k_n) . relu(q) + eps)``, computed in float32 in O(N d^2).
    """
    b, _, t, h, w = qkv.shape
    dtype = qkv.dtype
    qkv = qkv.float().reshape(b, -1, 3 * head_dim, t * h * w)
    q, k, v = qkv.split(head_dim, dim=2)
    q, k = F.relu(q), F.relu(k)
    context = torch.matmul(v, k.transpose(-1, -2))  # B heads d d
    numerator = torch.matmul(context, q)  # B heads d N
    denominator = torch.matmul(k.sum(dim=-1, keepdim=True).transpose(-1, -2), q)  # B heads 1 N
    out = numerator / (denominator + eps)
    return out.reshape(b, -1, t, h, w).to(dtype)


class LiteMLA(nn.Module):
    """Multi-scale ReLU linear attention (EfficientViT): qkv 1x1 conv, depthwise+grouped multi-scale copies of
    qkv as extra heads, linear attention, 1x1 projection with RMSNorm."""

    def __init__(self, channels: int, scales: tuple[int, ...], head_dim: int = 32, eps: float = 1e-5) -> None:
        super().__init__()
        heads = channels // head_dim
        if heads < 1:
            raise ValueError(
                f"dc_ae: an attention stage of width {channels} is narrower than attention_head_dim={head_dim}; "
                f"widen width_list or lower attention_head_dim"
            )
        total = heads * head_dim
        self.head_dim = head_dim
        self.qkv = ConvLayer(channels, 3 * total, 1, bias=False)
        self.aggreg = nn.ModuleList(
            nn.Sequential(
                nn.Conv3d(3 * total, 3 * total, scale, padding=scale // 2, groups=3 * total, bias=False),
                nn.Conv3d(3 * total, 3 * total, 1, groups=3 * heads, bias=False),
            )
            for scale in scales
        )
        self.proj = ConvLayer(total * (1 + len(scales)), channels, 1, bias=False, norm=True, eps=eps)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        qkv = self.qkv(x)
        qkv = torch.cat([qkv, *(aggregate(qkv) for aggregate in self.aggreg)], dim=1)
        return self.proj(relu_linear_attention(qkv, self.head_dim))


class GLUMBConv(nn.Module):
    """1x1 conv + SiLU -> depthwise 3x3x3 -> ``x * SiLU(gate)`` -> 1x1 conv (no bias) + RMSNorm."""

    def __init__(self, channels: int, expand_ratio: int = 4, eps: float = 1e-5) -> None:
        super().__init__()
        hidden = channels * expand_ratio
        self.inverted_conv = ConvLayer(channels, 2 * hidden, 1, bias=True, act=nn.SiLU())
        self.depth_conv = ConvLayer(2 * hidden, 2 * hidden, 3, groups=2 * hidden, bias=True)
        self.point_conv = ConvLayer(hidden, channels, 1, bias=False, norm=True, eps=eps)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x, gate = self.depth_conv(self.inverted_conv(x)).chunk(2, dim=1)
        return self.point_conv(x * F.silu(gate))


class EfficientViTBlock(nn.Module):
    """Residual linear attention (``context_module``) then residual GLU MBConv (``local_module``)."""

    def __init__(self, channels: int, scales: tuple[int, ...], head_dim: int, eps: float) -> None:
        super().__init__()
        self.context_module = Residual(LiteMLA(channels, scales, head_dim, eps))
        self.local_module = Residual(GLUMBConv(channels, eps=eps))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.local_module(self.context_module(x))


def build_block(block_type: str, channels: int, head_dim: int, eps: float) -> nn.Module:
    """One stage block by name: ``ResBlock``, ``EViTS5_GLU`` (multi-scale 5) or ``EViT_GLU``."""
    if block_type == RES_BLOCK:
        return Residual(ResBlockMain(channels, eps))
    if block_type in EVIT_BLOCKS:
        return EfficientViTBlock(channels, EVIT_BLOCKS[block_type], head_dim, eps)
    raise ValueError(f"dc_ae: unknown block type {block_type!r}; choose from {BLOCK_TYPES}")


class InterpolateConv(nn.Module):
    """Nearest upsampling x2 in space (and time when ``temporal`` and ``T != 1``), then a 3x3x3 conv."""

    def __init__(self, in_channels: int, out_channels: int, temporal: bool) -> None:
        super().__init__()
        self.temporal = temporal
        self.conv = ConvLayer(in_channels, out_channels, 3, bias=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        scale = (2, 2, 2) if self.temporal and x.shape[2] != 1 else (1, 2, 2)
        return self.conv(F.interpolate(x, scale_factor=scale, mode="nearest"))


def _stride(temporal: bool) -> tuple[int, int, int]:
    """A downsample's stride: 2x in space, and in time when ``temporal``."""
    return (2, 2, 2) if temporal else (1, 2, 2)


def _checkpoint_units(*units: nn.Module) -> None:
    """Give the encoder's/decoder's top-level units (projections, stages) the activation checkpointing flag."""
    for unit in units:
        unit.gradient_checkpointing = False


class DCAEEncoder(nn.Module):
    """Pixels ``B 3 T H W`` -> latent ``B C T/4 H/32 W/32`` (before scaling)."""

    def __init__(
        self,
        in_channels: int,
        latent_channels: int,
        width_list: Sequence[int],
        depth_list: Sequence[int],
        block_types: Sequence[str],
        temporal_downsample: Sequence[bool],
        head_dim: int,
        eps: float,
    ) -> None:
        super().__init__()
        if depth_list[0] > 0:
            self.project_in = ConvLayer(in_channels, width_list[0], 3, bias=True)
        else:  # no first stage: project_in is its downsample, a strided conv without shortcut (image DC-AE f32c32)
            self.project_in = ConvLayer(in_channels, width_list[1], 3, stride=_stride(temporal_downsample[0]))
        stages = []
        for index, (width, depth, block_type) in enumerate(zip(width_list, depth_list, block_types)):
            ops = [build_block(block_type, width, head_dim, eps) for _ in range(depth)]
            if index < len(width_list) - 1 and depth > 0:
                temporal = temporal_downsample[index]
                stride = _stride(temporal)
                next_width = width_list[index + 1]
                ops.append(
                    Residual(
                        ConvLayer(width, next_width, 3, stride=stride, bias=True),
                        SpaceToChannelAverage(width, next_width, 2, temporal=temporal),
                    )
                )
            stages.append(OpSequence(ops))
        self.stages = nn.ModuleList(stages)
        self.project_out = Residual(
            OpSequence([ConvLayer(width_list[-1], latent_channels, 3, bias=True)]),
            SpaceToChannelAverage(width_list[-1], latent_channels, 1),
        )
        _checkpoint_units(*self.stages, self.project_out)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.project_in(x)
        for stage in self.stages:
            x = run_block(stage, x)
        return run_block(self.project_out, x)


class DCAEDecoder(nn.Module):
    """Latent ``B C t h w`` (unscaled) -> pixels ``B 3 4t 32h 32w`` (one frame for ``t == 1``)."""

    def __init__(
        self,
        out_channels: int,
        latent_channels: int,
        width_list: Sequence[int],
        depth_list: Sequence[int],
        block_types: Sequence[str],
        temporal_upsample: Sequence[bool],
        head_dim: int,
        eps: float,
    ) -> None:
        super().__init__()
        self.project_in = Residual(
            ConvLayer(latent_channels, width_list[-1], 3, bias=True),
            ChannelRepeatShuffle(latent_channels, width_list[-1], 1),
        )
        stages = []
        for index, (width, depth, block_type) in enumerate(zip(width_list, depth_list, block_types)):
            ops: list[nn.Module] = []
            if index < len(width_list) - 1 and depth > 0:
                temporal = temporal_upsample[index]
                previous_width = width_list[index + 1]
                ops.append(
                    Residual(
                        InterpolateConv(previous_width, width, temporal),
                        ChannelRepeatShuffle(previous_width, width, 2, temporal=temporal),
                    )
                )
            ops.extend(build_block(block_type, width, head_dim, eps) for _ in range(depth))
            stages.append(OpSequence(ops))
        self.stages = nn.ModuleList(stages)
        if depth_list[0] > 0:
            head_width, head = width_list[0], ConvLayer(width_list[0], out_channels, 3, bias=True)
        else:  # no first stage: the head is its upsample, without shortcut
            head_width, head = width_list[1], InterpolateConv(width_list[1], out_channels, temporal_upsample[0])
        self.project_out = OpSequence([ChannelRMSNorm(head_width, eps), nn.ReLU(), head])
        _checkpoint_units(self.project_in, *self.stages, self.project_out)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        x = run_block(self.project_in, z)
        for stage in reversed(self.stages):
            x = run_block(stage, x)
        return run_block(self.project_out, x)


def _check_widths(width_list: Sequence[int], latent_channels: int) -> None:
    """The parameter-free shortcuts average (or repeat) channel groups: name the config key that breaks them."""
    for index in range(1, len(width_list)):
        if (4 * width_list[index - 1]) % width_list[index]:
            raise ValueError(
                f"dc_ae: width_list[{index}]={width_list[index]} must divide 4 * width_list[{index - 1}]="
                f"{4 * width_list[index - 1]} (the downsample shortcut averages channel groups); e.g. double widths"
            )
    if width_list[-1] % latent_channels:
        raise ValueError(
            f"dc_ae: latent_channels={latent_channels} must divide width_list[-1]={width_list[-1]} (the latent "
            f"shortcut averages channel groups); lower latent_channels or widen the last stage"
        )


def _as_tuple(name: str, values: Sequence[Any], length: int) -> tuple[Any, ...]:
    values = tuple(values)
    if len(values) != length:
        raise ValueError(f"dc_ae: {name} has {len(values)} entries but width_list has {length} stages")
    return values


@MODELS.register_module("dc_ae")
class VideoDCAE(PretrainedMixin, VideoAutoencoder):
    """Open-Sora 2.0 Video DC-AE (``type="dc_ae"``).

    Args:
        model_name: a named config (``dc-ae-f32t4c64``, ``dc-ae-f32t4c128``, ``dc-ae-f32t4c256``) supplying the
            defaults of every hyper-parameter below; explicit arguments override it. None = the released
            ``dc-ae-f32t4c128`` architecture.
        in_channels: pixel channels.
        latent_channels: latent channels.
        width_list: stage widths (6 stages -> 32x spatial compression).
        encoder_depth_list, decoder_depth_list: blocks per stage (each >= 1, but the first may be 0: then
            ``project_in`` is a strided conv to ``width_list[1]`` and the decoder's head upsamples from it, as in the
            image DC-AE ``dc-ae-f32c32-in-1.0``).
        encoder_block_types, decoder_block_types: per stage, ``ResBlock`` / ``EViTS5_GLU`` / ``EViT_GLU``.
        temporal_downsample: per stage, whether the encoder's downsample also halves time.
        temporal_upsample: per stage, whether the decoder's upsample doubles time (default: as downsample).
        scaling_factor, shift_factor: latent normalisation, ``z = (latent - shift_factor) * scaling_factor``
            (diffusers' convention; None = 1.0). Open-Sora 2.0's DC-AE divides by its ``scaling_factor``: its
            ``s`` is ``scaling_factor=1/s`` here.
        attention_head_dim: linear attention head dim (32).
        norm_eps: RMSNorm eps.
        pad_to_valid: pad invalid frame counts / sizes instead of raising.
        **shared: ``disc_off_grad_ckpt`` (keep the decoder's output block out of activation checkpointing) and the
            tiling keys (``layers/tiling.py``; defaults 256 px, 32 frames, overlap 0.25).
    """

    input_hint = "resize/trim the clip or build the model with pad_to_valid=True (pads, then crops after decode)"

    def __init__(
        self,
        model_name: str | None = None,
        in_channels: int = 3,
        latent_channels: int | None = None,
        width_list: Sequence[int] | None = None,
        encoder_depth_list: Sequence[int] | None = None,
        decoder_depth_list: Sequence[int] | None = None,
        encoder_block_types: Sequence[str] | None = None,
        decoder_block_types: Sequence[str] | None = None,
        temporal_downsample: Sequence[bool] | None = None,
        temporal_upsample: Sequence[bool] | None = None,
        scaling_factor: float | None = None,
        shift_factor: float = 0.0,
        attention_head_dim: int = 32,
        norm_eps: float = 1e-5,
        pad_to_valid: bool = False,
        **shared: Unpack[SharedKeys],
    ) -> None:
        super().__init__()
        if model_name is not None and model_name not in DC_AE_CONFIGS:
            raise ValueError(f"dc_ae: unknown model_name {model_name!r}; choose from {sorted(DC_AE_CONFIGS)}")
        named = DC_AE_CONFIGS[model_name or "dc-ae-f32t4c128"]

        def pick(name: str, value: Any) -> Any:
            return named.get(name) if value is None else value

        width_list = tuple(pick("width_list", width_list))
        stages = len(width_list)
        encoder_depths = _as_tuple("encoder_depth_list", pick("encoder_depth_list", encoder_depth_list), stages)
        decoder_depths = _as_tuple("decoder_depth_list", pick("decoder_depth_list", decoder_depth_list), stages)
        if min(encoder_depths[1:] + decoder_depths[1:]) < 1:
            raise ValueError(
                f"dc_ae: encoder_depth_list={list(encoder_depths)} / decoder_depth_list={list(decoder_depths)}: every "
                f"stage but the first needs depth >= 1 (a first stage of depth 0 is folded into project_in/out)"
            )
        down = _as_tuple("temporal_downsample", pick("temporal_downsample", temporal_downsample), stages)
        up = _as_tuple("temporal_upsample", down if temporal_upsample is None else temporal_upsample, stages)
        self.in_channels = in_channels
        self.latent_channels = int(pick("latent_channels", latent_channels))
        self.scaling_factor = float(pick("scaling_factor", scaling_factor) or 1.0)
        self.shift_factor = float(shift_factor)
        _check_widths(width_list, self.latent_channels)
        self.compression = (2 ** sum(map(bool, down[:-1])), 2 ** (stages - 1), 2 ** (stages - 1))
        self.pad_to_valid = pad_to_valid
        encoder_types = _as_tuple("encoder_block_types", pick("encoder_block_types", encoder_block_types), stages)
        decoder_types = _as_tuple("decoder_block_types", pick("decoder_block_types", decoder_block_types), stages)
        self.encoder = DCAEEncoder(in_channels, self.latent_channels, width_list, encoder_depths, encoder_types, down,
                                   attention_head_dim, norm_eps)
        self.decoder = DCAEDecoder(in_channels, self.latent_channels, width_list, decoder_depths, decoder_types, up,
                                   attention_head_dim, norm_eps)
        # The architecture as resolved from model_name, so a saved folder rebuilds it if DC_AE_CONFIGS changes.
        self.register_to_config(
            latent_channels=self.latent_channels, width_list=list(width_list),
            encoder_depth_list=list(encoder_depths), decoder_depth_list=list(decoder_depths),
            encoder_block_types=list(encoder_types), decoder_block_types=list(decoder_types),
            temporal_downsample=list(down), temporal_upsample=list(up), scaling_factor=self.scaling_factor,
        )
        # A trailing one-latent temporal tile would decode to 1 frame (single-frame path): never create one.
        self.init_shared(shared, skip_covered_tiles=True)

    # ---- frame rules ------------------------------------------------------------------------------------------
    def valid_num_frames(self, num_frames: int) -> bool:
        """True when every temporal downsample sees an even frame count (or a single frame)."""
        frames = num_frames
        for _ in range(self.compression[0].bit_length() - 1):
            if frames == 1:
                return True
            if frames % 2:
                return False
            frames //= 2
        return frames >= 1

    def _valid_size(self, num_frames: int, height: int, width: int) -> tuple[int, int, int]:
        """The smallest valid ``(T, H, W)`` at least as large as the input."""
        ct, ch, cw = self.compression
        frames = num_frames
        if self.pad_to_valid and num_frames > 1:
            # 2..2ct frames would encode to one latent frame, which decodes to a single frame: pad to two latents.
            frames = max(-(-num_frames // ct) * ct, 2 * ct) if ct > 1 else num_frames
        return frames, -(-height // ch) * ch, -(-width // cw) * cw

    def frame_rule(self) -> str:
        ct = self.compression[0]
        return f"T = 1, 2 or a multiple of {ct} (1 or {ct}k frames, k >= 2, round-trip)"

    def pads_input(self) -> bool:
        return self.pad_to_valid

    def _pad(self, x: torch.Tensor) -> torch.Tensor:
        """``x`` padded to the smallest valid size (``pad_to_valid``); the crop after decode removes it."""
        size = tuple(x.shape[2:])
        target = self._valid_size(*size)
        if target == size:
            return x
        pad_t, pad_h, pad_w = (t - s for t, s in zip(target, size))
        # Replicate padding keeps the padded border close to the content, which the crop later removes.
        return F.pad(x, (0, pad_w, 0, pad_h, 0, pad_t), mode="replicate")

    def get_latent_size(self, num_frames: int, height: int, width: int) -> tuple[int, int, int]:
        frames, height, width = self._valid_size(num_frames, height, width)
        ct, ch, cw = self.compression
        return (frames - 1) // ct + 1, height // ch, width // cw

    # ---- interface --------------------------------------------------------------------------------------------
    def _encode(self, x: torch.Tensor, sample_posterior: bool) -> tuple[torch.Tensor, None]:
        """Pixels ``B 3 T H W`` in [-1, 1] -> scaled latent ``B C t h w``; no posterior."""
        if self.pad_to_valid:
            x = self._pad(x)
        return self.scale_latent(self.tiler.encode(x, self.encoder)), None

    def _decode(self, z: torch.Tensor, num_frames: int | None) -> torch.Tensor:
        """Scaled latent ``B C t h w`` -> pixels ``B 3 T H W`` (``T = 4t``; one frame for ``t = 1``)."""
        return self.tiler.decode(self.unscale_latent(z), self.decoder)

    def get_last_layer(self) -> torch.Tensor:
        head = self.decoder.project_out.op_list[2]
        return (head.conv if isinstance(head, InterpolateConv) else head).conv.weight

    @classmethod
    def checkpoint_hint(cls, state_dict: dict[str, torch.Tensor]) -> str | None:
        """Name the DC-AE config whose latent width matches a checkpoint (appended to load errors)."""
        for key, tensor in state_dict.items():
            if key.endswith("encoder.project_out.main.op_list.0.conv.weight"):
                name = f"dc-ae-f32t4c{tensor.shape[0]}"
                if name in DC_AE_CONFIGS:
                    return f"its latent width {tensor.shape[0]} matches model_name={name!r}"
                return f"its latent width is {tensor.shape[0]} (set latent_channels={tensor.shape[0]})"
        return None
