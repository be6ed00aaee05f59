"""Evaluation metrics and label resampling: vococore's library-backed code against plain library baselines.

- ``evaluate`` (MONAI ``compute_dice`` / ``compute_hausdorff_distance`` on each label's union bounding box) vs the
  same MONAI metrics called on the whole one-hot volume at once (``one_hot`` + ``include_background=False``);
- ``resample_to_grid`` (SimpleITK ``Resample``, nearest neighbour) vs SciPy ``affine_transform`` with order 0.

Inputs: the real TotalSegmentator labels (117 values, 122x101x112 at 3 mm) against a copy moved 2 voxels along x,
and the LAS-stored DICOM labels onto their LPS series (512x512x20). Timed in alternation, ``--rounds`` each.

    python benchmarks/bench_metrics.py [--rounds 3]

Prints one JSON line.
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "VoCoCore"))


def whole_volume_monai(pred, ref, values):
    """Baseline: both maps one-hot over ``values`` and both MONAI metrics on the full grid in one call each."""
    import numpy as np
    import torch
    from monai.metrics import compute_dice, compute_hausdorff_distance

    def one_hot(array):
        return torch.from_numpy(np.stack([array == v for v in values]))[None]

    p, r = one_hot(np.asarray(pred.array)), one_hot(np.asarray(ref.array))
    spacing = list(np.linalg.norm(ref.affine[:3, :3], axis=0))
    return compute_dice(p, r, ignore_empty=False), compute_hausdorff_distance(p, r, percentile=95, spacing=spacing)


def scipy_nearest(source, reference):
    """Baseline: SciPy ``affine_transform`` with order 0 (nearest) through the index-to-index matrix."""
    import numpy as np
    from scipy.ndimage import affine_transform

    to_source = np.linalg.inv(source.affine) @ reference.affine
    return affine_transform(source.array, to_source, output_shape=reference.shape, order=0, mode="grid-constant",
                            cval=0, output=source.array.dtype)


def main() -> None:
    """Time both pairs and print the JSON line."""
    import numpy as np
    import torch

    from vococore.io import read_volume
    from vococore.io.sampledata import fetch
    from vococore.preprocessing.resample import resample_to_grid
    from vococore.segmentation.evaluate import evaluate

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()

    ref = read_volume(fetch("TotalSegCTLabels"))
    pred = ref.with_array(np.roll(ref.array, 2, axis=0))
    values = sorted(int(v) for v in set(np.unique(ref.array)) | set(np.unique(pred.array)) if v != 0)
    series, stored = read_volume(fetch("TotalSegDICOM")), read_volume(fetch("TotalSegDICOMLabels"))
    cases = {"evaluate": lambda: evaluate(pred, ref), "evaluate_baseline": lambda: whole_volume_monai(pred, ref, values),
             "resample": lambda: resample_to_grid(stored, series),
             "resample_baseline": lambda: scipy_nearest(stored, series)}
    assert np.array_equal(resample_to_grid(stored, series).array, scipy_nearest(stored, series))
    times = {name: [] for name in cases}
    for _ in range(args.rounds):
        for name, run in cases.items():
            start = time.perf_counter()
            run()
            times[name].append(time.perf_counter() - start)
    best = {name: min(t) for name, t in times.items()}
    print(json.dumps({"machine": platform.processor() or platform.machine(), "threads": torch.get_num_threads(),
                      "labels": len(values), "seconds": {k: round(v, 3) for k, v in best.items()},
                      "evaluate_vs_baseline": round(best["evaluate_baseline"] / best["evaluate"], 2),
                      "resample_vs_baseline": round(best["resample_baseline"] / best["resample"], 2)}))


if __name__ == "__main__":
    main()
