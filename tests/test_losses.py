"""Loss terms vs independent hand computations on small tensors."""

from __future__ import annotations

import math
import subprocess
import sys
from pathlib import Path

import lpips
import pytest
import torch
from torch import nn

from opensora_ae.losses import (
    DiscriminatorLoss,
    GeneratorLoss,
    PerceptualLoss,
    VAELoss,
    adaptive_weight,
    configs_from_lpips_with_discriminator,
    default_backbone_path,
    frames_as_images,
    hinge_discriminator_loss,
    kl_loss,
    lpips_backbone_available,
    reconstruction_loss,
    vanilla_discriminator_loss,
)
from opensora_ae.models.layers.posterior import DiagonalGaussianDistribution
from opensora_ae.registry import DISCRIMINATORS, LOSSES, build


def save_torchvision_backbone(reference: lpips.LPIPS, path: Path) -> Path:
    """Write the (random) backbone of an lpips model in torchvision's ``features.{i}.*`` layout."""
    state = {}
    for name, tensor in reference.net.state_dict().items():
        _slice, index, param = name.split(".")
        state[f"features.{index}.{param}"] = tensor.clone()
    torch.save(state, path)
    return path


@pytest.fixture(scope="module")
def alex_reference(tmp_path_factory: pytest.TempPathFactory) -> tuple[lpips.LPIPS, Path]:
    torch.manual_seed(1)
    reference = lpips.LPIPS(net="alex", pnet_rand=True, verbose=False).eval()
    path = save_torchvision_backbone(reference, tmp_path_factory.mktemp("lpips") / "alexnet.pth")
    return reference, path


def video(*shape: int) -> torch.Tensor:
    return torch.rand(*shape) * 2 - 1


# ---- reconstruction -------------------------------------------------------------------------------------------


def test_frames_as_images_order() -> None:
    x = video(2, 3, 4, 5, 6)
    images = frames_as_images(x)
    assert images.shape == (8, 3, 5, 6)
    assert torch.equal(images[1 * 4 + 2], x[1, :, 2])


@pytest.mark.parametrize("loss_type", ["l1", "l2"])
def test_reconstruction_loss_sums_pixels_and_averages_frames(loss_type: str) -> None:
    x, y = video(2, 3, 4, 5, 6), video(2, 3, 4, 5, 6)
    per_frame = []
    for b in range(2):
        for t in range(4):
            diff = x[b, :, t] - y[b, :, t]
            per_frame.append((diff.abs() if loss_type == "l1" else diff**2).sum())
    expected = torch.stack(per_frame).mean()
    torch.testing.assert_close(reconstruction_loss(x, y, loss_type), expected)


def test_reconstruction_rejects_unknown_type_and_shapes() -> None:
    with pytest.raises(ValueError, match="recon_loss_type='huber'"):
        VAELoss(perceptual_loss_weight=0, recon_loss_type="huber")
    with pytest.raises(ValueError, match="shape"):
        reconstruction_loss(video(1, 3, 2, 4, 4), video(1, 3, 3, 4, 4))


# ---- VAELoss --------------------------------------------------------------------------------------------------


def test_vae_loss_nll_with_logvar_matches_open_sora_broadcast_formula() -> None:
    x, x_rec = video(2, 3, 3, 4, 5), video(2, 3, 3, 4, 5)
    loss = VAELoss(perceptual_loss_weight=0, kl_loss_weight=0, logvar_init=0.7)
    terms = loss(x, x_rec)
    # Open-Sora / Open-Sora-Plan: fold frames, broadcast the logvar over every element, sum, divide by B*T.
    elementwise = (frames_as_images(x) - frames_as_images(x_rec)).abs()
    expected = (elementwise / math.exp(0.7) + 0.7).sum() / 6
    torch.testing.assert_close(terms["nll"], expected)
    torch.testing.assert_close(terms["total"], expected)
    torch.testing.assert_close(terms["recon"], elementwise.sum() / 6)


def test_vae_loss_with_lpips_matches_hand_computation(alex_reference: tuple[lpips.LPIPS, Path]) -> None:
    reference, path = alex_reference
    x, x_rec = video(2, 3, 2, 32, 32), video(2, 3, 2, 32, 32)
    posterior = DiagonalGaussianDistribution(torch.randn(2, 8, 1, 4, 4))
    loss = VAELoss(perceptual_loss_weight=0.1, kl_loss_weight=1e-3, perceptual_net="alex", perceptual_weights=path)
    terms = loss(x, x_rec, posterior)

    images, images_rec = frames_as_images(x), frames_as_images(x_rec)
    with torch.no_grad():
        lpips_per_frame = reference(images, images_rec)  # N 1 1 1
    # "per-pixel L1 plus weight x the frame's LPIPS value, summed over C,H,W, averaged over batch and frames"
    rec = (images - images_rec).abs() + 0.1 * lpips_per_frame
    expected_nll = rec.sum() / 4
    kl = 0.5 * (posterior.mean**2 + posterior.var - 1 - posterior.logvar).sum() / 2
    torch.testing.assert_close(terms["nll"], expected_nll, rtol=1e-5, atol=1e-4)
    torch.testing.assert_close(terms["perceptual"], lpips_per_frame.mean(), rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(terms["kl"], kl)
    torch.testing.assert_close(terms["total"], expected_nll + 1e-3 * kl, rtol=1e-5, atol=1e-4)


def test_vae_loss_gradients_reach_reconstruction_only(alex_reference: tuple[lpips.LPIPS, Path]) -> None:
    _, path = alex_reference
    loss = VAELoss(perceptual_loss_weight=1.0, perceptual_net="alex", perceptual_weights=path, learn_logvar=True)
    x_rec = video(1, 3, 1, 32, 32).requires_grad_(True)
    loss(video(1, 3, 1, 32, 32), x_rec)["total"].backward()
    assert x_rec.grad is not None and x_rec.grad.abs().sum() > 0
    # Only the logvar is a parameter; LPIPS is frozen, hidden from optimizers and checkpoints, always eval.
    assert [name for name, _ in loss.named_parameters()] == ["logvar"]
    assert loss.logvar.grad is not None
    assert list(loss.state_dict()) == ["logvar"]
    loss.train()
    assert not loss.perceptual.lpips.training
    assert all(not p.requires_grad for p in loss.perceptual.lpips.parameters())
    loss.to(torch.float64)
    assert next(loss.perceptual.lpips.parameters()).dtype == torch.float64


def test_fixed_logvar_is_not_trainable() -> None:
    loss = VAELoss(perceptual_loss_weight=0, logvar_init=-1.0)
    assert not loss.logvar.requires_grad and loss.logvar.item() == -1.0


def test_learnable_logvar_gets_the_nll_gradient() -> None:
    loss = VAELoss(perceptual_loss_weight=0, kl_loss_weight=0, logvar_init=0.5, learn_logvar=True)
    assert [name for name, p in loss.named_parameters() if p.requires_grad] == ["logvar"]
    x, x_rec = torch.rand(2, 3, 2, 4, 4), torch.rand(2, 3, 2, 4, 4)
    loss(x, x_rec)["total"].backward()
    # d/dlv (rec * exp(-lv) + P * lv) = P - rec * exp(-lv), with P = C*H*W = 48.
    rec = (x - x_rec).abs().sum() / 4
    torch.testing.assert_close(loss.logvar.grad, 48 - rec * math.exp(-0.5))


def test_importing_the_losses_does_not_import_lpips() -> None:
    # lpips pulls in torchvision (seconds per process): it is imported only where an LPIPS network is built.
    code = ("import sys, opensora_ae.losses as losses; assert 'lpips' not in sys.modules and 'torchvision' not in "
            "sys.modules, 'eager import'; losses.VAELoss(perceptual_loss_weight=0); assert 'lpips' not in sys.modules")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr[-2000:]


# ---- KL -------------------------------------------------------------------------------------------------------


def test_kl_matches_closed_form() -> None:
    parameters = torch.randn(3, 8, 2, 3, 3)
    posterior = DiagonalGaussianDistribution(parameters)
    mean, logvar = parameters.chunk(2, dim=1)
    reference = torch.distributions.kl_divergence(
        torch.distributions.Normal(mean, torch.exp(0.5 * logvar)), torch.distributions.Normal(0.0, 1.0)
    )
    torch.testing.assert_close(kl_loss(posterior), reference.sum() / 3)


def test_kl_skipped_without_posterior() -> None:
    terms = VAELoss(perceptual_loss_weight=0, kl_loss_weight=1.0)(video(1, 3, 2, 4, 4), video(1, 3, 2, 4, 4), None)
    assert terms["kl"].item() == 0.0
    torch.testing.assert_close(terms["total"], terms["nll"])


# ---- OS 1.2 latent terms --------------------------------------------------------------------------------------


def test_identity_loss_only_on_image_steps() -> None:
    loss = VAELoss(perceptual_loss_weight=0, kl_loss_weight=0, recon_loss_weight=0, identity_loss_weight=2.0)
    z_spatial, z_temporal = torch.randn(2, 4, 1, 3, 3), torch.randn(2, 4, 1, 3, 3)
    image_terms = loss(video(2, 3, 1, 8, 8), video(2, 3, 1, 8, 8), spatial_latent=z_spatial, temporal_latent=z_temporal)
    expected = (z_spatial - z_temporal).abs().sum() / 2
    torch.testing.assert_close(image_terms["identity"], expected)
    torch.testing.assert_close(image_terms["total"], 2.0 * expected)

    video_terms = loss(
        video(2, 3, 5, 8, 8), video(2, 3, 5, 8, 8), spatial_latent=torch.randn(2, 4, 5, 3, 3), temporal_latent=z_temporal
    )
    assert video_terms["identity"].item() == 0.0 and video_terms["total"].item() == 0.0
    with pytest.raises(ValueError, match="identity_loss_weight > 0 needs spatial_latent and temporal_latent"):
        loss(video(2, 3, 1, 8, 8), video(2, 3, 1, 8, 8))


def test_latent_reconstruction_loss() -> None:
    loss = VAELoss(perceptual_loss_weight=0, kl_loss_weight=0, recon_loss_weight=0, latent_recon_loss_weight=1.0)
    z, z_rec = torch.randn(2, 4, 5, 3, 3), torch.randn(2, 4, 5, 3, 3)
    terms = loss(video(2, 3, 17, 8, 8), video(2, 3, 17, 8, 8), spatial_latent=z, spatial_latent_rec=z_rec)
    torch.testing.assert_close(terms["latent_recon"], (z - z_rec).abs().sum() / 10)
    torch.testing.assert_close(terms["total"], terms["latent_recon"])
    with pytest.raises(ValueError, match="spatial_latent_rec"):
        loss(video(2, 3, 17, 8, 8), video(2, 3, 17, 8, 8))


# ---- perceptual -----------------------------------------------------------------------------------------------


def test_perceptual_loss_equals_lpips_package(tmp_path: Path) -> None:
    reference = lpips.LPIPS(net="vgg", pnet_rand=True, verbose=False).eval()
    path = save_torchvision_backbone(reference, tmp_path / "vgg16-397923af.pth")
    ours = PerceptualLoss("vgg", path)
    a, b = video(2, 3, 32, 32), video(2, 3, 32, 32)
    with torch.no_grad():
        torch.testing.assert_close(ours(a, b), reference(a, b).flatten())
        gray_a, gray_b = a[:, :1], b[:, :1]
        expected_gray = reference(gray_a.repeat(1, 3, 1, 1), gray_b.repeat(1, 3, 1, 1)).flatten()
        torch.testing.assert_close(ours(gray_a, gray_b), expected_gray)
    # The v0.1 heads shipped with the package are loaded (not random).
    shipped = torch.load(Path(lpips.__file__).parent / "weights/v0.1/vgg.pth", map_location="cpu", weights_only=True)
    torch.testing.assert_close(ours.lpips.lin0.model[1].weight, shipped["lin0.model.1.weight"])


def test_missing_backbone_is_one_clear_error(tmp_path: Path) -> None:
    previous = torch.hub.get_dir()
    torch.hub.set_dir(str(tmp_path / "hub"))
    try:
        expected = tmp_path / "hub" / "checkpoints" / "vgg16-397923af.pth"
        assert default_backbone_path("vgg") == expected
        assert not lpips_backbone_available("vgg")
        with pytest.raises(FileNotFoundError) as info:
            VAELoss(perceptual_loss_weight=0.1)
        message = str(info.value)
        assert str(expected) in message and "perceptual_weights=PATH" in message and "\n" not in message
        # Nothing was downloaded.
        assert not expected.exists()
    finally:
        torch.hub.set_dir(previous)
    with pytest.raises(FileNotFoundError, match="nowhere.pth"):
        PerceptualLoss("vgg", tmp_path / "nowhere.pth")
    with pytest.raises(ValueError, match="perceptual net 'resnet'"):
        PerceptualLoss("resnet")


def test_backbone_available_with_explicit_file(alex_reference: tuple[lpips.LPIPS, Path]) -> None:
    assert lpips_backbone_available("alex", alex_reference[1])


def test_wrong_backbone_file_is_rejected(tmp_path: Path) -> None:
    path = tmp_path / "not_vgg.pth"
    torch.save({"weight": torch.zeros(1)}, path)
    with pytest.raises(KeyError, match="not a torchvision backbone"):
        PerceptualLoss("alex", path)


# ---- GAN terms ------------------------------------------------------------------------------------------------

REAL = torch.tensor([2.0, 0.5, -1.0])
FAKE = torch.tensor([-2.0, 0.3, 1.0])


def test_hinge_loss_value() -> None:
    # relu(1 - real) = [0, .5, 2] -> mean 5/6; relu(1 + fake) = [0, 1.3, 2] -> mean 1.1
    expected = 0.5 * (2.5 / 3 + 3.3 / 3)
    assert hinge_discriminator_loss(REAL, FAKE).item() == pytest.approx(expected, rel=1e-6)


def test_vanilla_loss_value() -> None:
    softplus = lambda v: math.log1p(math.exp(v))  # noqa: E731
    expected = 0.5 * (sum(softplus(-r) for r in REAL.tolist()) / 3 + sum(softplus(f) for f in FAKE.tolist()) / 3)
    assert vanilla_discriminator_loss(REAL, FAKE).item() == pytest.approx(expected, rel=1e-6)


def test_discriminator_loss_start_and_type() -> None:
    loss = DiscriminatorLoss(disc_start=3, disc_loss_type="vanilla", disc_factor=2.0)
    assert not loss.active(2) and loss.active(3)
    assert loss(REAL, FAKE, step=2)["total"].item() == 0.0
    torch.testing.assert_close(loss(REAL, FAKE, step=3)["total"], 2.0 * vanilla_discriminator_loss(REAL, FAKE))
    with pytest.raises(ValueError, match="disc_loss_type='wgan-gp'"):
        DiscriminatorLoss(disc_loss_type="wgan-gp")


class TinyDecoder(nn.Module):
    """A two-conv 'decoder' whose output conv is the last layer."""

    def __init__(self) -> None:
        super().__init__()
        self.conv_in = nn.Conv2d(3, 4, 3, padding=1)
        self.conv_out = nn.Conv2d(4, 3, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv_out(torch.relu(self.conv_in(x)))

    def get_last_layer(self) -> torch.Tensor:
        return self.conv_out.weight


def gan_losses(model: TinyDecoder, critic: nn.Module, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    x_rec = model(x)
    return (x_rec - x).abs().sum(), -critic(x_rec).mean()


def manual_last_layer_grad(loss: torch.Tensor, model: TinyDecoder) -> torch.Tensor:
    model.zero_grad()
    loss.backward()
    return model.conv_out.weight.grad.clone()


def test_adaptive_weight_matches_manual_autograd() -> None:
    model, critic, x = TinyDecoder(), nn.Conv2d(3, 1, 3), torch.randn(2, 3, 8, 8)
    rec_grad = manual_last_layer_grad(gan_losses(model, critic, x)[0], model)
    gen_grad = manual_last_layer_grad(gan_losses(model, critic, x)[1], model)
    expected = rec_grad.norm() / (gen_grad.norm() + 1e-4)

    rec_loss, gen_loss = gan_losses(model, critic, x)
    weight = adaptive_weight(rec_loss, gen_loss, model.get_last_layer())
    torch.testing.assert_close(weight, expected)
    assert not weight.requires_grad

    generator = GeneratorLoss(gen_start=0, disc_weight=0.5, disc_factor=2.0)
    out = generator(critic(model(x)), rec_loss, model.get_last_layer(), step=0)
    torch.testing.assert_close(out["weight"], expected * 0.5 * 2.0)
    torch.testing.assert_close(out["total"], expected * 0.5 * 2.0 * gen_loss)
    # The graph is retained: the caller can still backpropagate.
    (rec_loss + out["total"]).backward()


def test_adaptive_weight_is_clamped() -> None:
    model, critic, x = TinyDecoder(), nn.Conv2d(3, 1, 3), torch.randn(1, 3, 8, 8)
    rec_loss, gen_loss = gan_losses(model, critic, x)
    assert adaptive_weight(rec_loss * 1e12, gen_loss, model.get_last_layer()).item() == 1e4


def test_generator_loss_start_and_no_grad() -> None:
    model, critic, x = TinyDecoder(), nn.Conv2d(3, 1, 3), torch.randn(1, 3, 8, 8)
    generator = GeneratorLoss(gen_start=5, disc_weight=1.0)
    rec_loss, _ = gan_losses(model, critic, x)
    assert not generator.active(4) and generator.active(5)
    off = generator(critic(model(x)), rec_loss, model.get_last_layer(), step=4)
    assert off["total"].item() == 0.0 and off["weight"].item() == 0.0
    with torch.no_grad():
        rec_loss, _ = gan_losses(model, critic, x)
        validation = generator(critic(model(x)), rec_loss, model.get_last_layer(), step=9)
    assert validation["weight"].item() == 0.0 and validation["gen"].item() != 0.0


def test_generator_loss_names_grad_checkpoint_fix_when_last_layer_unreached() -> None:
    model, critic, x = TinyDecoder(), nn.Conv2d(3, 1, 3), torch.randn(1, 3, 8, 8)
    rec_loss, _ = gan_losses(model, critic, x)
    detached_logits = critic(model(x).detach())
    with pytest.raises(RuntimeError, match="disc_off_grad_ckpt"):
        GeneratorLoss()(detached_logits, rec_loss, model.get_last_layer(), step=0)


# ---- configs --------------------------------------------------------------------------------------------------


def test_open_sora_configs_build_from_registry() -> None:
    vae = build(dict(type="VAELoss", perceptual_loss_weight=0, kl_loss_weight=1e-6), LOSSES)
    gen = build(dict(type="GeneratorLoss", gen_start=0, disc_factor=1, disc_weight=0.05), LOSSES)
    disc = build(dict(type="DiscriminatorLoss", disc_start=0, disc_loss_type="hinge"), LOSSES)
    assert isinstance(vae, VAELoss) and vae.kl_loss_weight == 1e-6
    assert gen.disc_weight == 0.05 and disc.disc_loss_type == "hinge"


def test_lpips_with_discriminator_params_map_onto_toolkit_configs() -> None:
    params = dict(disc_start=2001, kl_weight=1e-6, logvar_init=0.0, perceptual_weight=1.0, disc_weight=0.5,
                  disc_num_layers=3, disc_loss="hinge", pixelloss_weight=1.0)
    configs = configs_from_lpips_with_discriminator(params, "opensora.models.ae.videobase.losses.LPIPSWithDiscriminator")
    assert configs["vae_loss_config"] == dict(
        perceptual_loss_weight=1.0, kl_loss_weight=1e-6, recon_loss_type="l1", logvar_init=0.0, learn_logvar=False
    )
    assert configs["gen_loss_config"] == dict(gen_start=2001, disc_weight=0.5, disc_factor=1.0)
    assert configs["disc_loss_config"] == dict(disc_start=2001, disc_loss_type="hinge", disc_factor=1.0)
    disc = build(configs["discriminator"], DISCRIMINATORS)
    assert disc.conv_cls == "conv2d"
    assert disc(torch.zeros(1, 3, 2, 64, 64)).shape == (1, 1, 2, 6, 6)
    assert build(dict(type="GeneratorLoss", **configs["gen_loss_config"]), LOSSES).gen_start == 2001
    with pytest.raises(KeyError, match="wavelet_weight"):
        configs_from_lpips_with_discriminator({**params, "wavelet_weight": 0.1})
