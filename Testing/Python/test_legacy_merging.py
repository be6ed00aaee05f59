"""The MONAI 1.3.0 patch merging reaches every merging layer of a real SwinUNETR, or the run stops."""

from __future__ import annotations

import pytest
from monai.networks.nets import SwinUNETR
from monai.networks.nets.swin_unetr import PatchMerging

from vococore.networks.backbones import BackboneSpec, build_encoder
from vococore.networks.legacy_merging import LegacyPatchMerging, use_legacy_merging
from vococore.utils.errors import VoCoError


def test_every_merging_layer_switched():
    encoder = build_encoder(BackboneSpec(arch="swin", feature_size=12, legacy_merging=True, use_checkpoint=False))
    layers = [name for name, m in encoder.named_modules() if isinstance(m, PatchMerging)]
    assert len(layers) == 4 and all(isinstance(encoder.get_submodule(n), LegacyPatchMerging) for n in layers)


def test_a_merging_class_it_does_not_know_stops_the_run():
    """A future MONAI that merges with another class would leave that layer in the new order: refused."""

    class OtherMerging(PatchMerging):
        pass

    net = SwinUNETR(in_channels=1, out_channels=2, feature_size=12, use_v2=True)
    net.swinViT.layers3[0].downsample.__class__ = OtherMerging
    with pytest.raises(VoCoError, match="applied to 3 of the 4 merging layers"):
        use_legacy_merging(net)
