"""HunyuanVideo causal 3-D VAE (the autoencoder of HunyuanVideo, reused by Open-Sora 2.0).

Encoder: causal conv in -> down blocks (resnets, then a strided causal conv) -> mid block (resnet,
frame-causal attention, resnet) -> GroupNorm, SiLU, causal conv out to ``2 * latent_channels`` -> 1x1x1
``quant_conv`` -> diagonal Gaussian. Decoder mirrors it with causal nearest upsampling. Every conv pads
``k - 1`` copies of the first frame in front and replicates edge pixels in space, so frame ``t`` never sees
later frames and ``4k + 1`` frames map to ``k + 1`` latents (the first frame alone).

State-dict keys are those of the Tencent release and of diffusers' ``AutoencoderKLHunyuanVideo``
(``encoder.down_blocks.0.resnets.0.conv1.conv.weight``, ``encoder.mid_block.attentions.0.to_q.weight``, ...).
"""

from __future__ import annotations

import json
import math
import os
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Any, Sequence, Unpack

import torch
from torch import nn

from ..registry import MODELS
from .base import SharedKeys, VideoAutoencoder
from .checkpoint_io import (CONFIG_FILE_NAME, CheckpointError, PretrainedMixin, StateDict, read_folder_config,
                            save_state_dict_file)
from .config_io import atomic_write
from .layers.attention import VideoSelfAttention
from .layers.checkpointing import run_block
from .layers.conv import CausalConv3d
from .layers.posterior import DiagonalGaussianDistribution
from .layers.resnet import ResnetBlock, norm_silu_conv
from .layers.sampling import CausalDownsample, CausalUpsample
from .layers.tiling import TilingConfig

NORM_EPS = 1e-6
# diffusers' AutoencoderKLHunyuanVideo: class name, weights file, and its config names that differ from ours.
DIFFUSERS_CLASS = "AutoencoderKLHunyuanVideo"
DIFFUSERS_WEIGHTS = "diffusion_pytorch_model.safetensors"
DIFFUSERS_TO_OURS = {"temporal_compression_ratio": "time_compression_ratio"}
DIFFUSERS_BLOCK_TYPES = {"down_block_types": "HunyuanVideoDownBlock3D", "up_block_types": "HunyuanVideoUpBlock3D"}
# The Tencent release stores the VAE inside a bigger dict under this prefix.
TENCENT_PREFIX = "vae."
# The Tencent release's vae/config.json: its class, block names, and the names that differ from ours (its
# sample_size / sample_tsize are the tile sizes of its tiled inference).
TENCENT_CLASS = "AutoencoderKLCausal3D"
TENCENT_BLOCK_TYPES = {"down_block_types": "DownEncoderBlockCausal3D", "up_block_types": "UpDecoderBlockCausal3D"}
TENCENT_TO_OURS = {"sample_size": "spatial_tile_size", "sample_tsize": "temporal_tile_size"}
# Foreign config.json layouts this family reads: class name -> (block types, renames).
FOREIGN_LAYOUTS = {
    DIFFUSERS_CLASS: (DIFFUSERS_BLOCK_TYPES, DIFFUSERS_TO_OURS),
    TENCENT_CLASS: (TENCENT_BLOCK_TYPES, TENCENT_TO_OURS),
}


def _causal_conv(in_channels: int, out_channels: int, kernel_size: int) -> CausalConv3d:
    """HunyuanVideo's conv: ``kt - 1`` replicated first frames in front, replicate padding in H and W."""
    return CausalConv3d(in_channels, out_channels, kernel_size, time_pad="replicate", space_pad="replicate")


def _resnet(in_channels: int, out_channels: int, num_groups: int, dropout: float) -> ResnetBlock:
    return ResnetBlock(in_channels, out_channels, _causal_conv, num_groups=num_groups, eps=NORM_EPS, dropout=dropout)


def stage_factors(num_blocks: int, spatial_ratio: int, time_ratio: int) -> list[tuple[int, int, int]]:
    """Per-stage ``(t, h, w)`` resampling factors of the encoder (decoder: the same list reversed in order).

    Space is resampled in the first ``log2(spatial_ratio)`` stages, time in the last ``log2(time_ratio)``
    stages before the final one (which never resamples): released (4 blocks, 8, 4) gives
    ``(1,2,2), (2,2,2), (2,2,2), (1,1,1)``.
    """
    num_space, num_time = int(math.log2(spatial_ratio)), int(math.log2(time_ratio))
    if 2**num_space != spatial_ratio or 2**num_time != time_ratio:
        raise ValueError(f"hunyuan_vae: compression ratios must be powers of 2, got {spatial_ratio=} {time_ratio=}")
    if num_space > num_blocks - 1 or num_time > num_blocks - 1:
        raise ValueError(
            f"hunyuan_vae: {num_blocks} blocks allow at most {num_blocks - 1} resampling stages, got "
            f"spatial_compression_ratio={spatial_ratio} and time_compression_ratio={time_ratio}"
        )
    factors = []
    for i in range(num_blocks):
        is_final = i == num_blocks - 1
        space = 2 if i < num_space else 1
        time = 2 if (i >= num_blocks - 1 - num_time and not is_final) else 1
        factors.append((time, space, space))
    return factors


class DownBlock(nn.Module):
    """``layers_per_block`` resnets, then an optional strided causal conv (key ``downsamplers.0``)."""

    def __init__(
        self, in_channels: int, out_channels: int, num_layers: int, stride: tuple[int, int, int], num_groups: int,
        dropout: float,
    ) -> None:
        super().__init__()
        self.resnets = nn.ModuleList(
            _resnet(in_channels if i == 0 else out_channels, out_channels, num_groups, dropout) for i in range(num_layers)
        )
        self.downsamplers = None
        if stride != (1, 1, 1):
            self.downsamplers = nn.ModuleList([CausalDownsample(out_channels, stride=stride)])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for resnet in self.resnets:
            x = run_block(resnet, x)
        if self.downsamplers is not None:
            x = self.downsamplers[0](x)
        return x


class UpBlock(nn.Module):
    """``layers_per_block + 1`` resnets, then an optional causal upsampler (key ``upsamplers.0``)."""

    def __init__(
        self, in_channels: int, out_channels: int, num_layers: int, scale: tuple[int, int, int], num_groups: int,
        dropout: float,
    ) -> None:
        super().__init__()
        self.resnets = nn.ModuleList(
            _resnet(in_channels if i == 0 else out_channels, out_channels, num_groups, dropout) for i in range(num_layers)
        )
        self.upsamplers = None
        if scale != (1, 1, 1):
            self.upsamplers = nn.ModuleList([CausalUpsample(out_channels, scale_factor=scale)])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for resnet in self.resnets:
            x = run_block(resnet, x)
        if self.upsamplers is not None:
            x = self.upsamplers[0](x)
        return x


class MidBlock(nn.Module):
    """resnet -> frame-causal single-head self-attention -> resnet, at the lowest resolution."""

    def __init__(self, channels: int, num_groups: int, dropout: float, add_attention: bool) -> None:
        super().__init__()
        self.resnets = nn.ModuleList(_resnet(channels, channels, num_groups, dropout) for _ in range(2))
        self.attentions = nn.ModuleList(
            [VideoSelfAttention(channels, num_heads=1, num_groups=num_groups, eps=NORM_EPS, causal=True)]
            if add_attention
            else []
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = run_block(self.resnets[0], x)
        for attention in self.attentions:
            x = run_block(attention, x)
        return run_block(self.resnets[1], x)


class HunyuanEncoder(nn.Module):
    """``B in_channels T H W -> B 2*latent_channels t h w`` (before ``quant_conv``)."""

    def __init__(
        self, in_channels: int, latent_channels: int, block_out_channels: Sequence[int], layers_per_block: int,
        num_groups: int, factors: list[tuple[int, int, int]], add_attention: bool, dropout: float,
    ) -> None:
        super().__init__()
        self.conv_in = _causal_conv(in_channels, block_out_channels[0], 3)
        self.down_blocks = nn.ModuleList()
        previous = block_out_channels[0]
        for width, stride in zip(block_out_channels, factors):
            self.down_blocks.append(DownBlock(previous, width, layers_per_block, stride, num_groups, dropout))
            previous = width
        self.mid_block = MidBlock(previous, num_groups, dropout, add_attention)
        self.conv_norm_out = nn.GroupNorm(num_groups, previous, eps=NORM_EPS)
        self.conv_out = _causal_conv(previous, 2 * latent_channels, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.conv_in(x)
        for block in self.down_blocks:
            x = block(x)
        x = self.mid_block(x)
        return norm_silu_conv(self.conv_norm_out, self.conv_out, x)


class HunyuanDecoder(nn.Module):
    """``B latent_channels t h w -> B out_channels T H W`` (after ``post_quant_conv``)."""

    def __init__(
        self, latent_channels: int, out_channels: int, block_out_channels: Sequence[int], layers_per_block: int,
        num_groups: int, factors: list[tuple[int, int, int]], add_attention: bool, dropout: float,
    ) -> None:
        super().__init__()
        widths = list(reversed(block_out_channels))
        self.conv_in = _causal_conv(latent_channels, widths[0], 3)
        self.mid_block = MidBlock(widths[0], num_groups, dropout, add_attention)
        self.up_blocks = nn.ModuleList()
        previous = widths[0]
        for width, scale in zip(widths, factors):
            self.up_blocks.append(UpBlock(previous, width, layers_per_block + 1, scale, num_groups, dropout))
            previous = width
        self.conv_norm_out = nn.GroupNorm(num_groups, previous, eps=NORM_EPS)
        self.conv_out = _causal_conv(previous, out_channels, 3)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        x = self.conv_in(z)
        x = self.mid_block(x)
        for block in self.up_blocks:
            x = block(x)
        return norm_silu_conv(self.conv_norm_out, self.conv_out, x)


@MODELS.register_module("hunyuan_vae")
class HunyuanVAE(PretrainedMixin, VideoAutoencoder):
    """HunyuanVideo causal 3-D VAE (KL), 4x8x8 compression, 16 latent channels when released.

    Pixels ``B 3 T H W`` in [-1, 1] with ``T = 4k + 1`` and ``H, W`` multiples of 8 give latents
    ``B 16 (k+1) H/8 W/8``, returned as ``(z - shift_factor) * scaling_factor``.

    Args:
        in_channels, out_channels: pixel channels.
        latent_channels: latent width (16 released).
        block_out_channels: stage widths (128, 256, 512, 512 released).
        layers_per_block: resnets per encoder stage (decoder stages get one more).
        norm_num_groups: GroupNorm groups everywhere.
        scaling_factor, shift_factor: latent normalisation, ``z = (mean - shift) * scale`` (diffusers' names).
        scale_factor: the name ``scaling_factor`` had in configs written before (read, converted, never written).
        time_compression_ratio, spatial_compression_ratio: 4 and 8 released.
        mid_block_add_attention: keep the frame-causal mid-block attention.
        dropout: dropout inside the resnets.
        act_fn: only ``"silu"`` (the released activation).
        **shared: ``disc_off_grad_ckpt`` and the tiling keys (``layers/tiling.py``); Open-Sora 2.0 runs the
            released model with both tilings on, 256 px, 64 frames (a temporal tile reads 65 frames = 17
            latents), overlap 0.25 (the defaults but for the switches).
    """

    causal = True
    config_class_names = (DIFFUSERS_CLASS, TENCENT_CLASS)
    tiling_defaults = TilingConfig(temporal_tile_size=64)

    def __init__(
        self,
        in_channels: int = 3,
        out_channels: int = 3,
        latent_channels: int = 16,
        block_out_channels: Sequence[int] = (128, 256, 512, 512),
        layers_per_block: int = 2,
        norm_num_groups: int = 32,
        scaling_factor: float = 0.476986,
        shift_factor: float = 0.0,
        time_compression_ratio: int = 4,
        spatial_compression_ratio: int = 8,
        mid_block_add_attention: bool = True,
        dropout: float = 0.0,
        act_fn: str = "silu",
        scale_factor: float | None = None,
        **shared: Unpack[SharedKeys],
    ) -> None:
        super().__init__()
        if act_fn != "silu":
            raise ValueError(f"hunyuan_vae: act_fn={act_fn!r} is not supported; HunyuanVideo uses 'silu'")
        block_out_channels = tuple(block_out_channels)
        # The decoder resamples stage by stage like the encoder: block 0 in space only, then space and time.
        factors = stage_factors(len(block_out_channels), spatial_compression_ratio, time_compression_ratio)
        self.in_channels = in_channels
        self.latent_channels = latent_channels
        self.compression = (time_compression_ratio, spatial_compression_ratio, spatial_compression_ratio)
        self.scaling_factor = float(scaling_factor if scale_factor is None else scale_factor)
        self.shift_factor = float(shift_factor)
        self._drop_old_scale_name()
        self.encoder = HunyuanEncoder(
            in_channels, latent_channels, block_out_channels, layers_per_block, norm_num_groups, factors,
            mid_block_add_attention, dropout,
        )
        self.decoder = HunyuanDecoder(
            latent_channels, out_channels, block_out_channels, layers_per_block, norm_num_groups, factors,
            mid_block_add_attention, dropout,
        )
        # Plain 1x1x1 convs (keys "quant_conv.weight"), not causal convs.
        self.quant_conv = nn.Conv3d(2 * latent_channels, 2 * latent_channels, 1)
        self.post_quant_conv = nn.Conv3d(latent_channels, latent_channels, 1)
        self.init_shared(shared)

    def _drop_old_scale_name(self) -> None:
        """The saved config carries ``scaling_factor`` only, whichever name the caller used."""
        config = getattr(self, "config", None)
        if isinstance(config, dict):
            config.pop("scale_factor", None)
            config["scaling_factor"] = self.scaling_factor

    # ---- interface --------------------------------------------------------------------------------------------
    def encode_moments(self, x: torch.Tensor) -> torch.Tensor:
        """Pixels ``B 3 T H W`` -> posterior parameters ``B 2C t h w`` (mean, then log-variance), tiled as set."""
        self.check_pixels(x)
        return self.tiler.encode(x, lambda clip: self.quant_conv(self.encoder(clip)))

    def decode_latent(self, z: torch.Tensor) -> torch.Tensor:
        """Unscaled latent ``B C t h w`` -> pixels ``B 3 T H W`` (``T = 4(t - 1) + 1``), tiled as set."""
        return self.tiler.decode(z, lambda tile: self.decoder(self.post_quant_conv(tile)))

    def _encode(self, x: torch.Tensor, sample_posterior: bool) -> tuple[torch.Tensor, DiagonalGaussianDistribution]:
        """Pixels ``B 3 T H W`` in [-1, 1] -> ``((z - shift) * scale, posterior)``; z is the mean unless sampled."""
        posterior = DiagonalGaussianDistribution(self.encode_moments(x))
        z = posterior.sample() if sample_posterior else posterior.mode()
        return self.scale_latent(z), posterior

    def _decode(self, z: torch.Tensor, num_frames: int | None) -> torch.Tensor:
        """Scaled latent ``B C t h w`` -> pixels ``B 3 T H W`` (``T = 4(t - 1) + 1``)."""
        return self.decode_latent(self.unscale_latent(z))

    def get_last_layer(self) -> torch.Tensor:
        return self.decoder.conv_out.conv.weight

    # ---- checkpoints ------------------------------------------------------------------------------------------
    @classmethod
    def convert_state_dict(cls, state_dict: StateDict) -> StateDict:
        """Take the ``vae.*`` entries of a Tencent ``pytorch_model.pt`` (prefix stripped); others pass as is."""
        if any(key.startswith(TENCENT_PREFIX) for key in state_dict):
            return {k[len(TENCENT_PREFIX) :]: v for k, v in state_dict.items() if k.startswith(TENCENT_PREFIX)}
        return state_dict

    @classmethod
    def config_from_pretrained_dir(cls, folder: str | os.PathLike) -> dict[str, Any]:
        """Constructor kwargs of a toolkit folder, or of a diffusers ``AutoencoderKLHunyuanVideo`` folder."""
        config = read_folder_config(folder)
        if config is None:
            return {}
        if config.get("_class_name") not in FOREIGN_LAYOUTS:
            return super().config_from_pretrained_dir(folder)
        return _config_from_diffusers(config, Path(folder) / CONFIG_FILE_NAME)

    def save_pretrained(self, folder: str | os.PathLike, format: str = "toolkit") -> Path:
        """Write ``folder`` as a toolkit folder (``config.json`` + ``model.safetensors``) or, with
        ``format="diffusers"``, as a folder that ``diffusers.AutoencoderKLHunyuanVideo.from_pretrained`` loads
        (``config.json`` + ``diffusion_pytorch_model.safetensors``; the key names are the same)."""
        if format == "toolkit":
            return super().save_pretrained(folder)
        if format != "diffusers":
            raise ValueError(f"hunyuan_vae.save_pretrained: format={format!r}; use 'toolkit' or 'diffusers'")
        folder = Path(folder)
        config = self._diffusers_config()
        save_state_dict_file(self.state_dict(), folder / DIFFUSERS_WEIGHTS)
        atomic_write(folder / CONFIG_FILE_NAME, lambda tmp: Path(tmp).write_text(json.dumps(config, indent=2) + "\n"))
        return folder

    def _diffusers_config(self) -> dict[str, Any]:
        if self.shift_factor != 0 or any(isinstance(m, nn.Dropout) and m.p > 0 for m in self.modules()):
            raise ValueError(
                "hunyuan_vae.save_pretrained(format='diffusers'): diffusers' AutoencoderKLHunyuanVideo has no "
                "shift_factor or dropout; save with format='toolkit' instead"
            )
        encoder_blocks = self.encoder.down_blocks
        ct, cs, _ = self.compression
        return {
            "_class_name": DIFFUSERS_CLASS,
            "_diffusers_version": _diffusers_version(),
            "in_channels": self.encoder.conv_in.conv.in_channels,
            "out_channels": self.decoder.conv_out.conv.out_channels,
            "latent_channels": self.latent_channels,
            "down_block_types": [DIFFUSERS_BLOCK_TYPES["down_block_types"]] * len(encoder_blocks),
            "up_block_types": [DIFFUSERS_BLOCK_TYPES["up_block_types"]] * len(encoder_blocks),
            "block_out_channels": [block.resnets[0].conv1.conv.out_channels for block in encoder_blocks],
            "layers_per_block": len(encoder_blocks[0].resnets),
            "act_fn": "silu",
            "norm_num_groups": self.encoder.conv_norm_out.num_groups,
            "scaling_factor": self.scaling_factor,
            "spatial_compression_ratio": cs,
            "temporal_compression_ratio": ct,
            "mid_block_add_attention": len(self.encoder.mid_block.attentions) > 0,
        }


def _config_from_diffusers(config: dict[str, Any], path: Path) -> dict[str, Any]:
    """Map a diffusers ``AutoencoderKLHunyuanVideo`` or Tencent ``AutoencoderKLCausal3D`` config onto kwargs."""
    class_name = config["_class_name"]
    block_types, renames = FOREIGN_LAYOUTS[class_name]
    for key, block_type in block_types.items():
        unsupported = sorted(set(config.pop(key, [block_type])) - {block_type})
        if unsupported:
            raise CheckpointError(f"{path}: {key} {unsupported} are not supported; only {block_type!r}")
    kwargs = {renames.get(k, k): v for k, v in config.items() if not k.startswith("_")}
    known = set(HunyuanVAE.config_keys())
    unknown = sorted(set(kwargs) - known)
    if unknown:
        raise CheckpointError(f"{path}: unknown {class_name} config keys {unknown}; known: {sorted(known)}")
    return kwargs


def _diffusers_version() -> str:
    try:
        return version("diffusers")
    except PackageNotFoundError:  # the field is informational; AutoencoderKLHunyuanVideo exists since 0.32.0
        return "0.32.0"
