"""The autoencoder-update loss the training loop calls: NLL (pixel + LPIPS) + KL + OS 1.2 latent terms."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from torch import nn

from ..registry import LOSSES
from .identity import identity_loss, is_image_step, latent_reconstruction_loss
from .kl import GaussianPosterior, kl_loss
from .perceptual import PerceptualLoss
from .reconstruction import RECON_LOSS_TYPES, elementwise_error, frames_as_images, sum_per_frame


@LOSSES.register_module("VAELoss")
class VAELoss(nn.Module):
    """Open-Sora 2.0 ``VAELoss`` extended with the OS 1.2 stage terms and Open-Sora-Plan's ``logvar``.

    Config ``vae_loss_config = dict(perceptual_loss_weight, kl_loss_weight, identity_loss_weight,
    recon_loss_type="l1")``; see docs/losses.md for every key. With ``N = B*T`` frames of ``C*H*W`` pixels:

    * ``rec  = sum(|x - x_rec|) / N + perceptual_loss_weight * C*H*W * mean_frames(LPIPS)`` - i.e. per pixel
      L1 plus the frame's LPIPS value, summed over C,H,W and averaged over batch and frames;
    * ``nll  = rec / exp(logvar) + C*H*W * logvar`` (``logvar`` fixed at ``logvar_init`` unless
      ``learn_logvar``; with the default 0 it is ``rec``);
    * ``total = recon_loss_weight * nll + kl_loss_weight * KL + latent_recon_loss_weight * L_zrec
      + identity_loss_weight * L_id`` (``L_id`` on single-frame batches only).

    ``nll`` is also what the generator loss's adaptive weight differentiates.
    """

    def __init__(
        self,
        perceptual_loss_weight: float = 0.1,
        kl_loss_weight: float = 1e-6,
        identity_loss_weight: float = 0.0,
        recon_loss_type: str = "l1",
        recon_loss_weight: float = 1.0,
        latent_recon_loss_weight: float = 0.0,
        logvar_init: float = 0.0,
        learn_logvar: bool = False,
        perceptual_net: str = "vgg",
        perceptual_weights: str | Path | None = None,
    ) -> None:
        super().__init__()
        if recon_loss_type not in RECON_LOSS_TYPES:
            raise ValueError(f"vae_loss_config.recon_loss_type={recon_loss_type!r}: use one of {RECON_LOSS_TYPES}")
        self.perceptual_loss_weight = float(perceptual_loss_weight or 0.0)
        self.kl_loss_weight = float(kl_loss_weight or 0.0)
        self.identity_loss_weight = float(identity_loss_weight or 0.0)
        self.recon_loss_type = recon_loss_type
        self.recon_loss_weight = float(recon_loss_weight)
        self.latent_recon_loss_weight = float(latent_recon_loss_weight or 0.0)
        # A parameter even when fixed, so checkpoints have the same keys either way.
        self.logvar = nn.Parameter(torch.tensor(float(logvar_init)), requires_grad=learn_logvar)
        self.perceptual = (
            PerceptualLoss(perceptual_net, perceptual_weights)
            if self.perceptual_loss_weight > 0 and self.recon_loss_weight > 0
            else None
        )

    def pixel_terms(self, x: torch.Tensor, x_rec: torch.Tensor) -> dict[str, torch.Tensor]:
        """``recon`` (per-frame summed L1/L2), ``perceptual`` (mean LPIPS of a frame) and ``nll``."""
        recon = sum_per_frame(elementwise_error(x, x_rec, self.recon_loss_type))
        pixels_per_frame = x.shape[1] * x.shape[3] * x.shape[4]
        if self.perceptual is not None:
            perceptual = self.perceptual(frames_as_images(x), frames_as_images(x_rec)).mean()
            rec = recon + self.perceptual_loss_weight * pixels_per_frame * perceptual
        else:
            perceptual = recon.new_zeros(())
            rec = recon
        # The logvar term is summed over the C*H*W elements of a frame like the error it scales.
        nll = rec / torch.exp(self.logvar) + pixels_per_frame * self.logvar
        return {"recon": recon, "perceptual": perceptual, "nll": nll}

    def forward(
        self,
        x: torch.Tensor,
        x_rec: torch.Tensor,
        posterior: GaussianPosterior | None = None,
        *,
        spatial_latent: torch.Tensor | None = None,
        spatial_latent_rec: torch.Tensor | None = None,
        temporal_latent: torch.Tensor | None = None,
    ) -> dict[str, torch.Tensor]:
        """Loss terms for ``x``, ``x_rec`` (``B C T H W`` in [-1, 1]) and the posterior (None: no KL).

        The OS 1.2 latents (``B 4 T h w``) are needed only when their weights are > 0: ``spatial_latent`` and
        ``spatial_latent_rec`` for ``latent_recon_loss_weight``; ``spatial_latent`` and ``temporal_latent`` for
        ``identity_loss_weight`` on single-frame batches. Returns scalars ``total``, ``nll``, ``recon``,
        ``perceptual``, ``kl``, ``latent_recon``, ``identity``.
        """
        zero = x_rec.new_zeros(())
        terms = {"recon": zero, "perceptual": zero, "nll": zero, "kl": zero, "latent_recon": zero, "identity": zero}
        if self.recon_loss_weight > 0:
            terms.update(self.pixel_terms(x, x_rec))
        if posterior is not None:
            terms["kl"] = kl_loss(posterior)
        if self.latent_recon_loss_weight > 0:
            if spatial_latent is None or spatial_latent_rec is None:
                raise ValueError("latent_recon_loss_weight > 0 needs spatial_latent and spatial_latent_rec tensors")
            terms["latent_recon"] = latent_reconstruction_loss(spatial_latent, spatial_latent_rec)
        if self.identity_loss_weight > 0 and is_image_step(x):
            if spatial_latent is None or temporal_latent is None:
                raise ValueError("identity_loss_weight > 0 needs spatial_latent and temporal_latent on image steps")
            terms["identity"] = identity_loss(spatial_latent, temporal_latent)
        terms["total"] = (
            self.recon_loss_weight * terms["nll"]
            + self.kl_loss_weight * terms["kl"]
            + self.latent_recon_loss_weight * terms["latent_recon"]
            + self.identity_loss_weight * terms["identity"]
        )
        return terms


# Open-Sora-Plan LPIPSWithDiscriminator(3D) keys that map onto this package.
_OSP_KEYS = {
    "disc_start", "logvar_init", "kl_weight", "pixelloss_weight", "perceptual_weight", "disc_num_layers",
    "disc_in_channels", "disc_factor", "disc_weight", "use_actnorm", "disc_conditional", "disc_loss",
    "learn_logvar", "loss_type",
}


def configs_from_lpips_with_discriminator(loss_params: dict[str, Any], loss_class: str = "") -> dict[str, dict]:
    """Translate Open-Sora-Plan ``LPIPSWithDiscriminator`` ``loss_params`` into this toolkit's config keys.

    Returns ``vae_loss_config``, ``gen_loss_config``, ``disc_loss_config`` and ``discriminator``. OSP starts
    the generator and discriminator terms together at ``disc_start``; its 2-D discriminator is the
    taming-transformers PatchGAN (kernel 4, no dropout), the ``...3D`` class its 3-D analogue.
    ``pixelloss_weight`` is accepted and ignored, as OSP itself never reads it.
    """
    unknown = sorted(set(loss_params) - _OSP_KEYS)
    if unknown:
        raise KeyError(f"loss_params: unsupported LPIPSWithDiscriminator keys {unknown}; known: {sorted(_OSP_KEYS)}")
    if loss_params.get("use_actnorm") or loss_params.get("disc_conditional"):
        raise ValueError("loss_params: use_actnorm / disc_conditional discriminators are not supported; set them False")
    disc_start = int(loss_params["disc_start"])
    disc_factor = float(loss_params.get("disc_factor", 1.0))
    return {
        "vae_loss_config": dict(
            perceptual_loss_weight=float(loss_params.get("perceptual_weight", 1.0)),
            kl_loss_weight=float(loss_params.get("kl_weight", 1.0)),
            recon_loss_type=loss_params.get("loss_type", "l1"),
            logvar_init=float(loss_params.get("logvar_init", 0.0)),
            learn_logvar=bool(loss_params.get("learn_logvar", False)),
        ),
        "gen_loss_config": dict(
            gen_start=disc_start, disc_weight=float(loss_params.get("disc_weight", 1.0)), disc_factor=disc_factor
        ),
        "disc_loss_config": dict(
            disc_start=disc_start, disc_loss_type=loss_params.get("disc_loss", "hinge"), disc_factor=disc_factor
        ),
        "discriminator": dict(
            type="N_Layer_discriminator_3D",
            input_nc=int(loss_params.get("disc_in_channels", 3)),
            n_layers=int(loss_params.get("disc_num_layers", 3)),
            conv_cls="conv3d" if loss_class.endswith("3D") else "conv2d",
            kernel_size=4,
            dropout=0.0,
            from_pretrained=None,
        ),
    }
