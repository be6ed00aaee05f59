"""Evaluation in world coordinates: the same labels stored LPS and LAS score perfectly; known shifts give the
expected HD95 in millimetres; missing labels are reported as such."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest

from seg_model import TOTALSEG, run_cli
from vococore.segmentation.evaluate import evaluate
from vococore.io import read_volume, write_labelmap
from vococore.preprocessing.resample import resample_to_grid


def lps_copy(sample, tmp_path):
    """The LAS-stored reference labels written on the LPS DICOM grid (same labels, other storage order)."""
    series = read_volume(sample("TotalSegDICOM"))
    reference = read_volume(sample("TotalSegDICOMLabels"))
    on_series = resample_to_grid(reference, series)
    path = write_labelmap(on_series.array, series, tmp_path / "labels_lps.nrrd")
    return path, reference, series


def test_same_labels_in_lps_and_las_files_score_perfectly(sample, tmp_path):
    path, reference, series = lps_copy(sample, tmp_path)
    assert read_volume(path).orientation == "LPS" and reference.orientation == "LAS"
    assert not np.array_equal(read_volume(path).array, reference.array)  # the arrays differ, the labels do not
    proc = run_cli("evaluate", "--pred", str(path), "--ref", str(sample("TotalSegDICOMLabels")), "--json",
                   "--labels", "5", "1", "--label-table", "totalseg")
    result = json.loads(proc.stdout)
    assert [(s["name"], s["dice"], s["hd95_mm"]) for s in result["labels"]] == [("liver", 1.0, 0.0),
                                                                              ("spleen", 1.0, 0.0)]


def test_shift_gives_hd95_in_mm_and_missing_labels(sample, tmp_path):
    path, reference, series = lps_copy(sample, tmp_path)
    pred = read_volume(path)
    shifted = pred.with_array(np.roll(pred.array, 3, axis=2))  # 3 slices of 2 mm
    liver = evaluate(shifted, reference, labels=[TOTALSEG["liver"]])[0]
    assert 0.5 < liver.dice < 1.0
    assert 2.0 <= liver.hd95_mm <= 6.0 + 1e-3  # no surface point moved more than the 6 mm shift
    # one-voxel labels 3 voxels apart along each axis: HD95 is exactly 3 voxel sizes of that axis, in mm
    for axis, size in enumerate(series.spacing):
        a, b = np.zeros(series.shape, np.uint8), np.zeros(series.shape, np.uint8)
        a[100, 200, 5] = 1
        b[(100, 200, 5)[:axis] + ((100, 200, 5)[axis] + 3,) + (100, 200, 5)[axis + 1:]] = 1
        score = evaluate(series.with_array(a), series.with_array(b), labels=[1])[0]
        assert score.dice == 0.0 and math.isclose(score.hd95_mm, 3 * size, rel_tol=1e-5), (axis, score)
    no_spleen = pred.with_array(np.where(pred.array == TOTALSEG["spleen"], 0, pred.array))
    spleen, absent = evaluate(no_spleen, reference, labels=[TOTALSEG["spleen"], 250])
    assert spleen.dice == 0.0 and spleen.hd95_mm == math.inf and spleen.pred_voxels == 0
    assert math.isnan(absent.dice) and absent.ref_voxels == 0


def test_hd95_distance_transform_equals_brute_force_search():
    """The fast path (distance transforms on orthogonal grids) gives the brute-force surface distances, with
    anisotropic spacing and irregular shapes."""
    from vococore.segmentation.evaluate import _nearest_distances, hd95, surface_points

    rng = np.random.default_rng(3)
    affine = np.diag([0.8, 1.1, 2.5, 1.0])
    affine[:3, 3] = [3.0, -4.0, 5.0]
    a = np.zeros((40, 36, 20), bool)
    b = np.zeros_like(a)
    a[8:30, 5:25, 3:15] = True
    b[12:35, 8:30, 5:18] = True
    a |= rng.random(a.shape) > 0.995
    b |= rng.random(b.shape) > 0.997
    pa, pb = surface_points(a, affine), surface_points(b, affine)
    brute = max(np.percentile(_nearest_distances(x, y), 95) for x, y in ((pa, pb), (pb, pa)))
    assert hd95(a, b, affine) == pytest.approx(brute, abs=1e-4)
    assert hd95(a, a, affine) == 0.0
