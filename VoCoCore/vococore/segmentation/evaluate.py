"""Compare a predicted labelmap with a reference: Dice and HD95 (mm) per label, in world coordinates.

When the two files are stored on different grids (e.g. a LAS NIfTI reference and an LPS DICOM-grid prediction),
the prediction is resampled onto the reference grid by world position (nearest neighbour) first. Surface
distances are measured between voxel centres in millimetres, so anisotropic and oblique grids are exact. Dice and
HD95 come from MONAI's metrics; only sheared grids use our own world-space surface search (see :func:`hd95`).
"""

from __future__ import annotations

import math
import os
import warnings
from dataclasses import asdict, dataclass

import numpy as np
import torch

from vococore.preprocessing.resample import resample_to_grid
from vococore.io.volume import Volume


@dataclass
class LabelScore:
    """Scores of one label value (Dice nan and HD95 nan when the label is in neither map)."""

    value: int
    name: str
    dice: float
    hd95_mm: float  # inf when the label is in only one of the maps
    pred_voxels: int
    ref_voxels: int


def surface_mask(mask: np.ndarray) -> np.ndarray:
    """Voxels of ``mask`` that touch background along an axis (6-neighbourhood) or the grid edge."""
    from scipy.ndimage import binary_erosion

    return mask & ~binary_erosion(mask, border_value=0)


def surface_points(mask: np.ndarray, affine: np.ndarray) -> np.ndarray:
    """RAS positions (n, 3) of the surface voxels of ``mask`` (see :func:`surface_mask`)."""
    ijk = np.argwhere(surface_mask(mask)).astype(np.float64)
    return ijk @ affine[:3, :3].T + affine[:3, 3]


def _orthogonal_spacing(affine: np.ndarray) -> np.ndarray | None:
    """Voxel spacing when the grid axes are orthogonal (distances are then spacing-weighted index distances)."""
    spacing = np.linalg.norm(affine[:3, :3], axis=0)
    axes = affine[:3, :3] / spacing
    return spacing if np.allclose(axes.T @ axes, np.eye(3), atol=1e-6) else None


def _union_box(pred: np.ndarray, ref: np.ndarray) -> tuple[slice, ...]:
    """The bounding box of ``pred | ref``: both metrics are unchanged inside it (a mask voxel on its face has a
    background neighbour outside, so it is surface either way), and it keeps MONAI's float copies small."""
    both = np.argwhere(pred | ref)
    return tuple(slice(lo, hi + 1) for lo, hi in zip(both.min(axis=0), both.max(axis=0)))


def _batch(mask: np.ndarray, box: tuple[slice, ...]) -> torch.Tensor:
    """The cropped mask as MONAI's (batch, channel, *spatial) tensor."""
    return torch.from_numpy(np.ascontiguousarray(mask[box]))[None, None]


def dice(pred: np.ndarray, ref: np.ndarray) -> float:
    """Dice of two masks on one grid via MONAI's ``compute_dice`` (nan when both are empty, 0 when one is)."""
    from monai.metrics import compute_dice

    if not pred.any() and not ref.any():
        return math.nan
    box = _union_box(pred, ref)
    return float(compute_dice(_batch(pred, box), _batch(ref, box), include_background=True, ignore_empty=False))


def hd95(pred: np.ndarray, ref: np.ndarray, affine: np.ndarray) -> float:
    """95th-percentile symmetric Hausdorff distance (mm) between the surfaces of two masks on one grid.

    Orthogonal grids (any spacing, flips, permutations): MONAI's ``compute_hausdorff_distance`` with the voxel
    spacing. Sheared grids, which MONAI's spacing cannot describe, keep our world-space search: surface voxel
    centres in RAS and a SciPy KD-tree for the nearest neighbours.
    """
    if not pred.any() and not ref.any():
        return math.nan
    if not pred.any() or not ref.any():
        return math.inf
    box = _union_box(pred, ref)
    spacing = _orthogonal_spacing(affine)
    if spacing is not None:
        from monai.metrics import compute_hausdorff_distance

        with warnings.catch_warnings():
            # MONAI 1.6 passes its own deprecated get_mask_edges(always_return_as_numpy=...) internally and warns
            # about it on every call; nothing in our call can change that, so only that one warning is silenced.
            warnings.filterwarnings("ignore", message=r".*always_return_as_numpy", category=FutureWarning)
            return float(compute_hausdorff_distance(_batch(pred, box), _batch(ref, box), include_background=True,
                                                    percentile=95, spacing=spacing.tolist()))
    from scipy.spatial import cKDTree

    a, b = surface_points(pred[box], affine), surface_points(ref[box], affine)  # a shift leaves distances as is
    return max(float(np.percentile(cKDTree(tgt).query(src)[0], 95)) for src, tgt in ((a, b), (b, a)))


def evaluate(pred: Volume, ref: Volume, labels: list[int] | None = None,
             names: dict[int, str] | None = None) -> list[LabelScore]:
    """Dice and HD95 per label value (default: every non-zero value in either map), on ``ref``'s grid."""
    if not pred.same_grid(ref, atol=1e-3):
        pred = resample_to_grid(pred, ref)
    p, r = np.asarray(pred.array), np.asarray(ref.array)
    values = labels or sorted(int(v) for v in set(np.unique(p)) | set(np.unique(r)) if v != 0)
    scores = []
    for value in values:
        pm, rm = p == value, r == value
        n_p, n_r = int(pm.sum()), int(rm.sum())
        name = (names or {}).get(value, str(value))
        scores.append(LabelScore(value, name, dice(pm, rm), hd95(pm, rm, ref.affine), n_p, n_r))
    return scores


def evaluate_files(pred_path: str | os.PathLike, ref_path: str | os.PathLike, labels: list[int] | None = None,
                   names: dict[int, str] | None = None, pred_map: dict[int, int] | None = None) -> list[LabelScore]:
    """Read both labelmaps (any supported format), refuse ones that are not labelmaps, warn when they barely meet
    in world coordinates, rename prediction values by ``pred_map`` ({pred value: ref value}), and
    :func:`evaluate` them."""
    from vococore.io import read_volume
    from vococore.segmentation.label_checks import check_labelmap, relabel, warn_if_apart

    pred, ref = read_volume(pred_path), read_volume(ref_path)
    for vol, path in ((pred, pred_path), (ref, ref_path)):
        check_labelmap(vol, path)
    warn_if_apart(pred, ref, pred_path, ref_path)
    return evaluate(relabel(pred, pred_map or {}), ref, labels, names)


def only_in_prediction(score: LabelScore) -> bool:
    """A label the prediction has and the reference lacks: no Dice is defined (the demo report says "absent"),
    so it is shown with its voxel count and left out of the mean, in the CLI and the demo alike."""
    return score.ref_voxels == 0 and score.pred_voxels > 0


def format_scores(scores: list[LabelScore]) -> str:
    """A small text table: label, Dice, HD95 and voxel counts, plus the mean over labels in the reference."""
    lines = [f"{'label':>6} {'name':<24} {'dice':>7} {'hd95_mm':>9} {'pred_vox':>9} {'ref_vox':>9}"]
    for s in scores:
        dice = f"{'absent':>7}" if only_in_prediction(s) else f"{s.dice:>7.4f}"
        lines.append(f"{s.value:>6} {s.name[:24]:<24} {dice} {s.hd95_mm:>9.2f} {s.pred_voxels:>9} "
                     f"{s.ref_voxels:>9}")
    finite = [s.dice for s in scores if not math.isnan(s.dice) and not only_in_prediction(s)]
    if finite:
        lines.append(f"mean Dice over {len(finite)} labels in the reference: {sum(finite) / len(finite):.4f}")
    absent = [s.name for s in scores if only_in_prediction(s)]
    if absent:
        lines.append(f"absent from the reference (predicted only, not scored): {', '.join(absent)}")
    return "\n".join(lines)


def scores_as_dicts(scores: list[LabelScore]) -> list[dict]:
    """JSON-ready records (nan/inf as None / "inf"); a label absent from the reference has dice None."""
    def clean(v):
        return None if isinstance(v, float) and math.isnan(v) else ("inf" if v == math.inf else v)

    return [{**{k: clean(v) for k, v in asdict(s).items()},
             **({"dice": None, "absent_from_reference": True} if only_in_prediction(s) else {})} for s in scores]
