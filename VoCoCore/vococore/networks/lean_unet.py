"""MONAI's BasicUNet as vococore builds it (``arch: cnn``), in plain PyTorch modules with the same state-dict keys,
so that inference with a small CNN package does not import MONAI.

Why not MONAI here: ``import monai`` imports every MONAI submodule and, through them, matplotlib and
scipy.signal/stats/ndimage; on the project's 2-core VM that is about 4-5 s of a 7-8 s ``vococore infer`` of the
small example CT with the 6 mm demo model, while the network itself takes under 1 s (BENCHMARKS.md, "Small CNN
inference with a trained model"). Training and the Swin models keep MONAI's classes. The layers are those of
MONAI 1.6's ``BasicUNet`` defaults (instance norm with affine, LeakyReLU 0.1, no dropout, transposed-convolution
upsampling, replicate padding where a pooled size was odd); ``Testing/Python/test_lean_unet.py`` checks the output
against MONAI's network with the trained demo weights.
"""

from __future__ import annotations

from collections import OrderedDict

import torch
import torch.nn.functional as F
from torch import nn


class _ConvBlock(nn.Module):
    """3×3×3 convolution (zero padding 1) then instance norm, then LeakyReLU 0.1: keys ``conv.*``, ``adn.N.*``."""

    def __init__(self, cin: int, cout: int) -> None:
        super().__init__()
        self.conv = nn.Conv3d(cin, cout, kernel_size=3, padding=1)
        self.adn = nn.Sequential(OrderedDict(N=nn.InstanceNorm3d(cout, affine=True)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.leaky_relu(self.adn(self.conv(x)), 0.1, inplace=True)


def _two_conv(cin: int, cout: int) -> nn.Sequential:
    """Two convolution blocks, keys ``conv_0``, ``conv_1``."""
    return nn.Sequential(OrderedDict(conv_0=_ConvBlock(cin, cout), conv_1=_ConvBlock(cout, cout)))


class _Down(nn.Module):
    """2× max pooling then two convolution blocks (keys ``convs.*``)."""

    def __init__(self, cin: int, cout: int) -> None:
        super().__init__()
        self.convs = _two_conv(cin, cout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.convs(F.max_pool3d(x, 2))


class _Up(nn.Module):
    """2× transposed convolution (keys ``upsample.deconv.*``), replicate-padded by one voxel along each axis where
    the skip features are larger (an odd size before pooling), concatenated after the skip features, then two
    convolution blocks (keys ``convs.*``)."""

    def __init__(self, cin: int, cskip: int, cout: int, halves: bool = True) -> None:
        super().__init__()
        cup = cin // 2 if halves else cin
        self.upsample = nn.Sequential(OrderedDict(deconv=nn.ConvTranspose3d(cin, cup, kernel_size=2, stride=2)))
        self.convs = _two_conv(cskip + cup, cout)

    def forward(self, x: torch.Tensor, skip: torch.Tensor) -> torch.Tensor:
        up = self.upsample(x)
        pad: list[int] = []
        for axis in (4, 3, 2):  # F.pad lists the last axis first
            pad += [0, 1 if skip.shape[axis] != up.shape[axis] else 0]
        if any(pad):
            up = F.pad(up, pad, mode="replicate")
        return self.convs(torch.cat([skip, up], dim=1))


class LeanBasicUNet(nn.Module):
    """The 3D BasicUNet of ``features`` (6 numbers, as vococore's ``(f, 2f, 4f, 8f, 16f, f)``), input
    (B, in_channels, X, Y, Z) → logits (B, out_channels, X, Y, Z); loads MONAI ``BasicUNet`` state dicts."""

    def __init__(self, in_channels: int, out_channels: int, features: tuple[int, ...]) -> None:
        super().__init__()
        f = features
        if len(f) != 6:
            raise ValueError(f"BasicUNet needs 6 feature sizes, got {len(f)}")
        self.conv_0 = _two_conv(in_channels, f[0])
        for i in range(1, 5):
            setattr(self, f"down_{i}", _Down(f[i - 1], f[i]))
        self.upcat_4 = _Up(f[4], f[3], f[3])
        self.upcat_3 = _Up(f[3], f[2], f[2])
        self.upcat_2 = _Up(f[2], f[1], f[1])
        self.upcat_1 = _Up(f[1], f[0], f[5], halves=False)
        self.final_conv = nn.Conv3d(f[5], out_channels, kernel_size=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        skips = [self.conv_0(x)]
        for i in range(1, 5):
            skips.append(getattr(self, f"down_{i}")(skips[-1]))
        u = skips[4]
        for i in (4, 3, 2, 1):
            u = getattr(self, f"upcat_{i}")(u, skips[i - 1])
        return self.final_conv(u)
