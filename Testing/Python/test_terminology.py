"""Standard terminology on every label: the table covers our label maps with real SNOMED CT codes, packages keep
it, and ``.seg.nrrd`` carries it in the form Slicer reads (checked through slicerio and Slicer's storage node)."""

from __future__ import annotations

import json
from importlib import resources
from pathlib import Path

import numpy as np
import pytest

from mrml_readers import read_seg_nrrd
from vococore.io import LabelInfo, read_volume, write_labelmap
from vococore.io.labels import make_labels, no_standard_code, standard_term

MODELS_JSON = Path(__file__).resolve().parents[2] / "VoCoSlicer" / "Resources" / "Models" / "models.json"
# SNOMED CT codes in the table that DICOM PS3.16 (pydicom's copy of its code lists) does not list; for these the
# TotalSegmentator mapping is the only source (see terminology.json "about").
NOT_IN_PS3_16 = {"65985001", "68786006", "110765007", "181674001", "78333006", "75297007", "244849004", "68455001",
                 "48535007", "78247007", "25888004", "25523003", "15339008", "59558009", "24915002", "5953002",
                 "22565002", "77644006", "58830002", "43993008"}


def _label_names() -> list[str]:
    totalseg = json.loads(resources.files("vococore.segmentation").joinpath("totalseg_v2_labels.json").read_text())
    vocomni = json.loads(MODELS_JSON.read_text())["labels"]["VoComni"]
    return list(totalseg["labels"].values()) + list(vocomni.values())


def test_every_label_of_our_label_maps_has_a_standard_code_known_to_dicom():
    from pydicom.sr import _concepts_dict

    snomed = {code for group in _concepts_dict.concepts["SCT"].values() for code in group}
    names = _label_names()
    assert len(names) == 117 + 20
    for name in names:
        found = standard_term(name)
        if name.endswith("(pseudo-label)"):  # the label map says that no standard code exists
            assert found is None and "no standard code names this class" in no_standard_code(name), name
            continue
        assert found is not None and no_standard_code(name) == "", name
        term, color = found
        codes = [c for c in (term.category, term.type, term.type_modifier, term.region, term.region_modifier) if c]
        assert all(c[0] == "SCT" for c in codes), name
        unknown = {c[1] for c in codes} - snomed - NOT_IN_PS3_16
        assert not unknown, (name, unknown)
        assert term.category[1] in {"123037004", "49755003"}  # Anatomical Structure / Morphologically Altered
        assert all(0 <= c <= 1 for c in color)
        side = "left" if "left" in name.split("_") + name.split() else "right" if (
            "right" in name.split("_") + name.split()) else None
        if side and term.category[1] == "123037004" and side not in term.type[2].lower():  # not "right lung"
            assert term.type_modifier == ("SCT", {"left": "7771000", "right": "24028007"}[side], side.title()), name
    # the six VoComni pseudo-label tumour classes are uncoded (no invented code), and keep their colour
    assert sum(name.endswith("(pseudo-label)") for name in names) == 6
    tumour = make_labels({21: "liver tumor (pseudo-label)"})[0]
    assert tumour.terminology is None and np.allclose(np.array(tumour.color) * 255, (255, 0, 200), atol=0.02)
    assert standard_term("my lesion") is None and no_standard_code("my lesion") == ""


def test_make_labels_uses_the_terms_colour_unless_given():
    liver, other = make_labels({1: "liver", 2: "my lesion"})
    assert liver.terminology.type == ("SCT", "10200004", "Liver")
    assert np.allclose(np.array(liver.color) * 255, (221, 130, 101), atol=0.02)  # Slicer General Anatomy colour
    assert other.terminology is None
    assert make_labels({1: "liver"}, {1: (0.1, 0.2, 0.3)})[0].color == (0.1, 0.2, 0.3)


@pytest.fixture(scope="module")
def written(sample, tmp_path_factory):
    """A real labelmap (TotalSegmentator labels on the sample series grid) written as .seg.nrrd with coded labels."""
    from vococore.preprocessing.resample import resample_to_grid

    ct = read_volume(sample("TotalSegDICOM"))
    reference = resample_to_grid(read_volume(sample("TotalSegDICOMLabels")), ct).array
    labels = np.zeros(ct.shape, dtype=np.uint8)
    info = make_labels({1: "liver", 2: "adrenal_gland_right", 3: "my lesion"})
    labels[reference == 5] = 1
    labels[reference == 8] = 2
    labels[(reference == 1)] = 3
    path = write_labelmap(labels, ct, tmp_path_factory.mktemp("term") / "coded.seg.nrrd", info)
    return path, labels, info


def test_seg_nrrd_terminology_reads_back_in_slicerio(written):
    import slicerio

    path, labels, info = written
    seg = slicerio.read_segmentation(str(path))
    by_value = {s["labelValue"]: s for s in seg["segments"]}
    liver, adrenal = by_value[1]["terminology"], by_value[2]["terminology"]
    assert liver["category"] == ["SCT", "123037004", "Anatomical Structure"]
    assert liver["type"] == ["SCT", "10200004", "Liver"] and "typeModifier" not in liver
    assert adrenal["type"] == ["SCT", "23451007", "Adrenal gland"]
    assert adrenal["typeModifier"] == ["SCT", "24028007", "Right"]
    assert "terminology" not in by_value[3]  # no code exists for it: none is written
    assert np.array_equal(seg["voxels"], labels)


def test_seg_nrrd_terminology_reads_back_in_slicer(written, mrml):
    """Slicer's storage node loads the file and Slicer's terminology logic parses each segment's entry."""
    import slicer

    path, _, info = written
    segmentation = read_seg_nrrd(mrml.scene, path).GetSegmentation()
    logic = slicer.vtkSlicerTerminologiesModuleLogic()
    for label in info:
        segment = segmentation.GetSegment(f"Segment_{label.value}")
        assert segment.GetName() == label.name
        np.testing.assert_allclose(segment.GetColor(), label.color, atol=1e-5)
        entry = slicer.vtkSlicerTerminologyEntry()
        assert logic.DeserializeTerminologyEntry(segment.GetTerminology(), entry)
        category, kind = entry.GetCategoryObject(), entry.GetTypeObject()
        if label.terminology is None:  # nothing written: Slicer shows its default, generic Tissue
            assert kind.GetCodeValue() == "85756007"
            continue
        assert (category.GetCodingSchemeDesignator(), category.GetCodeValue()) == label.terminology.category[:2]
        assert (kind.GetCodingSchemeDesignator(), kind.GetCodeValue(), kind.GetCodeMeaning()) == label.terminology.type
        modifier = entry.GetTypeModifierObject()
        expected = label.terminology.type_modifier
        assert (modifier.GetCodeValue() or None) == (expected[1] if expected else None)


def test_package_keeps_terminology_and_old_packages_get_it_by_name():
    from vococore.segmentation.package import ModelPackage

    labels = make_labels({1: "kidney_left", 2: "my lesion"})
    stored = ModelPackage.from_json(ModelPackage(backbone=_spec(), labels=labels).to_json())
    assert stored.labels == labels
    old = ModelPackage(backbone=_spec(), labels=[LabelInfo(1, "kidney_left", (1.0, 0.0, 0.0))]).to_json()
    for item in old["labels"]:
        del item["terminology"]  # as written before labels carried terminology
    (label,) = ModelPackage.from_json(old).labels
    assert label.color == (1.0, 0.0, 0.0) and label.terminology.type_modifier[2] == "Left"


def _spec():
    from vococore.networks.backbones import BackboneSpec

    return BackboneSpec(arch="cnn", feature_size=4)
