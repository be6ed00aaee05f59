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


def lps_copy(sample, tmp_path):
    """The LAS-stored reference labels written on the LPS DICOM grid (same labels, other storage order).

    Built without the resampler that evaluate uses: the two grids are the same voxels with j reversed (checked
    here on the affines), so the LPS copy is the reference array flipped along j."""
    series = read_volume(sample("TotalSegDICOM"))
    reference = read_volume(sample("TotalSegDICOMLabels"))
    flip_j = np.diag([1.0, -1.0, 1.0, 1.0])
    flip_j[1, 3] = series.shape[1] - 1
    np.testing.assert_allclose(reference.affine @ flip_j, series.affine, atol=1e-3)
    path = write_labelmap(np.ascontiguousarray(reference.array[:, ::-1, :]), series, tmp_path / "labels_lps.nrrd")
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


def _brute_force_hd95(a: np.ndarray, b: np.ndarray, affine: np.ndarray) -> float:
    """HD95 by definition: surface voxels (a mask voxel with a 6-neighbour outside the mask or the grid), their
    centres in world mm, every pairwise distance, the 95th percentile each way, the larger of the two."""
    def surface(mask):
        padded = np.pad(mask, 1)
        pts = []
        for i, j, k in np.argwhere(mask) + 1:
            if not all(padded[i + di, j + dj, k + dk] for di, dj, dk in
                       ((1, 0, 0), (-1, 0, 0), (0, 1, 0), (0, -1, 0), (0, 0, 1), (0, 0, -1))):
                pts.append(affine[:3, :3] @ [i - 1, j - 1, k - 1] + affine[:3, 3])
        return np.array(pts)

    pa, pb = surface(a), surface(b)
    dist = np.sqrt(((pa[:, None, :] - pb[None, :, :]) ** 2).sum(-1))
    return max(np.percentile(dist.min(axis=1), 95), np.percentile(dist.min(axis=0), 95))


@pytest.mark.parametrize("grid", ["anisotropic", "sheared"])
def test_hd95_equals_the_definition(grid):
    """MONAI's metric (orthogonal grid) and our KD-tree search (sheared grid) both give the brute-force
    surface distances of irregular shapes; Dice is the overlap count formula."""
    from vococore.segmentation.evaluate import dice, hd95

    rng = np.random.default_rng(3)
    affine = np.diag([0.8, 1.1, 2.5, 1.0])
    affine[:3, 3] = [3.0, -4.0, 5.0]
    if grid == "sheared":
        affine[0, 2] = 0.9  # the k axis leans along x: not expressible as a spacing
    a = np.zeros((24, 22, 12), bool)
    b = np.zeros_like(a)
    a[4:16, 3:14, 2:9] = True
    b[7:21, 5:19, 3:11] = True
    a |= rng.random(a.shape) > 0.99
    b |= rng.random(b.shape) > 0.995
    assert hd95(a, b, affine) == pytest.approx(_brute_force_hd95(a, b, affine), abs=1e-4)
    assert hd95(a, a, affine) == 0.0
    assert dice(a, b) == pytest.approx(2 * (a & b).sum() / (a.sum() + b.sum()), abs=1e-6)
