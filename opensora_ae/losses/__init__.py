"""Training losses: reconstruction, LPIPS, KL, OS 1.2 identity / latent terms, GAN terms with adaptive weight.

Importing this package registers ``VAELoss``, ``GeneratorLoss`` and ``DiscriminatorLoss`` in ``LOSSES``.
See docs/losses.md for formulas, config keys and the optimizer-iteration semantics of ``gen_start``/``disc_start``.
"""

from .adversarial import (
    DiscriminatorLoss,
    GeneratorLoss,
    adaptive_weight,
    generator_adversarial_loss,
    hinge_discriminator_loss,
    vanilla_discriminator_loss,
)
from .identity import identity_loss, is_image_step, latent_reconstruction_loss
from .kl import kl_loss
from .perceptual import PerceptualLoss, build_lpips, default_backbone_path, lpips_backbone_available, lpips_backbone_path
from .reconstruction import frames_as_images, reconstruction_loss, sum_per_frame
from .vae_loss import VAELoss, configs_from_lpips_with_discriminator

__all__ = [
    "DiscriminatorLoss",
    "GeneratorLoss",
    "PerceptualLoss",
    "VAELoss",
    "adaptive_weight",
    "build_lpips",
    "configs_from_lpips_with_discriminator",
    "default_backbone_path",
    "frames_as_images",
    "generator_adversarial_loss",
    "hinge_discriminator_loss",
    "identity_loss",
    "is_image_step",
    "kl_loss",
    "latent_reconstruction_loss",
    "lpips_backbone_available",
    "lpips_backbone_path",
    "reconstruction_loss",
    "sum_per_frame",
    "vanilla_discriminator_loss",
]
