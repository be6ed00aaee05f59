"""Networks: SwinUNETR (B/L/H) and small CNN backbones for VoCo, and segmentation models sharing their encoders."""

from vococore.networks.backbones import (
    ARCHITECTURES,
    FEATURE_SIZES,
    BackboneSpec,
    build_encoder,
    build_segmenter,
)

__all__ = ["ARCHITECTURES", "FEATURE_SIZES", "BackboneSpec", "build_encoder", "build_segmenter"]
