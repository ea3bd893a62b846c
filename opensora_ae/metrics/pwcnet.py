"""PWC-Net optical flow (Sun et al. 2018) in plain PyTorch, as used by FloLPIPS.

Module names follow sniklaus/pytorch-pwc so its ``network-default.pytorch`` weights load as they are
(the file's ``module*`` names are renamed ``net*``). The cost volume, a CUDA kernel there, is written
here with tensor shifts, so the network runs on any device.
"""

from __future__ import annotations

import math
import os

import torch
import torch.nn.functional as F
from torch import nn

MAX_DISPLACEMENT = 4
COST_VOLUME_CHANNELS = (2 * MAX_DISPLACEMENT + 1) ** 2  # 81
PYRAMID_CHANNELS = (3, 16, 32, 64, 96, 128, 196)
DECODER_GROWTH = (128, 128, 96, 64, 32)  # channels added by each dense conv of a decoder
# Flow at pyramid level l is in units of 20 / 2**l input pixels; warping multiplies it back.
BACKWARP_SCALE = {2: 5.0, 3: 2.5, 4: 1.25, 5: 0.625}
FLOW_SCALE = 20.0
SIZE_MULTIPLE = 64


def leaky(x: torch.Tensor) -> torch.Tensor:
    return F.leaky_relu(x, negative_slope=0.1)


def correlation(first: torch.Tensor, second: torch.Tensor) -> torch.Tensor:
    """Cost volume: channel-mean of ``first * second`` shifted by every offset in [-4, 4]^2.

    Args:
        first, second: ``B C H W`` feature maps.

    Returns:
        ``B 81 H W``; channel ``(dy + 4) * 9 + (dx + 4)`` holds ``mean_c first[y, x] * second[y + dy, x + dx]``,
        with zeros outside ``second``.
    """
    height, width = first.shape[-2:]
    padded = F.pad(second, [MAX_DISPLACEMENT] * 4)
    span = 2 * MAX_DISPLACEMENT + 1
    volumes = [
        (first * padded[:, :, dy : dy + height, dx : dx + width]).mean(dim=1)
        for dy in range(span)
        for dx in range(span)
    ]
    return torch.stack(volumes, dim=1)


def backwarp(features: torch.Tensor, flow: torch.Tensor) -> torch.Tensor:
    """Warp ``B C H W`` features by a ``B 2 H W`` flow (pixels); samples that leave the image become 0."""
    _, _, height, width = flow.shape
    grid_x = torch.linspace(-1.0 + 1.0 / width, 1.0 - 1.0 / width, width, device=flow.device, dtype=flow.dtype)
    grid_y = torch.linspace(-1.0 + 1.0 / height, 1.0 - 1.0 / height, height, device=flow.device, dtype=flow.dtype)
    base = torch.stack(torch.meshgrid(grid_x, grid_y, indexing="xy"), dim=0).unsqueeze(0)
    normalised_flow = torch.cat(
        [flow[:, 0:1] / ((features.shape[3] - 1.0) / 2.0), flow[:, 1:2] / ((features.shape[2] - 1.0) / 2.0)], dim=1
    )
    with_ones = torch.cat([features, features.new_ones(features.shape[0], 1, height, width)], dim=1)
    grid = (base + normalised_flow).permute(0, 2, 3, 1)
    warped = F.grid_sample(with_ones, grid, mode="bilinear", padding_mode="zeros", align_corners=False)
    # The warped ones channel tells which outputs were sampled wholly from inside the image.
    inside = (warped[:, -1:] > 0.999).to(warped.dtype)
    return warped[:, :-1] * inside


def _conv(in_channels: int, out_channels: int, stride: int = 1, dilation: int = 1) -> nn.Conv2d:
    return nn.Conv2d(in_channels, out_channels, kernel_size=3, stride=stride, padding=dilation, dilation=dilation)


class Extractor(nn.Module):
    """Six-level feature pyramid; each level halves the resolution (three 3x3 convs each)."""

    def __init__(self) -> None:
        super().__init__()
        names = ("netOne", "netTwo", "netThr", "netFou", "netFiv", "netSix")
        for name, in_ch, out_ch in zip(names, PYRAMID_CHANNELS[:-1], PYRAMID_CHANNELS[1:]):
            block = nn.Sequential(
                _conv(in_ch, out_ch, stride=2), nn.LeakyReLU(0.1), _conv(out_ch, out_ch), nn.LeakyReLU(0.1),
                _conv(out_ch, out_ch), nn.LeakyReLU(0.1),
            )
            self.add_module(name, block)
        self.names = names

    def forward(self, image: torch.Tensor) -> list[torch.Tensor]:
        levels = []
        for name in self.names:
            image = getattr(self, name)(image)
            levels.append(image)
        return levels


def decoder_input_channels(level: int) -> int:
    """Channels entering the decoder at ``level``: cost volume (+ features, flow, upsampled features)."""
    if level == 6:
        return COST_VOLUME_CHANNELS
    return COST_VOLUME_CHANNELS + PYRAMID_CHANNELS[level] + 2 + 2


class Decoder(nn.Module):
    """Flow estimator at one pyramid level: densely connected convs on the (warped) cost volume."""

    def __init__(self, level: int) -> None:
        super().__init__()
        self.level = level
        current = decoder_input_channels(level)
        if level < 6:
            previous = decoder_input_channels(level + 1) + sum(DECODER_GROWTH)
            self.netUpflow = nn.ConvTranspose2d(2, 2, kernel_size=4, stride=2, padding=1)
            self.netUpfeat = nn.ConvTranspose2d(previous, 2, kernel_size=4, stride=2, padding=1)
        names = ("netOne", "netTwo", "netThr", "netFou", "netFiv")
        grown = current
        for name, growth in zip(names, DECODER_GROWTH):
            self.add_module(name, nn.Sequential(_conv(grown, growth), nn.LeakyReLU(0.1)))
            grown += growth
        self.netSix = nn.Sequential(_conv(grown, 2))
        self.names = names

    def forward(
        self, first: torch.Tensor, second: torch.Tensor, previous: tuple[torch.Tensor, torch.Tensor] | None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Returns ``(flow B 2 h w, features)`` at this level."""
        if previous is None:
            features = leaky(correlation(first, second))
        else:
            previous_flow, previous_features = previous
            flow = self.netUpflow(previous_flow)
            upsampled = self.netUpfeat(previous_features)
            volume = leaky(correlation(first, backwarp(second, flow * BACKWARP_SCALE[self.level])))
            features = torch.cat([volume, first, flow, upsampled], dim=1)
        for name in self.names:
            features = torch.cat([getattr(self, name)(features), features], dim=1)
        return self.netSix(features), features


class Refiner(nn.Module):
    """Context network: dilated convs that add a residual to the level-2 flow."""

    def __init__(self) -> None:
        super().__init__()
        in_channels = decoder_input_channels(2) + sum(DECODER_GROWTH)
        widths = (128, 128, 128, 96, 64, 32)
        dilations = (1, 2, 4, 8, 16, 1)
        layers: list[nn.Module] = []
        for width, dilation in zip(widths, dilations):
            layers += [_conv(in_channels, width, dilation=dilation), nn.LeakyReLU(0.1)]
            in_channels = width
        layers.append(_conv(in_channels, 2))
        self.netMain = nn.Sequential(*layers)

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        return self.netMain(features)


PWCNET_FILE_NAME = "network-default.pytorch"


class PWCNet(nn.Module):
    """Optical flow from ``first`` to ``second``.

    Input: two ``B 3 H W`` frames in ``[0, 1]`` (FloLPIPS feeds RGB). Output: ``B 2 H W`` flow in pixels
    (x then y). Frames are resized to a multiple of 64 inside and the flow is scaled back.
    """

    def __init__(self) -> None:
        super().__init__()
        self.netExtractor = Extractor()
        self.netTwo = Decoder(2)
        self.netThr = Decoder(3)
        self.netFou = Decoder(4)
        self.netFiv = Decoder(5)
        self.netSix = Decoder(6)
        self.netRefiner = Refiner()

    def forward(self, first: torch.Tensor, second: torch.Tensor) -> torch.Tensor:
        height, width = first.shape[-2:]
        padded_height = int(math.ceil(height / SIZE_MULTIPLE) * SIZE_MULTIPLE)
        padded_width = int(math.ceil(width / SIZE_MULTIPLE) * SIZE_MULTIPLE)
        both = F.interpolate(
            torch.cat([first, second], dim=0), size=(padded_height, padded_width), mode="bilinear", align_corners=False
        )
        pyramid_first, pyramid_second = zip(*(level.chunk(2, dim=0) for level in self.netExtractor(both)))
        estimate = None
        for level, decoder in zip((6, 5, 4, 3, 2), (self.netSix, self.netFiv, self.netFou, self.netThr, self.netTwo)):
            estimate = decoder(pyramid_first[level - 1], pyramid_second[level - 1], estimate)
        flow, features = estimate
        flow = flow + self.netRefiner(features)
        flow = FLOW_SCALE * F.interpolate(flow, size=(height, width), mode="bilinear", align_corners=False)
        scale = torch.tensor([width / padded_width, height / padded_height], device=flow.device, dtype=flow.dtype)
        return flow * scale.view(1, 2, 1, 1)


def default_pwcnet_path() -> str:
    """Where PWC-Net weights are looked for when no path is given: torch hub's checkpoint folder."""
    return os.path.join(torch.hub.get_dir(), "checkpoints", PWCNET_FILE_NAME)


def load_pwcnet(path: str | None) -> PWCNet:
    """Build a PWC-Net in eval mode from a local ``network-default.pytorch`` (or an already renamed) state dict;
    ``path`` None looks in :func:`default_pwcnet_path`."""
    if path is None:
        path = default_pwcnet_path()
        if not os.path.isfile(path):
            raise FileNotFoundError(
                f"FloLPIPS needs PWC-Net weights: put {PWCNET_FILE_NAME} of sniklaus/pytorch-pwc at {path} or pass "
                "its path with --pwcnet_weights"
            )
    if not os.path.isfile(path):
        raise FileNotFoundError(f"PWC-Net weights file {path} does not exist (--pwcnet_weights)")
    state = torch.load(path, map_location="cpu", weights_only=True)
    renamed = {key.replace("module", "net"): value for key, value in state.items()}
    network = PWCNet()
    missing, unexpected = network.load_state_dict(renamed, strict=False)
    if missing or unexpected:
        raise KeyError(
            f"{path}: not a PWC-Net state dict (missing {missing[:3]}, unexpected {unexpected[:3]}); "
            "expected network-default.pytorch of sniklaus/pytorch-pwc"
        )
    return network.eval().requires_grad_(False)
