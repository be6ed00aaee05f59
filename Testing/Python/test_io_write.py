"""Labelmap output: write then read gives the same voxels and geometry in each format; .seg.nrrd keeps segment
names and colours for slicerio and Slicer; nothing is overwritten or left half-written."""

from __future__ import annotations

import numpy as np
import pytest

from vococore.utils.errors import VoCoError
from mrml_readers import read_seg_nrrd
from vococore.io import LabelInfo, read_volume, write_labelmap

LABELS = [LabelInfo(1, "spleen", (0.62, 0.42, 0.28)), LabelInfo(5, "liver", (0.87, 0.51, 0.40)),
          LabelInfo(52, "aorta", (0.88, 0.18, 0.16))]


@pytest.fixture(scope="module")
def dicom_labels(sample):
    """Real labels on the LPS DICOM grid (the reference geometry) with a few organs."""
    from vococore.preprocessing.resample import resample_to_grid

    ct = read_volume(sample("TotalSegDICOM"))
    lab = resample_to_grid(read_volume(sample("TotalSegDICOMLabels")), ct).array
    keep = np.isin(lab, [1, 5, 52])
    return ct, np.where(keep, lab, 0).astype(np.uint8)


@pytest.mark.parametrize("name", ["seg.nii.gz", "seg.nii", "seg.nrrd", "seg.seg.nrrd", "seg.mha"])
def test_labelmap_round_trip(dicom_labels, tmp_path, name):
    ct, labels = dicom_labels
    path = write_labelmap(labels, ct, tmp_path / name, LABELS)
    back = read_volume(path)
    assert np.array_equal(back.array, labels)
    np.testing.assert_allclose(back.affine, ct.affine, atol=1e-4)
    assert sorted(p.name for p in tmp_path.iterdir()) == [name]  # no temp file left


def test_round_trip_on_ras_nifti_grid(sample, tmp_path):
    ct = read_volume(sample("TotalSegCT"))
    labels = read_volume(sample("TotalSegCTLabels")).array
    for name in ("a.seg.nrrd", "a.nrrd", "a.nii.gz"):
        back = read_volume(write_labelmap(labels, ct, tmp_path / name))
        assert np.array_equal(back.array, labels) and np.allclose(back.affine, ct.affine, atol=1e-4), name


def test_seg_nrrd_segments_survive_in_slicerio(dicom_labels, tmp_path):
    import slicerio

    ct, labels = dicom_labels
    path = write_labelmap(labels, ct, tmp_path / "organs.seg.nrrd", LABELS)
    seg = slicerio.read_segmentation(str(path))
    by_value = {s["labelValue"]: s for s in seg["segments"]}
    assert sorted(by_value) == [1, 5, 52]
    for info in LABELS:
        assert by_value[info.value]["name"] == info.name
        np.testing.assert_allclose(by_value[info.value]["color"], info.color, atol=1e-5)
    voxels = seg["voxels"]
    assert voxels.shape == labels.shape and np.array_equal(voxels, labels)


def test_seg_nrrd_loads_in_slicer_segmentation_node(dicom_labels, tmp_path, mrml):
    """Slicer's own segmentation storage node reads the file: names, colours and voxel counts per segment."""
    ct, labels = dicom_labels
    path = write_labelmap(labels, ct, tmp_path / "organs.seg.nrrd", LABELS)
    segmentation = read_seg_nrrd(mrml.scene, path).GetSegmentation()
    assert segmentation.GetNumberOfSegments() == 3
    for info in LABELS:
        segment = segmentation.GetSegment(f"Segment_{info.value}")
        assert segment.GetName() == info.name
        np.testing.assert_allclose(segment.GetColor(), info.color, atol=1e-5)


def test_refuses_to_overwrite_and_wrong_grid(dicom_labels, tmp_path):
    ct, labels = dicom_labels
    path = tmp_path / "out.nii.gz"
    path.write_bytes(b"user data")
    with pytest.raises(VoCoError, match="already exists") as err:
        write_labelmap(labels, ct, path)
    assert str(path) in str(err.value) and path.read_bytes() == b"user data"
    write_labelmap(labels, ct, path, overwrite=True)
    assert np.array_equal(read_volume(path).array, labels)
    with pytest.raises(VoCoError, match="differs from the reference grid"):
        write_labelmap(labels[:, :, :5], ct, tmp_path / "bad.nii.gz")
    assert not (tmp_path / "bad.nii.gz").exists()
