"""End-to-end seconds (read -> write) of ``vococore infer`` on a 512x512x300 CT with a B-size (fs 48) SwinUNETR
package on CUDA; prints one JSON line. Needs only this repository and MONAI: the CT is a synthetic abdomen-like
phantom (int16 HU, 0.8 x 0.8 x 1.0 mm) and the package has seed-0 initial weights (speed does not depend on them).

    python benchmarks/gpu_infer.py              # CUDA, fs 48, ROI 96, overlap 0.5, fp16 autocast
    python benchmarks/gpu_infer.py --smoke      # tiny CPU check: 96x96x60, fs 12, ROI 64
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "VoCoCore"))  # run from a bare checkout

if TYPE_CHECKING:
    from vococore.networks.backbones import BackboneSpec

# the full run's CT, model and window (count_flops.py reads them too)
SHAPE, SPACING, FEATURE_SIZE, ROI, OVERLAP = (512, 512, 300), (0.8, 0.8, 1.0), 48, 96, 0.5
LABELS = {1: "liver", 2: "spleen", 3: "kidney_right", 4: "kidney_left"}


def phantom(shape: tuple[int, int, int], spacing: tuple[float, float, float], seed: int = 0):
    """An elliptic body (soft tissue) with a liver-like and a spine-like insert, in air, plus noise."""
    from vococore.io.volume import Volume

    rng = np.random.default_rng(seed)
    grids = np.meshgrid(*[np.linspace(-1, 1, n, dtype=np.float32) for n in shape], indexing="ij")
    x, y, z = grids
    hu = np.full(shape, -1000, dtype=np.float32)
    hu[(x / 0.85) ** 2 + (y / 0.65) ** 2 < 1] = 40
    hu[((x + 0.35) / 0.3) ** 2 + ((y - 0.1) / 0.3) ** 2 + (z / 0.6) ** 2 < 1] = 60
    hu[(x / 0.08) ** 2 + ((y + 0.45) / 0.08) ** 2 < 1] = 700
    hu += rng.normal(0, 15, size=shape).astype(np.float32)
    affine = np.diag([*spacing, 1.0])
    return Volume(hu.astype(np.int16), affine)


def segmenter_spec(feature_size: int) -> BackboneSpec:
    """The package's network: SwinUNETR with the MONAI 1.3.0 merging, without checkpointing."""
    from vococore.networks.backbones import BackboneSpec

    return BackboneSpec(arch="swin", feature_size=feature_size, legacy_merging=True, use_checkpoint=False)


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--smoke", action="store_true", help="tiny CPU run to check the script")
    parser.add_argument("--repeats", type=int, default=2, help="timed runs (the first includes CUDA warm-up)")
    parser.add_argument("--overlap", type=float, default=OVERLAP)
    parser.add_argument("--sw-batch-size", type=int, default=4)
    args = parser.parse_args(argv)

    import torch

    from vococore.segmentation.inference import InferenceOptions, segment_files
    from vococore.io import write_volume
    from vococore.io.labels import make_labels
    from vococore.networks.backbones import build_segmenter
    from vococore.segmentation.package import ModelPackage, save_package

    shape, fs, roi, device = ((96, 96, 60), 12, 64, "cpu") if args.smoke else (SHAPE, FEATURE_SIZE, ROI, "cuda")
    work = Path(tempfile.mkdtemp(prefix="gpu-infer-"))
    ct = write_volume(phantom(shape, SPACING), work / "ct.nii.gz")
    torch.manual_seed(0)
    spec = segmenter_spec(fs)
    package = save_package(build_segmenter(spec, len(LABELS) + 1), ModelPackage(
        backbone=spec, labels=make_labels(LABELS),
        roi_size=(roi,) * 3, overlap=args.overlap), work / "b.vocomodel")
    options = InferenceOptions(device=device, sw_batch_size=args.sw_batch_size, overlap=args.overlap)
    seconds = []
    for i in range(args.repeats):
        out = work / f"seg_{i}.nii.gz"
        start = time.perf_counter()
        segment_files(package, [ct], [out], options)
        if device == "cuda":
            torch.cuda.synchronize()
        seconds.append(round(time.perf_counter() - start, 3))
    from vococore.io import read_volume, write_labelmap

    start = time.perf_counter()  # the floor: reading the CT and writing a labelmap of its size, nothing else
    volume = read_volume(ct)
    read_s = time.perf_counter() - start
    start = time.perf_counter()
    write_labelmap(np.zeros(volume.shape, dtype=np.uint8), volume, work / "zeros.nii.gz")
    write_s = time.perf_counter() - start
    name = torch.cuda.get_device_name() if device == "cuda" else "cpu"
    peak = round(torch.cuda.max_memory_allocated() / 2**30, 2) if device == "cuda" else None
    result = {"benchmark": "gpu_infer", "device": name, "shape": list(shape), "feature_size": fs, "roi": roi,
              "overlap": args.overlap, "sw_batch_size": args.sw_batch_size, "end_to_end_s": seconds,
              "best_s": min(seconds), "read_s": round(read_s, 3), "write_s": round(write_s, 3),
              "peak_gpu_gib": peak, "torch": torch.__version__, "smoke": args.smoke}
    print(json.dumps(result))
    return result


if __name__ == "__main__":
    main()
