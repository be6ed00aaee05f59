"""DICOM SEG from ``vococore infer``: references the input series, carries the package's segments and codes, and
its masks are our labelmap voxel for voxel, read back by highdicom, pydicom and dcmqi's ``segimage2itkimage``."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from dicom_seg_helpers import seg_on_grid, series_with_uids
from seg_model import run_cli, trained_run
from vococore.io import read_volume
from vococore.segmentation.package import read_package_info


@pytest.fixture(scope="module")
def series(sample, tmp_path_factory) -> Path:
    return series_with_uids(sample("TotalSegDICOM"), tmp_path_factory.mktemp("dicom") / "series")


@pytest.fixture(scope="module")
def inferred(series, tmp_path_factory):
    """One DICOM SEG and one NIfTI labelmap of the same model on the same series, both through the CLI."""
    package = trained_run() / "best.vocomodel"
    out = tmp_path_factory.mktemp("seg")
    run_cli("infer", "--model", str(package), "--input", str(series), "--output", str(out / "pred.dcm"),
            "--overlap", "0.25")
    run_cli("infer", "--model", str(package), "--input", str(series), "--output",
            str(out / "pred.nii.gz"), "--overlap", "0.25")
    return package, out / "pred.dcm", read_volume(out / "pred.nii.gz")


def test_references_segments_codes_and_algorithm(inferred, series):
    import highdicom as hd
    import pydicom

    package_path, seg_path, _ = inferred
    package = read_package_info(package_path)
    sources = [pydicom.dcmread(f, stop_before_pixels=True) for f in sorted(series.iterdir())]
    ds = pydicom.dcmread(seg_path)
    assert ds.Modality == "SEG" and ds.SOPClassUID == "1.2.840.10008.5.1.4.1.1.66.4"
    assert ds.StudyInstanceUID == sources[0].StudyInstanceUID
    assert ds.FrameOfReferenceUID == sources[0].FrameOfReferenceUID
    (referenced,) = ds.ReferencedSeriesSequence
    assert referenced.SeriesInstanceUID == sources[0].SeriesInstanceUID
    assert ({item.ReferencedSOPInstanceUID for item in referenced.ReferencedInstanceSequence}
            == {s.file_meta.MediaStorageSOPInstanceUID for s in sources})
    assert len(ds.SegmentSequence) == len(package.labels) == 4
    for item, label in zip(ds.SegmentSequence, package.labels):
        term = label.terminology
        assert item.SegmentLabel == label.name
        assert item.SegmentedPropertyCategoryCodeSequence[0].CodeValue == term.category[1] == "123037004"
        type_item = item.SegmentedPropertyTypeCodeSequence[0]
        assert (type_item.CodingSchemeDesignator, type_item.CodeValue, type_item.CodeMeaning) == term.type
        if term.type_modifier:  # kidneys: laterality
            assert type_item.SegmentedPropertyTypeModifierCodeSequence[0].CodeValue == term.type_modifier[1]
        (algorithm,) = item.SegmentationAlgorithmIdentificationSequence
        assert algorithm.AlgorithmVersion.startswith("VoCoSlicer ")
        assert package.weights_sha256 in algorithm.AlgorithmParameters
    assert {(d.SegmentLabel, d.SegmentedPropertyTypeCodeSequence[0].CodeValue)
            for d in hd.seg.segread(seg_path).SegmentSequence} == {("liver", "10200004"), ("spleen", "78961009"),
                                                                     ("kidney_right", "64033007"),
                                                                     ("kidney_left", "64033007")}


def test_masks_equal_our_labelmap_in_world_coordinates(inferred):
    """highdicom's volume runs slices in the SEG's own order (here inferior-first, flipped against our array):
    every SEG voxel centre is mapped to our grid through the two affines and compared."""
    _, seg_path, ours = inferred
    on_ours, numbers = seg_on_grid(seg_path, ours)
    assert numbers == {"liver": 1, "spleen": 2, "kidney_right": 3, "kidney_left": 4}
    assert np.array_equal(on_ours, ours.array)
    assert (ours.array == 1).sum() > 100_000  # the liver is there: the comparison is not of empty masks


@pytest.mark.skipif(shutil.which("segimage2itkimage", path=str(Path(sys.executable).parent)) is None,
                    reason="dcmqi not installed (pip install dcmqi)")
def test_dcmqi_reads_it_back_onto_the_source_grid(inferred, tmp_path):
    """An independent C++ reader: dcmqi writes one image per segment; each equals our label on the source grid."""
    import json

    _, seg_path, ours = inferred
    tool = shutil.which("segimage2itkimage", path=str(Path(sys.executable).parent))
    proc = subprocess.run([tool, "--inputDICOM", str(seg_path), "--outputDirectory", str(tmp_path), "-t", "nrrd"],
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    meta = json.loads((tmp_path / "meta.json").read_text())
    segments = {s["SegmentLabel"]: s for group in meta["segmentAttributes"] for s in group}
    assert sorted(segments) == ["kidney_left", "kidney_right", "liver", "spleen"]
    assert segments["kidney_left"]["SegmentedPropertyTypeModifierCodeSequence"]["CodeMeaning"] == "Left"
    for number, name in enumerate(("liver", "spleen", "kidney_right", "kidney_left"), start=1):
        image = read_volume(tmp_path / f"{number}.nrrd")
        assert image.shape == ours.shape and np.allclose(image.affine, ours.affine, atol=1e-3), name
        assert np.array_equal(image.array > 0, ours.array == number), name


def test_refuses_non_dicom_input_and_series_without_uids(sample, tmp_path):
    package = trained_run() / "best.vocomodel"
    nifti = run_cli("infer", "--model", str(package), "--input", str(sample("TotalSegCT")), "--output",
                    str(tmp_path / "a.dcm"), check=False)
    assert nifti.returncode == 2 and "Traceback" not in nifti.stderr
    assert "DICOM SEG needs a DICOM series as input" in nifti.stderr and "example_ct.nii.gz" in nifti.stderr
    # the sample series as published: its anonymiser emptied the Study and Series UIDs that a SEG must reference
    bare = run_cli("infer", "--model", str(package), "--input", str(sample("TotalSegDICOM")), "--format",
                   "dicom-seg", "--output", str(tmp_path), check=False)
    assert bare.returncode == 2 and "has no StudyInstanceUID" in bare.stderr and "Traceback" not in bare.stderr
    assert len(bare.stderr.strip().splitlines()) == 1 and list(tmp_path.iterdir()) == []


def test_uncoded_pseudo_label_gets_what_slicer_gives_an_uncoded_segment_and_says_why(series, sample, tmp_path):
    """A pseudo-label tumour class has no standard code: its segment is coded as Slicer codes a segment nobody
    coded (read from slicer-core's own new vtkSegment), the SEG says why, and the masks still round-trip."""
    import highdicom as hd
    import slicer

    from vococore.io.dicom_seg import Algorithm, source_files, write_dicom_seg
    from vococore.io.labels import make_labels
    from vococore.preprocessing.resample import resample_to_grid

    ct = read_volume(series)
    liver = resample_to_grid(read_volume(sample("TotalSegDICOMLabels")), ct).array == 5
    lo, hi = np.argwhere(liver).min(axis=0), np.argwhere(liver).max(axis=0)
    box = np.zeros_like(liver)
    box[tuple(slice(a + (b - a) // 3, b - (b - a) // 3) for a, b in zip(lo, hi))] = True
    labels = liver.astype(np.uint8)
    labels[liver & box] = 2
    assert (labels == 2).sum() > 1000
    out = write_dicom_seg(labels, ct, source_files(series), tmp_path / "uncoded.dcm",
                          make_labels({1: "liver", 2: "liver tumor (pseudo-label)"}), Algorithm("test", "VoCoSlicer 0"))
    # Slicer's terminology string: context~category~type~modifier~anatomic context~region~region modifier
    default = slicer.vtkSegment().GetTerminology().split("~")
    slicer_category, slicer_type = (tuple(default[i].split("^")) for i in (1, 2))
    coded, uncoded = hd.seg.segread(out).SegmentSequence
    assert coded.SegmentedPropertyTypeCodeSequence[0].CodeValue == "10200004" and "SegmentDescription" not in coded
    category, kind = uncoded.SegmentedPropertyCategoryCodeSequence[0], uncoded.SegmentedPropertyTypeCodeSequence[0]
    assert uncoded.SegmentLabel == "liver tumor (pseudo-label)"
    assert (category.CodingSchemeDesignator, category.CodeValue, category.CodeMeaning) == slicer_category
    assert (kind.CodingSchemeDesignator, kind.CodeValue, kind.CodeMeaning) == slicer_type
    assert uncoded.SegmentDescription.startswith("Uncoded: VoComni pseudo-label")
    assert "no standard code names this class" in uncoded.SegmentDescription
    decoded, numbers = seg_on_grid(out, ct)
    assert numbers == {"liver": 1, "liver tumor (pseudo-label)": 2} and np.array_equal(decoded, labels)
