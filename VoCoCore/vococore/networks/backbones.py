"""Backbones for VoCo and the segmentation models built on them.

``swin``: MONAI SwinUNETR (use_v2=True); the VoCo encoder is swinViT + encoder1/2/3/4/10 with the exact MONAI key
names, so its 145 tensors load into ``SwinUNETR`` and into the official loaders.
``cnn``: MONAI BasicUNet, whose encoder (conv_0, down_1..4) is cheap enough for CPU tests and demos at 32³.
Each encoder returns the pooled, concatenated multi-stage feature vector of voco-spec 2.1.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from vococore.utils.errors import VoCoError

ARCHITECTURES = ("swin", "cnn")
FEATURE_SIZES = {"B": 48, "L": 96, "H": 192}
SWIN_ENCODER_MODULES = ("swinViT", "encoder1", "encoder2", "encoder3", "encoder4", "encoder10")
CNN_ENCODER_MODULES = ("conv_0", "down_1", "down_2", "down_3", "down_4")


@dataclass
class BackboneSpec:
    """Which backbone: ``arch`` swin|cnn, ``feature_size`` (int, or B/L/H for swin), and for swin the
    MONAI 1.3.0 patch merging (``legacy_merging``, used by the official weights) and gradient checkpointing."""

    arch: str = "swin"
    feature_size: int | str = 48
    legacy_merging: bool = True
    use_checkpoint: bool = True
    in_channels: int = 1

    def __post_init__(self) -> None:
        if self.arch not in ARCHITECTURES:
            raise VoCoError(f"unknown backbone arch {self.arch!r}; choose one of {ARCHITECTURES}")
        if isinstance(self.feature_size, str):
            if self.feature_size not in FEATURE_SIZES:
                raise VoCoError(f"unknown feature size {self.feature_size!r}; use an int or one of "
                                f"{sorted(FEATURE_SIZES)}")
            self.feature_size = FEATURE_SIZES[self.feature_size]
        if self.arch == "swin" and self.feature_size % 12:
            raise VoCoError(f"swin feature_size must be a multiple of 12 (heads 3/6/12/24), got {self.feature_size}")

    @property
    def feature_dim(self) -> int:
        """Length of the pooled feature vector: 24·fs for swin (spec 2.1), 31·fs for the CNN."""
        return (24 if self.arch == "swin" else 31) * int(self.feature_size)

    @property
    def min_input(self) -> int:
        """Smallest crop edge (voxels) the network accepts; inputs must be multiples of it."""
        return 32 if self.arch == "swin" else 16


def _swinunetr(spec: BackboneSpec, out_channels: int) -> nn.Module:
    from monai.networks.nets import SwinUNETR

    from vococore.networks.legacy_merging import use_legacy_merging  # imports MONAI, so only when needed

    net = SwinUNETR(in_channels=spec.in_channels, out_channels=out_channels, feature_size=int(spec.feature_size),
                    use_v2=True, use_checkpoint=spec.use_checkpoint)
    if spec.legacy_merging:
        use_legacy_merging(net)
    return net


def _basic_unet(spec: BackboneSpec, out_channels: int) -> nn.Module:
    from monai.networks.nets import BasicUNet

    return BasicUNet(spatial_dims=3, in_channels=spec.in_channels, out_channels=out_channels,
                     features=_cnn_features(spec))


def _cnn_features(spec: BackboneSpec) -> tuple[int, ...]:
    """BasicUNet feature sizes per level for ``spec.feature_size`` f: (f, 2f, 4f, 8f, 16f, f)."""
    f = int(spec.feature_size)
    return (f, 2 * f, 4 * f, 8 * f, 16 * f, f)


class _PooledEncoder(nn.Module):
    """The encoder modules ``names`` of a segmentation ``net``; forward = each stage global-average-pooled,
    concatenated (voco-spec 2.1). Subclasses say which feature maps are the stages."""

    def __init__(self, spec: BackboneSpec, net: nn.Module, names: tuple[str, ...]) -> None:
        super().__init__()
        for name in names:
            setattr(self, name, getattr(net, name))
        self.spec, self.encoder_names = spec, names

    def encoder_modules(self) -> list[nn.Module]:
        """The modules the forward runs (a v1 encoder also carries its projector, which the forward does not)."""
        return [getattr(self, name) for name in self.encoder_names]

    def stages(self, x: torch.Tensor) -> list[torch.Tensor]:
        raise NotImplementedError

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.cat([s.mean(dim=(2, 3, 4)) for s in self.stages(x)], dim=1)


class SwinEncoder(_PooledEncoder):
    """The SwinUNETR encoder of VoCo: global-average-pooled enc0, enc1, enc2, enc3, dec4, concatenated."""

    def __init__(self, spec: BackboneSpec) -> None:
        super().__init__(spec, _swinunetr(spec, out_channels=1), SWIN_ENCODER_MODULES)

    def stages(self, x: torch.Tensor) -> list[torch.Tensor]:
        """The five feature maps VoCo pools (hidden state 3 is not used, as in the official code)."""
        hidden = self.swinViT(x, True)
        return [self.encoder1(x), self.encoder2(hidden[0]), self.encoder3(hidden[1]), self.encoder4(hidden[2]),
                self.encoder10(hidden[4])]


class CNNEncoder(_PooledEncoder):
    """The encoder half of MONAI BasicUNet, pooled per stage like the Swin encoder (for CPU-sized runs)."""

    def __init__(self, spec: BackboneSpec) -> None:
        super().__init__(spec, _basic_unet(spec, out_channels=1), CNN_ENCODER_MODULES)

    def stages(self, x: torch.Tensor) -> list[torch.Tensor]:
        """Feature maps at strides 1, 2, 4, 8, 16."""
        out = [self.conv_0(x)]
        for name in CNN_ENCODER_MODULES[1:]:
            out.append(getattr(self, name)(out[-1]))
        return out


def build_encoder(spec: BackboneSpec) -> nn.Module:
    """The VoCo encoder for ``spec``: input (B, 1, X, Y, Z) → pooled features (B, spec.feature_dim)."""
    return SwinEncoder(spec) if spec.arch == "swin" else CNNEncoder(spec)


def build_segmenter(spec: BackboneSpec, out_channels: int) -> nn.Module:
    """The full segmentation network for ``spec``, whose encoder keys equal :func:`build_encoder`'s."""
    return _swinunetr(spec, out_channels) if spec.arch == "swin" else _basic_unet(spec, out_channels)


def build_inference_segmenter(spec: BackboneSpec, out_channels: int) -> nn.Module:
    """The segmentation network for inference, same state-dict keys and outputs as :func:`build_segmenter`; for
    ``cnn`` the MONAI-free :class:`~vococore.networks.lean_unet.LeanBasicUNet` (importing MONAI costs more than a
    small CNN's whole inference, see that module)."""
    if spec.arch == "swin":
        return build_segmenter(spec, out_channels)
    from vococore.networks.lean_unet import LeanBasicUNet

    return LeanBasicUNet(spec.in_channels, out_channels, _cnn_features(spec))
