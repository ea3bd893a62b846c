"""Open-Sora-Plan CausalVideoVAE (``type="causal_vae"``), built from the release's ``config.json``.

The release describes the network by block names (``encoder_resnet_blocks``, ``decoder_temporal_upsample``,
...; see ``causal_vae_blocks.py``) on an LDM layout: ``conv_in``, levels ``down.i`` / ``up.i`` of
``num_res_blocks`` (decoder: ``num_res_blocks + 1``) residual blocks with optional attention and samplers,
a ``mid`` block (``block_1``, ``attn_1``, ``block_2``), ``norm_out``, ``conv_out``, then ``quant_conv`` /
``post_quant_conv``. State-dict keys equal the released checkpoints'.

Frames: the first frame is encoded alone, so ``1 + f*k`` frames give ``1 + k`` latents, where ``f`` is the
product of the temporal samplers' factors (4 for the releases: 17 frames -> 5 latents -> 17 frames).

Latents: ``encode`` returns the latent a diffusion model consumes, ``posterior_sample_or_mean * scaling_factor``
(0.18215 as Open-Sora-Plan's diffusion wrapper); ``decode`` divides by it first. ``scaling_factor=1.0`` gives
the raw posterior latent that the release's own ``CausalVAEModel.encode(x).mode()`` returns.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass, fields
from typing import Any, Callable, Mapping, Sequence, Unpack

import torch
import torch.nn.functional as F
from torch import nn

from ..registry import MODELS
from .base import SharedKeys, VideoAutoencoder
from .causal_vae_blocks import normalize, resolve_block
from .checkpoint_io import PretrainedMixin, StateDict
from .layers.checkpointing import run_block
from .layers.posterior import DiagonalGaussianDistribution
from .layers.tiling import TilingConfig

RELEASE_CLASS_NAME = "CausalVAEModel"
LATENT_SCALING_FACTOR = 0.18215


@dataclass(frozen=True)
class CoderShape:
    """Hyper-parameters the encoder and decoder share (the release's ``config.json`` names)."""

    z_channels: int
    hidden_size: int
    hidden_size_mult: Sequence[int]
    attn_resolutions: Sequence[int]
    dropout: float
    resolution: int
    num_res_blocks: int


@dataclass(frozen=True)
class CoderBlocks:
    """Block names of one side: the release's ``<side>_*`` config fields, with samplers per level.

    ``sampling`` is ``"downsample"`` (encoder) or ``"upsample"`` (decoder): it names the level attributes
    ``<sampling>`` / ``time_<sampling>`` and the config keys ``<side>_{spatial,temporal}_<sampling>``.
    """

    side: str
    sampling: str
    conv_in: str
    conv_out: str
    attention: str
    resnet_blocks: Sequence[str]
    spatial_samplers: Sequence[str]
    temporal_samplers: Sequence[str]
    mid_resnet: str

    @classmethod
    def from_config(cls, side: str, sampling: str, config: Mapping[str, Any]) -> "CoderBlocks":
        """The side's names from the release config keys ``<side>_conv_in``, ``<side>_spatial_<sampling>``, ..."""
        keys = ("conv_in", "conv_out", "attention", "resnet_blocks", f"spatial_{sampling}", f"temporal_{sampling}")
        return cls(side, sampling, *(config[f"{side}_{key}"] for key in keys), config[f"{side}_mid_resnet"])

    def resolve(self, kind: str, field: str) -> Callable[..., nn.Module]:
        """The ``kind`` block named by the side's single-valued ``field`` (``conv_in``, ``attention``, ...)."""
        return resolve_block(kind, getattr(self, field), f"{self.side}_{field}")

    def level_block(self, level: int) -> Callable[..., nn.Module]:
        return resolve_block("resnet", self.resnet_blocks[level], f"{self.side}_resnet_blocks[{level}]")

    def add_samplers(self, level_module: nn.Module, level: int, channels: int) -> bool:
        """Attach the level's spatial and temporal samplers (where named); True when a spatial one was added."""
        names = {
            self.sampling: (self.spatial_samplers[level], "spatial"),
            f"time_{self.sampling}": (self.temporal_samplers[level], "temporal"),
        }
        for attribute, (name, axis) in names.items():
            if name:
                config_key = f"{self.side}_{axis}_{self.sampling}[{level}]"
                setattr(level_module, attribute, resolve_block("sampler", name, config_key)(channels, channels))
        return bool(self.spatial_samplers[level])


def _mid_block(blocks: CoderBlocks, channels: int, dropout: float) -> nn.Module:
    """The ``mid`` block: ``block_1`` -> ``attn_1`` -> ``block_2`` at ``channels``."""
    mid_cls = blocks.resolve("resnet", "mid_resnet")
    mid = nn.Module()
    mid.block_1 = mid_cls(channels, channels, dropout)
    mid.attn_1 = blocks.resolve("attention", "attention")(channels)
    mid.block_2 = mid_cls(channels, channels, dropout)
    return mid


def _run_mid(mid: nn.Module, h: torch.Tensor) -> torch.Tensor:
    h = run_block(mid.block_1, h)
    h = mid.attn_1(h)
    return run_block(mid.block_2, h)


def _res_level(
    blocks: CoderBlocks, level: int, block_in: int, block_out: int, num_blocks: int, dropout: float, attend: bool
) -> tuple[nn.Module, int]:
    """A level's ``block`` list of ``num_blocks`` res blocks ``block_in -> block_out``, each followed by an
    ``attn`` entry when ``attend``; returns it with its output channels."""
    block_cls = blocks.level_block(level)
    attention_cls = blocks.resolve("attention", "attention")
    module = nn.Module()
    module.block = nn.ModuleList()
    module.attn = nn.ModuleList()
    for _ in range(num_blocks):
        module.block.append(block_cls(block_in, block_out, dropout))
        block_in = block_out
        if attend:
            module.attn.append(attention_cls(block_in))
    return module, block_in


def _run_res_level(level_module: nn.Module, h: torch.Tensor) -> torch.Tensor:
    for index, block in enumerate(level_module.block):
        h = run_block(block, h)
        if len(level_module.attn) > 0:
            h = level_module.attn[index](h)
    return h


def _run_samplers(level_module: nn.Module, h: torch.Tensor, sampling: str) -> torch.Tensor:
    """Apply the level's spatial then temporal sampler, those it has."""
    for attribute in (sampling, f"time_{sampling}"):
        if hasattr(level_module, attribute):
            h = getattr(level_module, attribute)(h)
    return h


class Encoder(nn.Module):
    """``B in_channels T H W`` -> ``B (2 if double_z else 1)*z_channels t h w`` (before ``quant_conv``)."""

    def __init__(self, shape: CoderShape, blocks: CoderBlocks, double_z: bool, in_channels: int = 3) -> None:
        super().__init__()
        self.conv_in = blocks.resolve("conv", "conv_in")(in_channels, shape.hidden_size, 3)
        in_mult = (1, *shape.hidden_size_mult)
        current_resolution = shape.resolution
        self.down = nn.ModuleList()
        for level, mult in enumerate(shape.hidden_size_mult):
            block_in, block_out = shape.hidden_size * in_mult[level], shape.hidden_size * mult
            attend = current_resolution in shape.attn_resolutions
            num_blocks = shape.num_res_blocks
            down, channels = _res_level(blocks, level, block_in, block_out, num_blocks, shape.dropout, attend)
            if blocks.add_samplers(down, level, channels):
                current_resolution //= 2
            self.down.append(down)
        self.mid = _mid_block(blocks, channels, shape.dropout)
        self.norm_out = normalize(channels)
        out_channels = 2 * shape.z_channels if double_z else shape.z_channels
        self.conv_out = blocks.resolve("conv", "conv_out")(channels, out_channels, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.conv_in(x)
        last_level = len(self.down) - 1
        for level, down in enumerate(self.down):
            h = _run_res_level(down, h)
            # The release feeds the mid block the last level's res-block output, so samplers of the last
            # level (none in the released configs) would never reach the output: they are not run.
            if level == last_level:
                break
            h = _run_samplers(down, h, "downsample")
        h = _run_mid(self.mid, h)
        return self.conv_out(F.silu(self.norm_out(h)))


class Decoder(nn.Module):
    """``B z_channels t h w`` (after ``post_quant_conv``) -> ``B out_channels T H W``.

    Levels run from the deepest (``up.{n-1}``) to ``up.0``; each applies its res blocks, then the spatial,
    then the temporal upsampler.
    """

    def __init__(self, shape: CoderShape, blocks: CoderBlocks, out_channels: int = 3) -> None:
        super().__init__()
        num_levels = len(shape.hidden_size_mult)
        block_in = shape.hidden_size * shape.hidden_size_mult[-1]
        current_resolution = shape.resolution // 2 ** (num_levels - 1)

        self.conv_in = blocks.resolve("conv", "conv_in")(shape.z_channels, block_in, 3)
        self.mid = _mid_block(blocks, block_in, shape.dropout)

        levels: list[nn.Module] = []
        num_blocks = shape.num_res_blocks + 1  # one more res block per level than the encoder
        for level in reversed(range(num_levels)):
            block_out = shape.hidden_size * shape.hidden_size_mult[level]
            attend = current_resolution in shape.attn_resolutions
            up, block_in = _res_level(blocks, level, block_in, block_out, num_blocks, shape.dropout, attend)
            if blocks.add_samplers(up, level, block_in):
                current_resolution *= 2
            levels.insert(0, up)
        self.up = nn.ModuleList(levels)
        self.norm_out = normalize(block_in)
        self.conv_out = blocks.resolve("conv", "conv_out")(block_in, out_channels, 3)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        h = self.conv_in(z)
        h = _run_mid(self.mid, h)
        for up in reversed(self.up):
            h = _run_res_level(up, h)
            h = _run_samplers(up, h, "upsample")
        return self.conv_out(F.silu(self.norm_out(h)))


@MODELS.register_module("causal_vae")
class CausalVAEModel(PretrainedMixin, VideoAutoencoder):
    """Open-Sora-Plan CausalVideoVAE with a diagonal-Gaussian posterior.

    Constructor arguments are the fields of the release's ``config.json`` (same names, same defaults as the
    reference's ``CausalVAEModel``) plus ``scaling_factor`` and the shared keys (``SharedKeys``:
    ``disc_off_grad_ckpt`` and the tiling keys of ``layers/tiling.py``; 256 px spatial tiles with overlap 0.25 as
    Open-Sora-Plan's ``tiled_encode2d``, 64-frame temporal tiles that read 65 frames = 17 latents). ``lr``,
    ``loss_type`` and ``loss_params`` only describe training (see
    ``opensora_ae.losses.configs_from_lpips_with_discriminator``) and are kept so that ``save_pretrained`` writes a
    complete release-style ``config.json``.

    Layouts: pixels ``B 3 T H W`` in [-1, 1] with ``T = 1 + f*k`` and ``H, W`` multiples of the spatial
    factor; latents ``B embed_dim (1+k) H/s W/s``.
    """

    causal = True
    config_class_names = (RELEASE_CLASS_NAME,)
    tiling_defaults = TilingConfig(temporal_tile_size=64)

    def __init__(
        self,
        lr: float = 1e-5,
        hidden_size: int = 128,
        z_channels: int = 4,
        hidden_size_mult: Sequence[int] = (1, 2, 4, 4),
        attn_resolutions: Sequence[int] = (),
        dropout: float = 0.0,
        resolution: int = 256,
        double_z: bool = True,
        embed_dim: int = 4,
        num_res_blocks: int = 2,
        loss_type: str = "opensora.models.ae.videobase.losses.LPIPSWithDiscriminator",
        loss_params: dict[str, Any] | None = None,
        q_conv: str = "CausalConv3d",
        encoder_conv_in: str = "CausalConv3d",
        encoder_conv_out: str = "CausalConv3d",
        encoder_attention: str = "AttnBlock3D",
        encoder_resnet_blocks: Sequence[str] = ("ResnetBlock3D",) * 4,
        encoder_spatial_downsample: Sequence[str] = ("SpatialDownsample2x",) * 3 + ("",),
        encoder_temporal_downsample: Sequence[str] = ("", "TimeDownsample2x", "TimeDownsample2x", ""),
        encoder_mid_resnet: str = "ResnetBlock3D",
        decoder_conv_in: str = "CausalConv3d",
        decoder_conv_out: str = "CausalConv3d",
        decoder_attention: str = "AttnBlock3D",
        decoder_resnet_blocks: Sequence[str] = ("ResnetBlock3D",) * 4,
        decoder_spatial_upsample: Sequence[str] = ("",) + ("SpatialUpsample2x",) * 3,
        decoder_temporal_upsample: Sequence[str] = ("", "", "TimeUpsample2x", "TimeUpsample2x"),
        decoder_mid_resnet: str = "ResnetBlock3D",
        in_channels: int = 3,
        out_channels: int = 3,
        scaling_factor: float = LATENT_SCALING_FACTOR,
        _class_name: str = RELEASE_CLASS_NAME,
        _diffusers_version: str | None = None,
        **shared: Unpack[SharedKeys],
    ) -> None:
        super().__init__()
        if _class_name != RELEASE_CLASS_NAME:
            raise ValueError(f"causal_vae config _class_name={_class_name!r}: only {RELEASE_CLASS_NAME!r} is supported")
        if loss_params is None:
            loss_params = {"kl_weight": 1e-6, "logvar_init": 0.0, "disc_start": 2001, "disc_weight": 0.5}
        self.register_to_config(loss_params=loss_params)  # the release's config.json spells the defaults out
        _check_level_lists(self.config)
        self.scaling_factor = float(scaling_factor)
        self.in_channels = in_channels
        self.latent_channels = embed_dim
        shape = CoderShape(**{field.name: self.config[field.name] for field in fields(CoderShape)})
        encoder_blocks = CoderBlocks.from_config("encoder", "downsample", self.config)
        self.encoder = Encoder(shape, encoder_blocks, double_z, in_channels)
        self.decoder = Decoder(shape, CoderBlocks.from_config("decoder", "upsample", self.config), out_channels)
        quant_conv_cls = resolve_block("conv", q_conv, "q_conv")
        self.quant_conv = quant_conv_cls(2 * z_channels, 2 * embed_dim, 1)
        self.post_quant_conv = quant_conv_cls(embed_dim, z_channels, 1)
        self.compression = self._compression()
        self.init_shared(shared)

    def _compression(self) -> tuple[int, int, int]:
        """``(t, h, w)`` factors from the encoder's samplers (the last level's are never run, see ``Encoder``)."""
        samplers = [
            getattr(down, name)
            for down in list(self.encoder.down)[:-1]
            for name in ("downsample", "time_downsample")
            if hasattr(down, name)
        ]
        space = math.prod([sampler.space_factor for sampler in samplers])
        return math.prod([sampler.time_factor for sampler in samplers]), space, space

    # ---- the VideoAutoencoder interface ------------------------------------------------------------------
    def _encode(self, x: torch.Tensor, sample_posterior: bool) -> tuple[torch.Tensor, DiagonalGaussianDistribution]:
        """Pixels ``B 3 T H W`` in [-1, 1] -> (scaled latent ``B embed_dim t h w``, unscaled posterior)."""
        moments = self.tiler.encode(x, lambda clip: self.quant_conv(self.encoder(clip)))
        posterior = DiagonalGaussianDistribution(moments)
        z = posterior.sample() if sample_posterior else posterior.mode()
        return self.scale_latent(z), posterior

    def _decode(self, z: torch.Tensor, num_frames: int | None) -> torch.Tensor:
        """Scaled latent ``B embed_dim t h w`` -> pixels ``B 3 (1 + f*(t-1)) H W``."""
        return self.tiler.decode(self.unscale_latent(z), lambda tile: self.decoder(self.post_quant_conv(tile)))

    def get_last_layer(self) -> torch.Tensor:
        conv_out = self.decoder.conv_out
        return conv_out.conv.weight if hasattr(conv_out, "conv") else conv_out.weight

    # ---- checkpoints ---------------------------------------------------------------------------------------
    @classmethod
    def convert_state_dict(cls, state_dict: StateDict) -> StateDict:
        """Drop the training loss's tensors (``loss.*``: LPIPS, logvar, discriminator), also under ``module.``."""
        return {k: v for k, v in state_dict.items() if not k.startswith(("loss.", "module.loss."))}

    @classmethod
    def checkpoint_hint(cls, state_dict: StateDict) -> str | None:
        """Name the shipped config whose layout a mismatching Open-Sora-Plan checkpoint has (None if neither)."""
        conv_in = state_dict.get("encoder.conv_in.weight", state_dict.get("encoder.conv_in.conv.weight"))
        if conv_in is None:
            return None
        if conv_in.ndim == 4 and any(key.endswith("time_downsample.mix_factor") for key in state_dict):
            layout = "v1.1 (2-D conv_in, TimeDownsampleRes2x): configs/vae/causal_vae/v1_1.json"
        elif conv_in.ndim == 5 and "encoder.down.0.downsample.conv.conv.weight" in state_dict:
            layout = "v1.0 (all causal 3-D, SpatialDownsample2x): configs/vae/causal_vae/release.json"
        else:
            return None
        return f"the checkpoint has the Open-Sora-Plan {layout} with hidden_size={conv_in.shape[0]}"

    @classmethod
    def from_config_file(cls, path: str | os.PathLike, **overrides: Any) -> "CausalVAEModel":
        """Build (randomly initialised) from a release-style ``config.json``; ``overrides`` win over its fields."""
        return cls(**{**cls.config_from_file(path), **overrides})


# The config keys holding one block name per level of hidden_size_mult.
_LEVEL_LIST_KEYS = (
    "encoder_resnet_blocks", "encoder_spatial_downsample", "encoder_temporal_downsample",
    "decoder_resnet_blocks", "decoder_spatial_upsample", "decoder_temporal_upsample",
)  # fmt: skip


def _check_level_lists(config: Mapping[str, Any]) -> None:
    num_levels = len(config["hidden_size_mult"])
    for key in _LEVEL_LIST_KEYS:
        if len(config[key]) != num_levels:
            raise ValueError(
                f"causal_vae config key {key!r} has {len(config[key])} entries but hidden_size_mult has {num_levels} "
                "levels"
            )
