"""Model packages: one safetensors file with weights, architecture, preprocessing, ROI and labels."""

from __future__ import annotations

import json

import pytest
import torch

from vococore.utils.errors import VoCoError
from vococore.io.labels import LabelInfo
from vococore.networks.backbones import BackboneSpec, build_segmenter
from vococore.networks.legacy_merging import LegacyPatchMerging
from vococore.segmentation.package import ModelPackage, load_package, read_package_info, save_package
from vococore.preprocessing.preprocessor import PreprocessConfig

LABELS = [LabelInfo(1, "liver", (0.8, 0.4, 0.3)), LabelInfo(2, "spleen", (0.6, 0.2, 0.7))]


def make(arch: str = "swin", fs: int = 12) -> tuple[torch.nn.Module, ModelPackage]:
    torch.manual_seed(0)
    spec = BackboneSpec(arch=arch, feature_size=fs, legacy_merging=True, use_checkpoint=False)
    package = ModelPackage(backbone=spec, labels=LABELS, roi_size=(64, 64, 64), overlap=0.25,
                           preprocess=PreprocessConfig(spacing=(2.0, 2.0, 3.0), hu_range=(-100.0, 200.0)))
    return build_segmenter(spec, 3).eval(), package


@pytest.mark.parametrize("arch,fs,roi", [("swin", 12, 64), ("cnn", 4, 32)])
def test_round_trip_same_outputs_and_metadata(tmp_path, arch, fs, roi):
    model, package = make(arch, fs)
    path = save_package(model, package, tmp_path / "m.vocomodel")
    loaded, info = load_package(path)
    assert info.backbone.arch == arch and info.backbone.feature_size == fs and info.backbone.legacy_merging
    assert info.labels == LABELS and info.out_channels == 3 and info.roi_size == (64, 64, 64)
    assert info.preprocess.spacing == (2.0, 2.0, 3.0) and info.preprocess.hu_range == (-100.0, 200.0)
    assert info.overlap == 0.25 and len(info.weights_sha256) == 64 and info.vococore_version
    if arch == "swin":  # the recorded MONAI 1.3.0 merging is rebuilt
        assert sum(isinstance(m, LegacyPatchMerging) for m in loaded.modules()) == 4
    original = model.state_dict()
    assert all(torch.equal(original[k], v) for k, v in loaded.state_dict().items())
    if arch == "cnn":  # a forward pass is cheap enough here to check outputs too
        x = torch.rand(1, 1, roi, roi, roi)
        with torch.no_grad():
            assert torch.allclose(model(x), loaded(x), atol=1e-5)


def test_damaged_weights_detected_and_no_overwrite(tmp_path):
    model, package = make("cnn", 4)
    path = save_package(model, package, tmp_path / "m.vocomodel")
    with pytest.raises(VoCoError, match="already exists"):
        save_package(model, package, path)
    raw = bytearray(path.read_bytes())
    raw[-10] ^= 0xFF  # flip bits inside the last tensor
    path.write_bytes(bytes(raw))
    assert read_package_info(path).labels == LABELS  # the header is intact
    with pytest.raises(VoCoError, match="SHA-256"):
        load_package(path)


def test_foreign_files_refused(tmp_path):
    from safetensors.torch import save_file

    save_file({"w": torch.zeros(2)}, str(tmp_path / "plain.safetensors"))
    with pytest.raises(VoCoError, match="without vococore package metadata"):
        load_package(tmp_path / "plain.safetensors")
    torch.save({"w": torch.zeros(2)}, tmp_path / "x.pt")
    with pytest.raises(VoCoError, match=str(tmp_path / "x.pt")):
        load_package(tmp_path / "x.pt")
    model, package = make("cnn", 4)
    bad = json.loads(json.dumps(package.to_json()))
    bad["labels"][1]["value"] = 5
    with pytest.raises(VoCoError, match="channels 1..2"):
        ModelPackage.from_json(bad)
