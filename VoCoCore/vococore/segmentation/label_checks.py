"""What ``evaluate`` checks and maps before scoring: both inputs must be labelmaps, should overlap in the world,
and may name their labels differently (``--map 1:5``, a label table per side, or a prediction's model package)."""

from __future__ import annotations

import logging
import os

import numpy as np

from vococore.io.volume import Volume
from vococore.utils.errors import VoCoError

log = logging.getLogger(__name__)

# More distinct values than any labelmap we know (TotalSegmentator has 117): such a file is an image.
MAX_LABELS = 1000
# Below this share of the smaller grid's world box, the two maps barely meet: an origin was likely never set.
MIN_WORLD_OVERLAP = 0.05


def check_labelmap(volume: Volume, path: str | os.PathLike) -> None:
    """Refuse a volume that is not a labelmap: non-integer, negative, or thousands of distinct values."""
    array = np.asarray(volume.array)
    if np.issubdtype(array.dtype, np.floating) and not np.array_equal(array, np.round(array)):
        raise VoCoError("is not a labelmap (non-integer values); give a label file, not an image", path)
    low = array.min()
    if low < 0:
        raise VoCoError(f"is not a labelmap (negative values, down to {low:g}); give a label file, not a CT", path)
    n = len(np.unique(array))
    if n > MAX_LABELS:
        raise VoCoError(f"is not a labelmap ({n} distinct values, more than {MAX_LABELS} labels); give a label "
                        "file, not an image", path)


def world_overlap(a: Volume, b: Volume) -> float:
    """Share (0..1) of the smaller grid's RAS bounding box that lies inside the other's."""
    (alo, ahi), (blo, bhi) = a.world_bounds(), b.world_bounds()
    inter = np.prod(np.clip(np.minimum(ahi, bhi) - np.maximum(alo, blo), 0, None))
    smaller = min(np.prod(ahi - alo), np.prod(bhi - blo))
    return float(inter / smaller) if smaller > 0 else 0.0


def warn_if_apart(pred: Volume, ref: Volume, pred_path: str | os.PathLike, ref_path: str | os.PathLike) -> float:
    """Log a warning when the two maps share almost no space in world coordinates; returns the overlap."""
    share = world_overlap(pred, ref)
    if share < MIN_WORLD_OVERLAP:
        log.warning("%s and %s share only %.1f%% of their extent in world (RAS) coordinates: was an origin never "
                    "set? Scores will be near zero", pred_path, ref_path, 100 * share)
    return share


def names_to_map(pred_names: dict[int, str], ref_names: dict[int, str]) -> dict[int, int]:
    """Prediction value -> reference value for labels named alike in both (case and spaces ignored)."""
    def key(name: str) -> str:
        return "".join(name.lower().split()).replace("_", "")

    by_name = {key(n): v for v, n in ref_names.items()}
    mapping = {v: by_name[key(n)] for v, n in pred_names.items() if key(n) in by_name}
    if pred_names and not mapping:
        raise VoCoError(f"no prediction label name matches a reference name (prediction: "
                        f"{sorted(pred_names.values())[:5]}, reference: {sorted(ref_names.values())[:5]})")
    return mapping


def relabel(volume: Volume, mapping: dict[int, int]) -> Volume:
    """Rename label values (``{from: to}``); values not in ``mapping`` keep theirs. Renames happen at once, so
    ``{1: 2, 2: 1}`` swaps."""
    if not mapping:
        return volume
    array = np.asarray(volume.array).astype(np.int64)
    table = np.arange(max(int(array.max()), *mapping) + 1)
    for src, dst in mapping.items():
        table[src] = dst
    return volume.with_array(table[array])


def package_label_names(path: str | os.PathLike) -> dict[int, str]:
    """Label value -> name of a model package, the names its predictions carry."""
    from vococore.segmentation.package import read_package_info

    return {li.value: li.name for li in read_package_info(path).labels}
