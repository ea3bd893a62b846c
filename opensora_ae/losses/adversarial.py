"""GAN terms: generator loss with the VQGAN adaptive weight, hinge / vanilla discriminator losses.

``gen_start`` / ``disc_start`` are compared with the **optimizer iteration** the training loop passes in:
``step`` = the number of optimizer iterations completed before the current one (0 for the first). A term is
active when ``step >= start``, so ``start = N`` runs the first ``N`` iterations without it. One iteration is
one autoencoder update plus, when active, one discriminator update - never two counts.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ..registry import LOSSES

DISC_LOSS_TYPES = ("hinge", "vanilla")
ADAPTIVE_WEIGHT_MAX = 1e4
# Keeps the ratio finite when the generator gradient vanishes (VQGAN's constant).
ADAPTIVE_WEIGHT_EPS = 1e-4


def hinge_discriminator_loss(real_logits: torch.Tensor, fake_logits: torch.Tensor) -> torch.Tensor:
    """``0.5 * (mean(relu(1 - D(x))) + mean(relu(1 + D(x_rec))))``."""
    return 0.5 * (F.relu(1.0 - real_logits).mean() + F.relu(1.0 + fake_logits).mean())


def vanilla_discriminator_loss(real_logits: torch.Tensor, fake_logits: torch.Tensor) -> torch.Tensor:
    """``0.5 * (mean(softplus(-D(x))) + mean(softplus(D(x_rec))))`` (binary cross-entropy on logits)."""
    return 0.5 * (F.softplus(-real_logits).mean() + F.softplus(fake_logits).mean())


def generator_adversarial_loss(fake_logits: torch.Tensor) -> torch.Tensor:
    """``-mean(D(x_rec))``."""
    return -fake_logits.mean()


def _grad_at(loss: torch.Tensor, last_layer: torch.Tensor, name: str) -> torch.Tensor:
    (grad,) = torch.autograd.grad(loss, last_layer, retain_graph=True, allow_unused=True)
    if grad is None:
        raise RuntimeError(
            f"adaptive GAN weight: the {name} loss does not reach model.get_last_layer(); with grad_checkpoint=True "
            f"set model.disc_off_grad_ckpt=True so the decoder's output conv keeps its graph"
        )
    return grad


def adaptive_weight(rec_loss: torch.Tensor, gen_loss: torch.Tensor, last_layer: torch.Tensor) -> torch.Tensor:
    """``||d rec_loss / d last|| / (||d gen_loss / d last|| + 1e-4)`` clamped to ``[0, 1e4]``, detached.

    ``last_layer`` is the decoder's output conv weight; ``rec_loss`` is the reconstruction + perceptual NLL.
    The graph is retained so the caller can still backpropagate the total loss.
    """
    rec_norm = torch.linalg.vector_norm(_grad_at(rec_loss, last_layer, "reconstruction"))
    gen_norm = torch.linalg.vector_norm(_grad_at(gen_loss, last_layer, "generator"))
    weight = rec_norm / (gen_norm + ADAPTIVE_WEIGHT_EPS)
    return torch.clamp(weight, 0.0, ADAPTIVE_WEIGHT_MAX).detach()


@LOSSES.register_module("GeneratorLoss")
class GeneratorLoss(nn.Module):
    """Adversarial term of the autoencoder update: ``disc_factor * disc_weight * w_adaptive * -mean(D(x_rec))``.

    Config ``gen_loss_config = dict(gen_start, disc_weight)`` (``disc_factor`` optional, default 1).
    """

    def __init__(self, gen_start: int = 0, disc_weight: float = 0.05, disc_factor: float = 1.0) -> None:
        super().__init__()
        self.gen_start = int(gen_start)
        self.disc_weight = float(disc_weight)
        self.disc_factor = float(disc_factor)

    def active(self, step: int) -> bool:
        """Whether the term is on at optimizer iteration ``step`` (0-based); the loop skips D's forward if not."""
        return self.disc_factor > 0.0 and step >= self.gen_start

    def forward(
        self, fake_logits: torch.Tensor, rec_loss: torch.Tensor, last_layer: torch.Tensor, step: int
    ) -> dict[str, torch.Tensor]:
        """Returns ``total`` (add it to the AE loss), ``gen`` (unweighted) and ``weight`` (the full factor).

        Without autograd (``torch.no_grad()``, e.g. validation) the adaptive weight cannot be measured and is 0.
        """
        gen = generator_adversarial_loss(fake_logits)
        if not self.active(step) or not torch.is_grad_enabled():
            zero = gen.new_zeros(())
            return {"total": zero, "gen": gen.detach(), "weight": zero}
        weight = adaptive_weight(rec_loss, gen, last_layer) * self.disc_weight * self.disc_factor
        return {"total": weight * gen, "gen": gen.detach(), "weight": weight}


@LOSSES.register_module("DiscriminatorLoss")
class DiscriminatorLoss(nn.Module):
    """Discriminator update loss ``disc_factor * L_D(D(x), D(x_rec))`` with hinge or vanilla ``L_D``.

    Config ``disc_loss_config = dict(disc_start, disc_loss_type="hinge"|"vanilla")`` (``disc_factor`` optional).
    """

    def __init__(self, disc_start: int = 0, disc_loss_type: str = "hinge", disc_factor: float = 1.0) -> None:
        super().__init__()
        if disc_loss_type not in DISC_LOSS_TYPES:
            raise ValueError(f"disc_loss_config.disc_loss_type={disc_loss_type!r}: use one of {DISC_LOSS_TYPES}")
        self.disc_start = int(disc_start)
        self.disc_loss_type = disc_loss_type
        self.disc_factor = float(disc_factor)

    def active(self, step: int) -> bool:
        """Whether the discriminator is trained at optimizer iteration ``step`` (0-based)."""
        return self.disc_factor > 0.0 and step >= self.disc_start

    def forward(self, real_logits: torch.Tensor, fake_logits: torch.Tensor, step: int) -> dict[str, torch.Tensor]:
        """``real_logits = D(x)``, ``fake_logits = D(x_rec.detach())``; returns ``total`` and logit means."""
        loss_fn = hinge_discriminator_loss if self.disc_loss_type == "hinge" else vanilla_discriminator_loss
        loss = loss_fn(real_logits, fake_logits)
        total = self.disc_factor * loss if self.active(step) else loss.new_zeros(())
        return {
            "total": total,
            "disc": loss.detach(),
            "logits_real": real_logits.detach().mean(),
            "logits_fake": fake_logits.detach().mean(),
        }
