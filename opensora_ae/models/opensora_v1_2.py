"""Open-Sora 1.2 video VAE: a frame-wise 2-D VAE followed by a causal temporal VAE.

Pipeline (``B C T H W`` layouts, pixels in [-1, 1]):

    x --spatial VAE (SDXL AutoencoderKL, per frame)--> x_z = posterior * 0.18215      B 4 T H/8 W/8
      --temporal VAE (MAGVIT-v2 style, 4x in time)--> temporal posterior             B 4 ceil(T/4) H/8 W/8
      --(z - shift) / scale--> z (what the Open-Sora 1.2 diffusion model consumes)

and back: ``z * scale + shift`` -> temporal decoder (drops the front padding computed from ``num_frames``)
-> ``x_z_rec`` -> spatial decoder of ``x_z_rec / 0.18215`` per frame -> ``x_rec``.

With ``micro_frame_size=17`` (the released setting) the spatial latents are cut into 17-frame chunks that the
temporal VAE encodes independently (5 latents each, no overlap), and decoding cuts the latents into 5-latent
chunks; this reproduces the latents the Open-Sora 1.2 diffusion model was trained on.

State-dict keys follow the ``hpcai-tech/OpenSora-VAE-v1.2`` release: ``spatial_vae.module.*`` (diffusers
``AutoencoderKL`` names), ``temporal_vae.{encoder,decoder,quant_conv,post_quant_conv}.*``, ``scale``, ``shift``.
"""

from __future__ import annotations

import inspect
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence, Unpack

import torch
import torch.nn.functional as F
from einops import rearrange
from torch import nn

from ..registry import MODELS
from .base import SharedKeys, VideoAutoencoder
from .checkpoint_io import CONFIG_FILE_NAME, PretrainedMixin, load_weights, read_folder_config
from .config_io import read_config_json
from .layers.checkpointing import run_block
from .layers.conv import CausalConv3d
from .layers.per_frame import batch_to_frames, frames_to_batch
from .layers.posterior import DiagonalGaussianDistribution
from .layers.resnet import ResnetBlock

# The SDXL VAE config of PixArt-alpha/pixart_sigma_sdxlvae_T5_diffusers (subfolder vae), the released 2-D VAE.
SDXL_VAE_CONFIG: dict[str, Any] = dict(
    in_channels=3,
    out_channels=3,
    down_block_types=["DownEncoderBlock2D"] * 4,
    up_block_types=["UpDecoderBlock2D"] * 4,
    block_out_channels=[128, 256, 512, 512],
    layers_per_block=2,
    act_fn="silu",
    latent_channels=4,
    norm_num_groups=32,
    sample_size=1024,
    scaling_factor=0.13025,
    force_upcast=True,
)

# VAE_Temporal_SD of the release (Open-Sora's VAE_Temporal argument names).
RELEASED_TEMPORAL_CONFIG: dict[str, Any] = dict(
    in_out_channels=4,
    latent_embed_dim=4,
    embed_dim=4,
    filters=128,
    num_res_blocks=4,
    channel_multipliers=[1, 2, 2, 4],
    temporal_downsample=[False, True, True],
    num_groups=32,
    activation_fn="swish",
)

# Per-channel latent statistics of the release: z = (temporal_latent - shift) / scale.
RELEASED_SHIFT = (-0.10, 0.34, 0.27, 0.98)
RELEASED_SCALE = (3.85, 2.32, 2.33, 3.06)

# Open-Sora 1.2 multiplies the SDXL VAE latent by the SD1.5 constant, not the SDXL config's 0.13025; the
# temporal VAE was trained on latents scaled this way.
SPATIAL_SCALING_FACTOR = 0.18215


def _merge_config(defaults: Mapping[str, Any], overrides: Mapping[str, Any] | None, what: str) -> dict[str, Any]:
    """``defaults`` updated by ``overrides``; unknown keys are a one-line error naming ``what``."""
    overrides = dict(overrides or {})
    unknown = sorted(set(overrides) - set(defaults))
    if unknown:
        raise ValueError(f"{what}: unknown keys {unknown}; known keys: {sorted(defaults)}")
    return {**defaults, **overrides}


class ResBlockStack(nn.ModuleList):
    """Res blocks applied in order (keys ``<i>.*`` like the release's ``nn.ModuleList``), each a checkpointing
    unit (``run_block``). Being a module with a ``forward`` lets FSDP2 shard a stack as one unit."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for block in self:
            x = run_block(block, x)
        return x


def time_depth_to_space(x: torch.Tensor, factor: int) -> torch.Tensor:
    """``B (C factor) T H W -> B C (T factor) H W``: channel ``c * factor + s`` becomes sub-frame ``s`` of ``c``."""
    if factor == 1:
        return x
    return rearrange(x, "b (c s) t h w -> b c (t s) h w", s=factor)


@dataclass(frozen=True)
class TemporalLevels:
    """What the temporal encoder and decoder share: channel widths per level, where time is down/up-sampled,
    and the factories of the causal conv (``conv(cin, cout, kernel, stride=1, bias=True)``) and res block."""

    in_out_channels: int
    filters: int
    num_res_blocks: int
    channel_multipliers: Sequence[int]
    temporal_downsample: Sequence[bool]
    resblock: Callable[[int, int], nn.Module]
    conv: Callable[..., nn.Module]
    num_groups: int


class TemporalEncoder(nn.Module):
    """Causal temporal encoder: ``B C T h w -> B 2*latent T/f h w`` (``f`` = 2 per downsampling level).

    ``conv_in`` (bias-free) -> per level ``num_res_blocks`` res blocks then a stride-(2,1,1) causal conv where
    ``temporal_downsample`` is set (an ``nn.Identity`` otherwise, so the ``conv_blocks`` indices match the
    release) -> ``num_res_blocks`` res blocks -> GroupNorm -> SiLU -> 1x1x1 conv.
    """

    def __init__(self, levels: TemporalLevels, latent_channels: int) -> None:
        super().__init__()
        conv, resblock = levels.conv, levels.resblock
        self.conv_in = conv(levels.in_out_channels, levels.filters, 3, bias=False)
        self.block_res_blocks = nn.ModuleList()
        self.conv_blocks = nn.ModuleList()
        channels = levels.filters
        for level, multiplier in enumerate(levels.channel_multipliers):
            width = levels.filters * multiplier
            blocks = ResBlockStack()
            for _ in range(levels.num_res_blocks):
                blocks.append(resblock(channels, width))
                channels = width
            self.block_res_blocks.append(blocks)
            if level < len(levels.channel_multipliers) - 1:
                if levels.temporal_downsample[level]:
                    self.conv_blocks.append(conv(channels, width, 3, stride=(2, 1, 1)))
                else:
                    self.conv_blocks.append(nn.Identity())
        self.res_blocks = ResBlockStack([resblock(channels, channels) for _ in range(levels.num_res_blocks)])
        self.norm1 = nn.GroupNorm(levels.num_groups, channels)
        self.conv2 = conv(channels, latent_channels, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.conv_in(x)
        for level, blocks in enumerate(self.block_res_blocks):
            x = blocks(x)
            if level < len(self.conv_blocks):
                x = self.conv_blocks[level](x)
        x = self.res_blocks(x)
        return self.conv2(F.silu(self.norm1(x)))


class TemporalDecoder(nn.Module):
    """Causal temporal decoder: ``B latent t h w -> B C t*f h w``.

    ``conv1`` -> ``num_res_blocks`` res blocks -> per level (deepest first) res blocks then, where the encoder
    downsampled, a causal 3x3x3 conv ``C -> 2C`` followed by depth-to-space in time (channel order: channel, then
    sub-frame fastest) -> GroupNorm -> SiLU -> ``conv_out``.
    """

    def __init__(self, levels: TemporalLevels, latent_channels: int) -> None:
        super().__init__()
        conv, resblock = levels.conv, levels.resblock
        num_levels = len(levels.channel_multipliers)
        # time_factors[i] upsamples after level i + 1 (mirror of the encoder's conv_blocks[i]).
        self.time_factors = [2 if levels.temporal_downsample[i] else 1 for i in range(num_levels - 1)]
        channels = levels.filters * levels.channel_multipliers[-1]
        self.conv1 = conv(latent_channels, channels, 3)
        self.res_blocks = ResBlockStack([resblock(channels, channels) for _ in range(levels.num_res_blocks)])
        block_res_blocks = [ResBlockStack() for _ in range(num_levels)]
        conv_blocks: list[nn.Module] = [nn.Identity() for _ in range(num_levels - 1)]
        for level in reversed(range(num_levels)):
            width = levels.filters * levels.channel_multipliers[level]
            for _ in range(levels.num_res_blocks):
                block_res_blocks[level].append(resblock(channels, width))
                channels = width
            if level > 0 and levels.temporal_downsample[level - 1]:
                conv_blocks[level - 1] = conv(channels, channels * self.time_factors[level - 1], 3)
        self.block_res_blocks = nn.ModuleList(block_res_blocks)
        self.conv_blocks = nn.ModuleList(conv_blocks)
        self.norm1 = nn.GroupNorm(levels.num_groups, channels)
        self.conv_out = conv(channels, levels.in_out_channels, 3)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        x = self.conv1(z)
        x = self.res_blocks(x)
        for level in reversed(range(len(self.block_res_blocks))):
            x = self.block_res_blocks[level](x)
            if level > 0:
                x = time_depth_to_space(self.conv_blocks[level - 1](x), self.time_factors[level - 1])
        return self.conv_out(F.silu(self.norm1(x)))


class TemporalVAE(nn.Module):
    """The Open-Sora 1.2 temporal VAE (``VAE_Temporal``): KL autoencoder over time only.

    Input ``B in_out_channels T h w`` (spatial latents); ``encode`` zero-pads the FRONT of time to a multiple of the
    time factor ``f`` and returns the posterior over ``B embed_dim ceil(T/f) h w``; ``decode(z, num_frames)``
    removes the same padding. Causal convs pad time at the front with zeros; res-block convs have no bias.
    """

    def __init__(
        self,
        in_out_channels: int = 4,
        latent_embed_dim: int = 4,
        embed_dim: int = 4,
        filters: int = 128,
        num_res_blocks: int = 4,
        channel_multipliers: Sequence[int] = (1, 2, 2, 4),
        temporal_downsample: Sequence[bool] = (False, True, True),
        num_groups: int = 32,
        activation_fn: str = "swish",
    ) -> None:
        super().__init__()
        if activation_fn != "swish":
            raise ValueError(f"vae_temporal.activation_fn={activation_fn!r}: only 'swish' (SiLU) is supported")
        if len(temporal_downsample) != len(channel_multipliers) - 1:
            raise ValueError(
                f"vae_temporal.temporal_downsample needs {len(channel_multipliers) - 1} entries "
                f"(one per level transition of channel_multipliers={list(channel_multipliers)}), "
                f"got {list(temporal_downsample)}"
            )
        self.time_factor = 2 ** sum(bool(flag) for flag in temporal_downsample)

        def conv(cin: int, cout: int, kernel: int, stride: Any = 1, bias: bool = True) -> CausalConv3d:
            return CausalConv3d(cin, cout, kernel, stride=stride, bias=bias, time_pad="zeros")

        def resblock(cin: int, cout: int) -> ResnetBlock:
            # MAGVIT-v2 res block: bias-free convs, GroupNorm with PyTorch's default eps, 1x1x1 skip "conv3".
            return ResnetBlock(
                cin, cout, lambda i, o, k: conv(i, o, k, bias=False), num_groups, eps=1e-5, shortcut_name="conv3"
            )

        levels = TemporalLevels(
            in_out_channels, filters, num_res_blocks, channel_multipliers, temporal_downsample, resblock, conv, num_groups
        )
        self.encoder = TemporalEncoder(levels, latent_channels=2 * latent_embed_dim)
        self.quant_conv = conv(2 * latent_embed_dim, 2 * embed_dim, 1)
        self.post_quant_conv = conv(embed_dim, latent_embed_dim, 1)
        self.decoder = TemporalDecoder(levels, latent_channels=latent_embed_dim)

    def front_padding(self, num_frames: int) -> int:
        """Zero frames prepended to ``num_frames`` frames to reach a multiple of the time factor."""
        return (self.time_factor - num_frames % self.time_factor) % self.time_factor

    def latent_frames(self, num_frames: int) -> int:
        return math.ceil(num_frames / self.time_factor)

    def encode(self, x: torch.Tensor) -> DiagonalGaussianDistribution:
        """``B C T h w`` -> posterior over ``B embed_dim ceil(T/f) h w``."""
        x = F.pad(x, (0, 0, 0, 0, self.front_padding(x.shape[2]), 0))
        moments = self.quant_conv(self.encoder(x)).to(x.dtype)
        return DiagonalGaussianDistribution(moments)

    def decode(self, z: torch.Tensor, num_frames: int) -> torch.Tensor:
        """``B embed_dim t h w`` -> ``B C num_frames h w`` (the front padding of ``encode`` is dropped)."""
        x = self.decoder(self.post_quant_conv(z))
        return x[:, :, self.front_padding(num_frames) :]


class SpatialVAE(nn.Module):
    """Frame-wise 2-D VAE: a diffusers ``AutoencoderKL`` at ``.module`` applied to ``B C T H W`` clips.

    Frames are processed in micro-batches of ``micro_batch_size`` frames (memory only, no numerical effect).
    Latents are ``posterior * scaling_factor`` with ``scaling_factor = 0.18215`` for Open-Sora 1.2.
    """

    def __init__(self, config: Mapping[str, Any], micro_batch_size: int | None, scaling_factor: float) -> None:
        super().__init__()
        from diffusers import AutoencoderKL

        self.module = AutoencoderKL(**config)
        self.micro_batch_size = micro_batch_size
        self.scaling_factor = scaling_factor
        self.downsample_factor = 2 ** (len(config["block_out_channels"]) - 1)

    def _per_frame(self, fn: Callable[[torch.Tensor], torch.Tensor], x: torch.Tensor) -> torch.Tensor:
        frames = frames_to_batch(x)
        step = self.micro_batch_size or frames.shape[0]
        return batch_to_frames(torch.cat([fn(chunk) for chunk in frames.split(step)], dim=0), x.shape[2])

    def encode_distribution(self, x: torch.Tensor) -> DiagonalGaussianDistribution:
        """Pixels ``B 3 T H W`` -> per-frame posterior over ``B 4 T H/8 W/8`` (unscaled)."""
        return DiagonalGaussianDistribution(self._per_frame(lambda f: self.module.encode(f).latent_dist.parameters, x))

    def decode(self, x_z: torch.Tensor) -> torch.Tensor:
        """Scaled latents ``B 4 T h w`` -> pixels ``B 3 T 8h 8w``."""
        return self._per_frame(lambda f: self.module.decode(f / self.scaling_factor).sample, x_z)


def _channel_buffer(value: float | Sequence[float], channels: int, name: str) -> torch.Tensor:
    tensor = torch.as_tensor(value, dtype=torch.float32).flatten()
    if tensor.numel() == 1:
        tensor = tensor.expand(channels)
    if tensor.numel() != channels:
        raise ValueError(f"{name} needs 1 or {channels} values (one per latent channel), got {tensor.numel()}")
    return tensor.reshape(1, channels, 1, 1, 1).clone()


@MODELS.register_module("opensora_v1_2_vae")
class OpenSoraVAEV12(PretrainedMixin, VideoAutoencoder):
    """Open-Sora 1.2 VAE pipeline (``OpenSoraVAE_V1_2``): spatial SDXL VAE + temporal VAE + latent normalisation.

    Args:
        vae_2d: diffusers ``AutoencoderKL`` config overrides on top of the SDXL VAE config (or on top of the
            ``config.json`` of ``vae_2d_pretrained``).
        vae_2d_pretrained: local diffusers ``AutoencoderKL`` folder (``config.json`` + weights, or a ``vae/``
            subfolder) or weights file for the spatial VAE alone; leave None when the pipeline checkpoint is loaded.
        vae_temporal: temporal VAE hyper-parameters (Open-Sora ``VAE_Temporal`` names) on top of the released ones.
        micro_batch_size: frames per 2-D VAE call (None: all frames at once).
        micro_frame_size: frames per independent temporal chunk (17 in the release; None: whole clip).
        spatial_scaling_factor: multiplier of the 2-D VAE latent (0.18215 in the release).
        shift, scale: per-channel latent normalisation, ``z = (temporal_latent - shift) / scale``.
        freeze_vae_2d: stop gradients to the 2-D VAE's parameters (training stage 1).
        freeze_vae_2d_decoder: stop gradients to the 2-D VAE's decoder side (``post_quant_conv`` + ``decoder``):
            training stage 2, whose latent-only losses never reach it (as in the release); frozen, DDP does not
            wait for gradients that never come.
        vae_2d_random_init: allow building a frozen 2-D VAE without weights (``freeze_vae_2d`` and neither
            ``vae_2d_pretrained`` nor ``from_pretrained``), which ``build_model`` refuses otherwise: a temporal VAE
            trained on a random frozen SDXL VAE is only ever a test.
        **shared: ``disc_off_grad_ckpt`` (the pipeline has no tiled inference: no tiling keys).

    Latent scaling: ``shift_factor`` is ``shift`` and ``scaling_factor`` is ``1 / scale`` (per channel), so
    ``z = (temporal_latent - shift_factor) * scaling_factor`` as in the other families.
    """

    latent_channels = 4
    causal = True
    config_class_names = ("VideoAutoencoderPipeline",)  # the released folder's transformers model_type
    tiling_defaults = None

    def __init__(
        self,
        vae_2d: Mapping[str, Any] | None = None,
        vae_2d_pretrained: str | None = None,
        vae_temporal: Mapping[str, Any] | None = None,
        micro_batch_size: int | None = 4,
        micro_frame_size: int | None = 17,
        spatial_scaling_factor: float = SPATIAL_SCALING_FACTOR,
        shift: float | Sequence[float] = RELEASED_SHIFT,
        scale: float | Sequence[float] = RELEASED_SCALE,
        freeze_vae_2d: bool = False,
        freeze_vae_2d_decoder: bool = False,
        vae_2d_random_init: bool = False,
        **shared: Unpack[SharedKeys],
    ) -> None:
        super().__init__()
        spatial_config = _spatial_config(vae_2d, vae_2d_pretrained)
        temporal_config = _merge_config(RELEASED_TEMPORAL_CONFIG, vae_temporal, "vae_temporal")
        if spatial_config["latent_channels"] != temporal_config["in_out_channels"]:
            raise ValueError(
                f"vae_2d.latent_channels={spatial_config['latent_channels']} must equal "
                f"vae_temporal.in_out_channels={temporal_config['in_out_channels']}"
            )
        if micro_frame_size is not None and micro_frame_size < 1:
            raise ValueError(f"micro_frame_size must be a positive frame count or None, got {micro_frame_size}")
        self.spatial_vae = SpatialVAE(spatial_config, micro_batch_size, spatial_scaling_factor)
        self.temporal_vae = TemporalVAE(**temporal_config)
        self.micro_frame_size = micro_frame_size
        self.in_channels = spatial_config["in_channels"]
        self.latent_channels = temporal_config["embed_dim"]
        spatial_factor = self.spatial_vae.downsample_factor
        self.compression = (self.temporal_vae.time_factor, spatial_factor, spatial_factor)
        self.register_buffer("scale", _channel_buffer(scale, self.latent_channels, "scale"))
        self.register_buffer("shift", _channel_buffer(shift, self.latent_channels, "shift"))
        self.init_shared(shared)
        if vae_2d_pretrained:
            load_weights(self.spatial_vae.module, _diffusers_folder(vae_2d_pretrained), strict=True)
            # The saved config must rebuild this model without the 2-D folder: its weights live in ours.
            self.register_to_config(vae_2d=spatial_config, vae_2d_pretrained=None)
        if freeze_vae_2d:
            self.spatial_vae.requires_grad_(False)
        if freeze_vae_2d_decoder:
            for name, parameter in self.spatial_vae.module.named_parameters():
                if name.startswith(("post_quant_conv.", "decoder.")):
                    parameter.requires_grad_(False)

    # ---- the two stages -----------------------------------------------------------------------------------
    def encode_spatial(self, x: torch.Tensor, sample_posterior: bool = False) -> torch.Tensor:
        """Pixels ``B 3 T H W`` in [-1, 1] -> spatial latent ``x_z`` = 2-D posterior sample (or mode) * 0.18215."""
        self.check_pixels(x)
        posterior = self.spatial_vae.encode_distribution(x)
        latent = posterior.sample() if sample_posterior else posterior.mode()
        return latent * self.spatial_vae.scaling_factor

    def decode_spatial(self, x_z: torch.Tensor) -> torch.Tensor:
        """Spatial latent ``B 4 T h w`` (scaled by 0.18215) -> pixels ``B 3 T 8h 8w`` (frame-wise 2-D decode)."""
        return self.spatial_vae.decode(x_z)

    def encode_temporal(self, x_z: torch.Tensor) -> DiagonalGaussianDistribution:
        """Spatial latent ``B 4 T h w`` -> temporal posterior over ``B 4 t h w`` (un-normalised), chunked in
        ``micro_frame_size`` frames; the chunk posteriors are concatenated along time."""
        chunks = [x_z] if self.micro_frame_size is None else x_z.split(self.micro_frame_size, dim=2)
        moments = [self.temporal_vae.encode(chunk).parameters for chunk in chunks]
        return DiagonalGaussianDistribution(torch.cat(moments, dim=2))

    def decode_temporal(self, z: torch.Tensor, num_frames: int) -> torch.Tensor:
        """Un-normalised temporal latent ``B 4 t h w`` -> spatial latent ``B 4 num_frames h w``."""
        self._check_latent_frames(z, num_frames)
        if self.micro_frame_size is None:
            return self.temporal_vae.decode(z, num_frames)
        chunk_latents = self.temporal_vae.latent_frames(self.micro_frame_size)
        chunks, remaining = [], num_frames
        for z_chunk in z.split(chunk_latents, dim=2):
            chunks.append(self.temporal_vae.decode(z_chunk, min(self.micro_frame_size, remaining)))
            remaining -= self.micro_frame_size
        return torch.cat(chunks, dim=2)

    def normalize(self, z: torch.Tensor) -> torch.Tensor:
        """Temporal latent -> diffusion latent: ``(z - shift) / scale``."""
        return (z - self.shift.to(z.dtype)) / self.scale.to(z.dtype)

    def denormalize(self, z: torch.Tensor) -> torch.Tensor:
        """Diffusion latent -> temporal latent: ``z * scale + shift``."""
        return z * self.scale.to(z.dtype) + self.shift.to(z.dtype)

    @classmethod
    def check_random_init(cls, kwargs: Mapping[str, Any]) -> None:
        """Refuse a frozen 2-D VAE without weights when built from scratch (``build_model`` without
        ``from_pretrained``), unless ``vae_2d_random_init=True``."""
        if kwargs.get("freeze_vae_2d") and not kwargs.get("vae_2d_pretrained") and not kwargs.get("vae_2d_random_init"):
            raise ValueError(
                "opensora_v1_2_vae: freeze_vae_2d=True without weights would train the temporal VAE on a random "
                "frozen SDXL VAE; pass --model.vae_2d_pretrained PATH/TO/sdxl_vae (or --model.from_pretrained "
                "a pipeline checkpoint), or --model.vae_2d_random_init true for a test"
            )

    @property
    def scaling_factor(self) -> torch.Tensor:  # type: ignore[override]
        """``1 / scale`` per channel (``1 C 1 1 1``)."""
        return 1 / self.scale

    @property
    def shift_factor(self) -> torch.Tensor:  # type: ignore[override]
        """``shift`` per channel (``1 C 1 1 1``)."""
        return self.shift

    # ---- VideoAutoencoder interface -------------------------------------------------------------------------
    def valid_num_frames(self, num_frames: int) -> bool:
        """Any frame count: each temporal chunk is front-padded to a multiple of 4 and cropped back."""
        return num_frames >= 1

    def frame_rule(self) -> str:
        return "T >= 1"

    def _encode(self, x: torch.Tensor, sample_posterior: bool) -> tuple[torch.Tensor, DiagonalGaussianDistribution]:
        """Pixels ``B 3 T H W`` -> (normalised latent ``B 4 t H/8 W/8``, temporal posterior before normalisation).

        ``sample_posterior`` samples both posteriors (the release's behaviour); False uses both modes.
        """
        posterior = self.encode_temporal(self.encode_spatial(x, sample_posterior))
        z = posterior.sample() if sample_posterior else posterior.mode()
        return self.normalize(z), posterior

    def _decode(self, z: torch.Tensor, num_frames: int | None) -> torch.Tensor:
        """Normalised latent ``B 4 t h w`` -> pixels ``B 3 num_frames 8h 8w``.

        ``num_frames`` (the encoded clip's frame count) is required: it fixes how many front-padding frames
        each temporal chunk drops.
        """
        if num_frames is None:
            raise ValueError(
                "OpenSoraVAEV12.decode needs num_frames (the frame count of the encoded clip, e.g. 17): the temporal "
                "VAE front-pads every chunk to a multiple of 4 frames and only num_frames says how much to drop"
            )
        return self.decode_spatial(self.decode_temporal(self.denormalize(z), num_frames))

    def forward_stages(
        self,
        x: torch.Tensor,
        sample_posterior: bool = True,
        decode_pixels: bool = True,
        pixel_grad: bool = True,
        decode_spatial_only: bool = False,
    ) -> dict[str, Any]:
        """Run the whole pipeline on pixels ``B 3 T H W`` and return every intermediate.

        Keys: ``x_z`` spatial latent (``B 4 T h w``, scaled by 0.18215); ``posterior`` temporal posterior;
        ``z_raw`` temporal latent before normalisation (what the identity loss compares with ``x_z``);
        ``z`` normalised latent; ``x_z_rec`` temporal reconstruction of ``x_z``; ``x_rec`` pixels decoded from
        ``x_z_rec`` (None when ``decode_pixels`` is False; decoded without a graph when ``pixel_grad`` is False, which
        is what latent-only losses (training stages 1 and 2) want: ``x_rec`` is then only logged); ``x_rec_spatial``
        pixels decoded from ``x_z`` by the 2-D VAE alone (only when ``decode_spatial_only``, else None).
        """
        x_z = self.encode_spatial(x, sample_posterior)
        posterior = self.encode_temporal(x_z)
        z_raw = posterior.sample() if sample_posterior else posterior.mode()
        x_z_rec = self.decode_temporal(z_raw, x.shape[2])
        return dict(
            x_z=x_z,
            posterior=posterior,
            z_raw=z_raw,
            z=self.normalize(z_raw),
            x_z_rec=x_z_rec,
            x_rec=self._decode_pixels(x_z_rec, pixel_grad) if decode_pixels else None,
            x_rec_spatial=self.decode_spatial(x_z) if decode_spatial_only else None,
        )

    def _decode_pixels(self, x_z_rec: torch.Tensor, pixel_grad: bool) -> torch.Tensor:
        with torch.set_grad_enabled(pixel_grad and torch.is_grad_enabled()):
            return self.decode_spatial(x_z_rec)

    def forward(
        self, x: torch.Tensor, sample_posterior: bool = True, return_stages: bool = False, pixel_grad: bool = True
    ) -> tuple[torch.Tensor, DiagonalGaussianDistribution, torch.Tensor] | dict[str, Any]:
        """Reconstruct pixels ``B 3 T H W``; returns ``(x_rec, temporal posterior, normalised z)``, or with
        ``return_stages`` the dict of :meth:`forward_stages` (the training loop's ``forward_kwargs`` for the
        Open-Sora 1.2 latent losses, usually with ``pixel_grad=False``)."""
        stages = self.forward_stages(x, sample_posterior, pixel_grad=pixel_grad)
        if return_stages:
            return stages
        return stages["x_rec"], stages["posterior"], stages["z"]

    @torch.no_grad()
    def reconstruct(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        """Deterministic inference outputs: ``latent`` (normalised z), ``recn`` (full pipeline) and ``spatial``
        (the 2-D VAE alone, frame by frame), pixels ``B 3 T H W``."""
        stages = self.forward_stages(x, sample_posterior=False, decode_spatial_only=True)
        return {"latent": stages["z"], "recn": stages["x_rec"], "spatial": stages["x_rec_spatial"]}

    def get_latent_size(self, num_frames: int, height: int, width: int) -> tuple[int, int, int]:
        """Latent ``(t, h, w)``: each ``micro_frame_size`` chunk of ``n`` frames gives ``ceil(n / 4)`` latents."""
        _, ch, cw = self.compression
        if self.micro_frame_size is None:
            frames = self.temporal_vae.latent_frames(num_frames)
        else:
            full, rest = divmod(num_frames, self.micro_frame_size)
            frames = full * self.temporal_vae.latent_frames(self.micro_frame_size) + self.temporal_vae.latent_frames(rest)
        return frames, height // ch, width // cw

    def get_last_layer(self) -> torch.Tensor:
        """The temporal decoder's output conv weight (Open-Sora 1.2's ``get_temporal_last_layer``)."""
        return self.temporal_vae.decoder.conv_out.conv.weight

    def set_gradient_checkpointing(self, enabled: bool = True) -> None:
        """Checkpoint the temporal res blocks and, through diffusers' own switch, the 2-D VAE's blocks."""
        super().set_gradient_checkpointing(enabled)
        if enabled:
            self.spatial_vae.module.enable_gradient_checkpointing()
        else:
            self.spatial_vae.module.disable_gradient_checkpointing()

    def _check_latent_frames(self, z: torch.Tensor, num_frames: int) -> None:
        expected = self.get_latent_size(num_frames, 0, 0)[0]
        if z.shape[2] != expected:
            raise ValueError(
                f"OpenSoraVAEV12.decode: num_frames={num_frames} corresponds to {expected} latent frames "
                f"(micro_frame_size={self.micro_frame_size}) but z has {z.shape[2]}; pass the encoded clip's frame count"
            )

    # ---- checkpoint folders -----------------------------------------------------------------------------------
    @classmethod
    def config_from_pretrained_dir(cls, folder: str | Path) -> dict[str, Any]:
        """Constructor kwargs of a model folder: ours (``save_pretrained``) or the released
        ``hpcai-tech/OpenSora-VAE-v1.2`` one (a transformers ``VideoAutoencoderPipeline`` config)."""
        path = Path(folder) / CONFIG_FILE_NAME
        config = read_folder_config(folder)
        if config is None or config.get("model_type") != "VideoAutoencoderPipeline":
            return super().config_from_pretrained_dir(folder)
        kwargs: dict[str, Any] = {
            key: config[key] for key in ("micro_frame_size", "shift", "scale", "freeze_vae_2d") if key in config
        }
        micro_batch_size = (config.get("vae_2d") or {}).get("micro_batch_size")
        if micro_batch_size is not None:
            kwargs["micro_batch_size"] = micro_batch_size
        temporal_type = (config.get("vae_temporal") or {}).get("type", "VAE_Temporal_SD")
        if temporal_type != "VAE_Temporal_SD":
            raise ValueError(f"{path}: vae_temporal type {temporal_type!r} is not the released VAE_Temporal_SD")
        return kwargs


def _diffusers_folder(path: str | Path) -> Path:
    """A diffusers ``AutoencoderKL`` folder, or its ``vae/`` subfolder (pipeline layout), or a weights file."""
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"vae_2d_pretrained={str(path)!r} does not exist")
    if path.is_dir() and not (path / CONFIG_FILE_NAME).is_file() and (path / "vae" / CONFIG_FILE_NAME).is_file():
        return path / "vae"
    return path


def _spatial_config(vae_2d: Mapping[str, Any] | None, vae_2d_pretrained: str | None) -> dict[str, Any]:
    """``AutoencoderKL`` kwargs: SDXL VAE config, then the ``config.json`` of ``vae_2d_pretrained``, then ``vae_2d``."""
    from diffusers import AutoencoderKL

    known = set(inspect.signature(AutoencoderKL.__init__).parameters) - {"self"}
    config = dict(SDXL_VAE_CONFIG)
    if vae_2d_pretrained:
        folder = _diffusers_folder(vae_2d_pretrained)
        if folder.is_dir():
            config_path = folder / CONFIG_FILE_NAME
            if not config_path.is_file():
                raise FileNotFoundError(
                    f"vae_2d_pretrained={str(vae_2d_pretrained)!r}: no {CONFIG_FILE_NAME} (expected a diffusers "
                    f"AutoencoderKL folder)"
                )
            # diffusers metadata (_class_name, _diffusers_version, ...) is not a constructor argument.
            config.update({k: v for k, v in read_config_json(config_path).items() if k in known})
    unknown = sorted(set(vae_2d or {}) - known)
    if unknown:
        raise ValueError(f"vae_2d: unknown AutoencoderKL keys {unknown}; known keys: {sorted(known)}")
    return {**config, **dict(vae_2d or {})}
