"""Inflated Inception-v1 (I3D, Carreira & Zisserman 2017) as VideoGPT's FVD uses it.

Module names and shapes follow the released VideoGPT state dict ``i3d_pretrained_400.pt`` (Kinetics-400), so
that file loads with ``strict=True``: ``Conv3d_1a_7x7.conv3d.weight``, ``Mixed_3b.b1b.bn.running_mean``, ...,
``logits.conv3d.bias``. Every convolution and max-pool pads "same" as TensorFlow does (the padding depends
on the input size, split with the smaller half in front); batch norm uses eps 1e-5 as VideoGPT's copy.
The output is the 400 logits averaged over the remaining time steps, which VideoGPT's FVD takes as the
feature of a clip.
"""

from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

# (output channels of b0, b1a, b1b, b2a, b2b, b3b) of each Inception block.
INCEPTION_BLOCKS = {
    "Mixed_3b": (192, (64, 96, 128, 16, 32, 32)),
    "Mixed_3c": (256, (128, 128, 192, 32, 96, 64)),
    "Mixed_4b": (480, (192, 96, 208, 16, 48, 64)),
    "Mixed_4c": (512, (160, 112, 224, 24, 64, 64)),
    "Mixed_4d": (512, (128, 128, 256, 24, 64, 64)),
    "Mixed_4e": (512, (112, 144, 288, 32, 64, 64)),
    "Mixed_4f": (528, (256, 160, 320, 32, 128, 128)),
    "Mixed_5b": (832, (256, 160, 320, 32, 128, 128)),
    "Mixed_5c": (832, (384, 192, 384, 48, 128, 128)),
}


def same_padding(sizes: tuple[int, int, int], kernel: tuple[int, int, int],
                 stride: tuple[int, int, int]) -> list[int]:
    """TensorFlow "same" padding of a ``T H W`` input, in ``F.pad`` order (w front, w back, h ..., t ...)."""
    pad: list[int] = []
    for size, k, s in reversed(list(zip(sizes, kernel, stride))):
        total = max(k - s, 0) if size % s == 0 else max(k - size % s, 0)
        pad += [total // 2, total - total // 2]
    return pad


class SamePadMaxPool3d(nn.Module):
    """3-D max pooling with TensorFlow "same" padding (zeros: inputs follow a ReLU)."""

    def __init__(self, kernel: tuple[int, int, int], stride: tuple[int, int, int]) -> None:
        super().__init__()
        self.kernel, self.stride = kernel, stride

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.pad(x, same_padding(tuple(x.shape[2:]), self.kernel, self.stride))
        return F.max_pool3d(x, self.kernel, self.stride)


class Unit3D(nn.Module):
    """Convolution ("same" padding) + batch norm + ReLU; the classifier head has a bias and neither of the rest."""

    def __init__(self, in_channels: int, out_channels: int, kernel: tuple[int, int, int] = (1, 1, 1),
                 stride: tuple[int, int, int] = (1, 1, 1), head: bool = False) -> None:
        super().__init__()
        self.kernel, self.stride, self.head = kernel, stride, head
        self.conv3d = nn.Conv3d(in_channels, out_channels, kernel, stride, bias=head)
        self.bn = nn.Identity() if head else nn.BatchNorm3d(out_channels, eps=1e-5, momentum=0.001)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.bn(self.conv3d(F.pad(x, same_padding(tuple(x.shape[2:]), self.kernel, self.stride))))
        return x if self.head else F.relu(x)


class InceptionModule(nn.Module):
    """Four branches concatenated on channels: 1x1; 1x1 -> 3x3x3; 1x1 -> 3x3x3; 3x3x3 max-pool -> 1x1."""

    def __init__(self, in_channels: int, widths: tuple[int, int, int, int, int, int]) -> None:
        super().__init__()
        self.b0 = Unit3D(in_channels, widths[0])
        self.b1a = Unit3D(in_channels, widths[1])
        self.b1b = Unit3D(widths[1], widths[2], (3, 3, 3))
        self.b2a = Unit3D(in_channels, widths[3])
        self.b2b = Unit3D(widths[3], widths[4], (3, 3, 3))
        self.b3a = SamePadMaxPool3d((3, 3, 3), (1, 1, 1))
        self.b3b = Unit3D(in_channels, widths[5])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.cat([self.b0(x), self.b1b(self.b1a(x)), self.b2b(self.b2a(x)), self.b3b(self.b3a(x))], dim=1)


class InceptionI3d(nn.Module):
    """I3D classifier; ``forward`` maps ``B 3 T H W`` clips in [-1, 1] (224x224 frames, T >= 9 so that one
    time step survives the 2x7x7 average pool) to ``B num_classes`` logits averaged over time."""

    def __init__(self, num_classes: int = 400, in_channels: int = 3) -> None:
        super().__init__()
        self.Conv3d_1a_7x7 = Unit3D(in_channels, 64, (7, 7, 7), (2, 2, 2))
        self.MaxPool3d_2a_3x3 = SamePadMaxPool3d((1, 3, 3), (1, 2, 2))
        self.Conv3d_2b_1x1 = Unit3D(64, 64)
        self.Conv3d_2c_3x3 = Unit3D(64, 192, (3, 3, 3))
        self.MaxPool3d_3a_3x3 = SamePadMaxPool3d((1, 3, 3), (1, 2, 2))
        self.Mixed_3b = InceptionModule(*INCEPTION_BLOCKS["Mixed_3b"])
        self.Mixed_3c = InceptionModule(*INCEPTION_BLOCKS["Mixed_3c"])
        self.MaxPool3d_4a_3x3 = SamePadMaxPool3d((3, 3, 3), (2, 2, 2))
        self.Mixed_4b = InceptionModule(*INCEPTION_BLOCKS["Mixed_4b"])
        self.Mixed_4c = InceptionModule(*INCEPTION_BLOCKS["Mixed_4c"])
        self.Mixed_4d = InceptionModule(*INCEPTION_BLOCKS["Mixed_4d"])
        self.Mixed_4e = InceptionModule(*INCEPTION_BLOCKS["Mixed_4e"])
        self.Mixed_4f = InceptionModule(*INCEPTION_BLOCKS["Mixed_4f"])
        self.MaxPool3d_5a_2x2 = SamePadMaxPool3d((2, 2, 2), (2, 2, 2))
        self.Mixed_5b = InceptionModule(*INCEPTION_BLOCKS["Mixed_5b"])
        self.Mixed_5c = InceptionModule(*INCEPTION_BLOCKS["Mixed_5c"])
        self.avg_pool = nn.AvgPool3d((2, 7, 7), stride=(1, 1, 1))
        self.dropout = nn.Dropout(0.5)
        self.logits = Unit3D(1024, num_classes, head=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for name, module in self.named_children():
            if name in ("avg_pool", "dropout", "logits"):
                break
            x = module(x)
        x = self.logits(self.dropout(self.avg_pool(x)))
        return x.flatten(3).mean(dim=(2, 3))
