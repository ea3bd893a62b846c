"""The contract every autoencoder of the toolkit implements, and the mechanics all families share.

Training, inference and evaluation only see models through this class, so a new family needs nothing outside
its own file. A family writes ``_encode`` / ``_decode`` (one batch, already checked) and sets a few attributes;
the base class owns what is the same everywhere:

* input checks (``check_pixels`` / ``check_latent``) with one error style;
* the shapes rule: ``forward``, ``reconstruct`` and ``decode(z, num_frames=T)`` return exactly ``T`` frames (and
  ``forward`` / ``reconstruct`` the input's ``H, W``), or raise one clear error;
* latent scaling ``z = (mean - shift_factor) * scaling_factor`` (diffusers' convention);
* the shared constructor keys (``SharedKeys``: the five Open-Sora tiling keys and ``disc_off_grad_ckpt``) and the
  tiler built from them; ``enable_tiling`` / ``enable_spatial_tiling`` / ``enable_temporal_tiling`` /
  ``disable_tiling`` and ``enable_slicing`` / ``disable_slicing`` (one sample at a time);
* activation checkpointing (``layers/checkpointing.py``), with the ``disc_off_grad_ckpt`` last-layer exception;
* ``dtype`` / ``device``, ``compile_blocks`` and ``to_channels_last``.
"""

from __future__ import annotations

import dataclasses
import inspect
from abc import ABC, abstractmethod
from typing import Any, ClassVar, Iterator, Mapping, TypedDict

import torch
from torch import nn

from .layers.posterior import DiagonalGaussianDistribution
from .layers.tiling import TilingConfig, VideoTiler

TILING_KEYS = tuple(field.name for field in dataclasses.fields(TilingConfig))
SHARED_KEYS = (*TILING_KEYS, "disc_off_grad_ckpt")


class SharedKeys(TypedDict, total=False):
    """Constructor keys every family takes through ``**shared`` (names as in Open-Sora; see ``layers/tiling.py``).

    ``disc_off_grad_ckpt`` keeps the block holding the decoder's last layer out of activation checkpointing, so
    the adaptive GAN weight differentiates an ordinary graph there.
    """

    use_spatial_tiling: bool
    use_temporal_tiling: bool
    spatial_tile_size: int
    temporal_tile_size: int
    tile_overlap_factor: float
    disc_off_grad_ckpt: bool


class VideoAutoencoder(nn.Module, ABC):
    """Base class of the video autoencoders.

    Subclasses set ``in_channels``, ``latent_channels`` and ``compression = (t, h, w)``, call
    ``init_shared(shared)`` in their constructor and implement ``_encode`` / ``_decode`` / ``get_last_layer``.
    Layouts: pixels ``B C T H W`` in ``[-1, 1]``; latents ``B latent_channels t h w``, scaled the way a diffusion
    model consumes them.
    """

    in_channels: int
    latent_channels: int
    compression: tuple[int, int, int]
    # True when frames are encoded causally so that 4k+1 frames give k+1 latents (the first frame alone).
    causal: bool = False
    # The tiling defaults of the family (None: the family has no tiled inference).
    tiling_defaults: ClassVar[TilingConfig | None] = TilingConfig()
    # z = (mean - shift_factor) * scaling_factor.
    scaling_factor: float = 1.0
    shift_factor: float = 0.0
    disc_off_grad_ckpt: bool = False
    use_slicing: bool = False
    # How a user fixes an input the family cannot take (ends the input errors).
    input_hint: ClassVar[str] = "trim the clip / resize or crop its frames"

    # ---- construction ---------------------------------------------------------------------------------------
    def init_shared(self, shared: Mapping[str, Any], skip_covered_tiles: bool = False) -> None:
        """Read the shared keys (``SharedKeys``) and build ``self.tiler``; unknown keys are a one-line error.

        The resolved values, defaults included, go into ``self.config`` so a saved folder rebuilds this model.
        """
        name = type(self).__name__
        unknown = sorted(set(shared) - set(SHARED_KEYS))
        if unknown:
            raise TypeError(f"{name}: unknown config keys {unknown}; valid keys: {list(self.config_keys())}")
        self.disc_off_grad_ckpt = bool(shared.get("disc_off_grad_ckpt", False))
        resolved: dict[str, Any] = {"disc_off_grad_ckpt": self.disc_off_grad_ckpt}
        tiling = {key: shared[key] for key in TILING_KEYS if key in shared}
        if self.tiling_defaults is None:
            if tiling:
                raise ValueError(f"{name} has no tiled inference: remove the tiling keys {sorted(tiling)}")
        else:
            config = dataclasses.replace(self.tiling_defaults, **tiling)
            self.tiler = VideoTiler(config, self.compression, causal=self.causal, skip_covered_tiles=skip_covered_tiles)
            resolved.update(dataclasses.asdict(config))
        self._record_config(resolved)

    @classmethod
    def config_keys(cls) -> tuple[str, ...]:
        """Every config key the constructor takes: its named arguments, then the shared keys it accepts."""
        parameters = list(inspect.signature(cls.__init__).parameters.values())[1:]
        named = tuple(p.name for p in parameters if p.kind not in (p.VAR_KEYWORD, p.VAR_POSITIONAL))
        shared = SHARED_KEYS if cls.tiling_defaults is not None else ("disc_off_grad_ckpt",)
        return (*named, *shared)

    @classmethod
    def check_random_init(cls, kwargs: Mapping[str, Any]) -> None:
        """Hook called by ``build_model`` before building from scratch (no ``from_pretrained``): raise a one-line
        error for a config that is never meant to train from random weights. Default: nothing to check."""

    def _record_config(self, values: Mapping[str, Any]) -> None:
        config = getattr(self, "config", None)
        if isinstance(config, dict):
            config.update(values)

    # ---- properties -----------------------------------------------------------------------------------------
    @property
    def dtype(self) -> torch.dtype:
        """The dtype of the floating-point parameters (float32 for a model without any)."""
        return next((p.dtype for p in self.parameters() if p.is_floating_point()), torch.float32)

    @property
    def device(self) -> torch.device:
        """The device of the parameters."""
        return next((p.device for p in self.parameters()), torch.device("cpu"))

    # ---- checks ---------------------------------------------------------------------------------------------
    def valid_num_frames(self, num_frames: int) -> bool:
        """Frame counts the encoder takes: ``1 + t*k`` for causal families, else ``t*k`` or a single frame."""
        ct = self.compression[0]
        if num_frames < 1:
            return False
        return (num_frames - 1) % ct == 0 if self.causal else num_frames == 1 or num_frames % ct == 0

    def frame_rule(self) -> str:
        """The frame-count rule in words (for errors)."""
        ct = self.compression[0]
        return f"T = 1 + {ct}*k" if self.causal else f"T = 1 or a multiple of {ct}"

    def pads_input(self) -> bool:
        """True when the family pads invalid sizes itself (DC-AE ``pad_to_valid``)."""
        return False

    def check_pixels(self, x: torch.Tensor) -> None:
        """Raise a one-line error unless ``x`` is ``B in_channels T H W`` with a frame count and size the family
        takes (``H``, ``W`` multiples of the spatial compression)."""
        name = type(self).__name__
        if x.ndim != 5 or x.shape[1] != self.in_channels:
            raise ValueError(f"{name}.encode: expected pixels B {self.in_channels} T H W, got shape {tuple(x.shape)}")
        if self.pads_input():
            return
        frames, height, width = x.shape[2:]
        if not self.valid_num_frames(frames):
            raise ValueError(
                f"{name}.encode: got {frames} frames but the encoder needs {self.frame_rule()}; {self.input_hint}"
            )
        _, ch, cw = self.compression
        if height % ch or width % cw:
            raise ValueError(
                f"{name}.encode: height x width {height}x{width} must be multiples of {ch}x{cw}; {self.input_hint}"
            )

    def check_latent(self, z: torch.Tensor) -> None:
        if z.ndim != 5 or z.shape[1] != self.latent_channels:
            raise ValueError(
                f"{type(self).__name__}.decode: expected latents B {self.latent_channels} t h w, got {tuple(z.shape)}"
            )

    # ---- latent scaling -------------------------------------------------------------------------------------
    def scale_latent(self, z: torch.Tensor) -> torch.Tensor:
        """Raw latent -> diffusion latent: ``(z - shift_factor) * scaling_factor``."""
        return (z - self.shift_factor) * self.scaling_factor

    def unscale_latent(self, z: torch.Tensor) -> torch.Tensor:
        """Diffusion latent -> raw latent: ``z / scaling_factor + shift_factor``."""
        return z / self.scaling_factor + self.shift_factor

    # ---- the family's part ----------------------------------------------------------------------------------
    @abstractmethod
    def _encode(
        self, x: torch.Tensor, sample_posterior: bool
    ) -> tuple[torch.Tensor, DiagonalGaussianDistribution | None]:
        """Checked pixels ``B C T H W`` -> ``(scaled latent, posterior or None)``."""

    @abstractmethod
    def _decode(self, z: torch.Tensor, num_frames: int | None) -> torch.Tensor:
        """Checked scaled latent ``B C t h w`` -> pixels ``B C T' H W`` (``T' >= num_frames``; ``decode`` crops)."""

    @abstractmethod
    def get_last_layer(self) -> torch.Tensor:
        """The decoder's output conv weight (for the adaptive GAN weight)."""

    # ---- the interface --------------------------------------------------------------------------------------
    def encode(self, x: torch.Tensor, sample_posterior: bool = False) -> torch.Tensor:
        """Pixels ``B C T H W`` in [-1, 1] -> scaled latent ``B latent_channels t h w``."""
        return self.encode_with_posterior(x, sample_posterior)[0]

    def encode_with_posterior(
        self, x: torch.Tensor, sample_posterior: bool = False
    ) -> tuple[torch.Tensor, DiagonalGaussianDistribution | None]:
        """Like ``encode`` but also return the posterior (None for plain autoencoders); one sample at a time
        when slicing is on."""
        self.check_pixels(x)
        if not self.use_slicing or x.shape[0] == 1:
            return self._encode(x, sample_posterior)
        parts = [self._encode(sample, sample_posterior) for sample in x.split(1)]
        z = torch.cat([part[0] for part in parts])
        if parts[0][1] is None:
            return z, None
        return z, DiagonalGaussianDistribution(torch.cat([part[1].parameters for part in parts]))

    def decode(self, z: torch.Tensor, num_frames: int | None = None) -> torch.Tensor:
        """Scaled latent ``B C t h w`` -> pixels ``B C T H W``; exactly ``num_frames`` frames when given (one clear
        error when the latent decodes to fewer)."""
        self.check_latent(z)
        if not self.use_slicing or z.shape[0] == 1:
            x = self._decode(z, num_frames)
        else:
            x = torch.cat([self._decode(sample, num_frames) for sample in z.split(1)])
        return self._crop_frames(x, z, num_frames)

    def _crop_frames(self, x: torch.Tensor, z: torch.Tensor, num_frames: int | None) -> torch.Tensor:
        if num_frames is None:
            return x
        if num_frames > x.shape[2]:
            raise ValueError(
                f"{type(self).__name__}.decode: asked for num_frames={num_frames} but {z.shape[2]} latent frame(s) "
                f"decode to {x.shape[2]}; clips must follow {self.frame_rule()} to round-trip"
            )
        return x[:, :, :num_frames]

    def forward(
        self, x: torch.Tensor, sample_posterior: bool = True
    ) -> tuple[torch.Tensor, DiagonalGaussianDistribution | None, torch.Tensor]:
        """Reconstruct ``x``; returns ``(x_rec, posterior or None, z)`` with ``x_rec`` of ``x``'s shape."""
        z, posterior = self.encode_with_posterior(x, sample_posterior)
        return self._like_input(self.decode(z, num_frames=x.shape[2]), x), posterior, z

    @torch.no_grad()
    def reconstruct(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        """Deterministic reconstructions for inference: ``{"latent": z, "recn": x_rec}``.

        Families with extra outputs add them (the Open-Sora 1.2 pipeline adds ``"spatial"``, its spatial-VAE-only
        reconstruction); every pixel output has the shape of ``x``.
        """
        z = self.encode(x)
        return {"latent": z, "recn": self._like_input(self.decode(z, num_frames=x.shape[2]), x)}

    @staticmethod
    def _like_input(x_rec: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        """``x_rec`` cropped to ``x``'s ``H, W`` (families that pad the input decode a larger frame)."""
        return x_rec[..., : x.shape[3], : x.shape[4]]

    def get_latent_size(self, num_frames: int, height: int, width: int) -> tuple[int, int, int]:
        """Latent ``(t, h, w)`` for an input of ``num_frames x height x width``."""
        # Causal models map 4k+1 frames to k+1 latents, DC-AE maps 4k frames to k: both are (T - 1) // ct + 1.
        ct, ch, cw = self.compression
        return (num_frames - 1) // ct + 1, height // ch, width // cw

    # ---- tiling and slicing ---------------------------------------------------------------------------------
    def set_tiling(self, **changes: Any) -> None:
        """Change tiling keys at run time, e.g. ``set_tiling(use_temporal_tiling=True, temporal_tile_size=32)``;
        the saved ``config`` follows."""
        tiler = getattr(self, "tiler", None)
        if tiler is None:
            raise ValueError(f"{type(self).__name__} has no tiled inference")
        self.tiler = tiler.with_changes(**changes)
        self._record_config(changes)

    def enable_tiling(self, **sizes: Any) -> None:
        """Tile in space and time (optionally new ``spatial_tile_size`` / ``temporal_tile_size`` /
        ``tile_overlap_factor``)."""
        self.set_tiling(use_spatial_tiling=True, use_temporal_tiling=True, **sizes)

    def enable_spatial_tiling(self, enabled: bool = True) -> None:
        self.set_tiling(use_spatial_tiling=enabled)

    def enable_temporal_tiling(self, enabled: bool = True) -> None:
        self.set_tiling(use_temporal_tiling=enabled)

    def disable_tiling(self) -> None:
        self.set_tiling(use_spatial_tiling=False, use_temporal_tiling=False)

    def enable_slicing(self) -> None:
        """Encode and decode a batch one sample at a time (same outputs, less peak memory)."""
        self.use_slicing = True

    def disable_slicing(self) -> None:
        self.use_slicing = False

    # ---- activation checkpointing ---------------------------------------------------------------------------
    def checkpointed_blocks(self) -> Iterator[nn.Module]:
        """The modules carrying a ``gradient_checkpointing`` flag (the blocks ``run_block`` may checkpoint)."""
        return (m for m in self.modules() if m is not self and hasattr(m, "gradient_checkpointing"))

    def set_gradient_checkpointing(self, enabled: bool = True) -> None:
        """Turn activation checkpointing of every block on or off; with ``disc_off_grad_ckpt`` the blocks holding
        the decoder's last layer stay off."""
        last = self.get_last_layer() if self.disc_off_grad_ckpt else None
        for block in self.checkpointed_blocks():
            holds_last = last is not None and any(p is last for p in block.parameters())
            block.gradient_checkpointing = enabled and not holds_last

    def enable_gradient_checkpointing(self) -> None:
        self.set_gradient_checkpointing(True)

    def disable_gradient_checkpointing(self) -> None:
        self.set_gradient_checkpointing(False)

    @property
    def is_gradient_checkpointing(self) -> bool:
        return any(block.gradient_checkpointing for block in self.checkpointed_blocks())

    # ---- compilation ----------------------------------------------------------------------------------------
    def compile_blocks(self, **compile_kwargs: Any) -> None:
        """``torch.compile`` every outermost checkpointed block in place (``nn.Module.compile``): the blocks are the
        repeated units, so compiling them keeps graphs small and reuses them across tiles and frame counts."""
        for block in _outermost(list(self.checkpointed_blocks())):
            block.compile(**compile_kwargs)

    # ---- memory format --------------------------------------------------------------------------------------
    def to_channels_last(self) -> VideoAutoencoder:
        """Store conv weights channels-last (``channels_last_3d`` for 3-D kernels, ``channels_last`` for 2-D), the
        layout oneDNN and cuDNN convolve fastest in; with inputs in it too (:func:`channels_last`), activations
        stay in it. Values, ``state_dict`` keys and results are unchanged. Returns ``self``."""
        with torch.no_grad():
            for param in self.parameters():
                param.data = channels_last(param.data)
        return self


def channels_last(x: torch.Tensor) -> torch.Tensor:
    """``x`` in the channels-last layout of its rank (``B C T H W`` -> strides of ``B T H W C``); other ranks as
    they are."""
    memory_format = {5: torch.channels_last_3d, 4: torch.channels_last}.get(x.dim())
    return x if memory_format is None else x.contiguous(memory_format=memory_format)


def _outermost(blocks: list[nn.Module]) -> list[nn.Module]:
    """The blocks that are not inside another block of the list."""
    inner = {id(sub) for block in blocks for sub in block.modules() if sub is not block}
    return [block for block in blocks if id(block) not in inner]

