"""Time and peak memory of ``vococore infer`` against MONAI's plain sliding-window pipeline, same model/ROI/overlap.

Baseline: ``monai.inferers.sliding_window_inference`` (fp32 logits of all classes on the preprocessed grid), the
logits inverted onto the input grid with MONAI ``Invertd`` (bilinear, all classes, full resolution), argmax there.
Ours: ``vococore.segmentation.inference.segment_files`` (the same windows through the fast inference kernels, float16 score
sums, scores interpolated onto the input grid a few slices at a time and argmaxed there; preprocessing, window
placement and, for a CNN package, the BasicUNet in plain PyTorch, so MONAI is not imported). Each variant runs
read -> write in its own subprocess, its imports (after torch's) counted in its wall time, so peak RSS
(``VmHWM``) is its own and each side pays for what it imports.
Cases: the TotalSegmentator example CT, and a 512x512x300 volume resampled from it.

    python benchmarks/bench_infer.py [--arch swin --feature-size 12] [--cases example_ct] [--work DIR]
    python benchmarks/bench_infer.py --model .cache/finetune_small/best.vocomodel   # a trained model
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np


def make_large(source: Path, target: Path, size: tuple[int, int, int]) -> None:
    """Resample ``source`` (trilinear) onto a ``size`` grid covering the same world box."""
    import torch
    import torch.nn.functional as F

    from vococore.io import read_volume, write_volume
    from vococore.io.volume import Volume

    vol = read_volume(source)
    data = torch.as_tensor(vol.array.astype(np.float32))[None, None]
    big = F.interpolate(data, size=size, mode="trilinear", align_corners=True)[0, 0].round().to(torch.int16)
    scale = (np.asarray(vol.shape) - 1) / (np.asarray(size) - 1)
    affine = vol.affine.copy()
    affine[:3, :3] = vol.affine[:3, :3] * scale
    write_volume(Volume(big.numpy(), affine), target, overwrite=True)


def make_package(path: Path, arch: str, feature_size: int, roi: int) -> None:
    """A 5-class package (seed-0 initial weights) with the abdomen preprocessing (1.5 mm)."""
    import torch

    from vococore.io.labels import make_labels
    from vococore.networks.backbones import BackboneSpec, build_segmenter
    from vococore.segmentation.package import ModelPackage, save_package

    torch.manual_seed(0)
    spec = BackboneSpec(arch=arch, feature_size=feature_size, legacy_merging=arch == "swin", use_checkpoint=False)
    labels = make_labels({1: "liver", 2: "spleen", 3: "kidney_right", 4: "kidney_left"})
    save_package(build_segmenter(spec, 5), ModelPackage(backbone=spec, labels=labels, roi_size=(roi,) * 3,
                                                        overlap=0.5), path, overwrite=True)


def run_ours(package: Path, source: Path, output: Path, overlap: float) -> dict:
    from vococore.segmentation.inference import InferenceOptions, segment_files

    segment_files(package, [source], [output], InferenceOptions(overlap=overlap, blend="gaussian", device="cpu"),
                  overwrite=True)
    return {}


def run_monai(package: Path, source: Path, output: Path, overlap: float) -> dict:
    import torch
    from monai.data import MetaTensor
    from monai.inferers import sliding_window_inference
    from monai.transforms import Invertd

    from vococore.io import read_volume, write_labelmap
    from vococore.segmentation.package import load_package
    from vococore.preprocessing.preprocessor import Preprocessor

    model, info = load_package(package)
    volume = read_volume(source)
    pre = Preprocessor(info.preprocess)(volume)
    t0 = time.perf_counter()
    with torch.inference_mode():
        logits = sliding_window_inference(pre.image.as_tensor()[None], info.roi_size, 1, model, overlap=overlap,
                                          mode="gaussian")[0]
    t1 = time.perf_counter()
    inverter = Invertd(keys="pred", transform=pre.transform, orig_keys="image", nearest_interp=False)
    back = inverter({"pred": MetaTensor(logits, affine=pre.image.affine), "image": pre.image})["pred"]
    labels = back.as_tensor().argmax(0).to(torch.uint8).numpy()
    t2 = time.perf_counter()
    write_labelmap(labels, volume, output, label_info=info.labels, overwrite=True)
    return {"network_s": round(t1 - t0, 2), "invert_argmax_s": round(t2 - t1, 2)}


def peak_rss_mib() -> float:
    """This process's peak resident memory: ``VmHWM`` where Linux has it, since there ``ru_maxrss`` of a child
    also counts the parent's memory at fork (the parent's 512x512x300 volume made both small-CT figures 854 MiB)."""
    try:
        with open("/proc/self/status") as fh:
            return next(int(line.split()[1]) for line in fh if line.startswith("VmHWM:")) / 1024
    except (OSError, StopIteration):
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def child(args: argparse.Namespace) -> None:
    import torch

    torch.set_num_threads(args.threads)
    start = time.perf_counter()
    phases = (run_ours if args.child == "ours" else run_monai)(args.package, args.input, args.output, args.overlap)
    wall = time.perf_counter() - start
    peak_mib = peak_rss_mib()
    print(json.dumps({"wall_s": round(wall, 2), "peak_rss_mib": round(peak_mib), **phases}))


def measure(variant: str, package: Path, source: Path, output: Path, overlap: float, threads: int) -> dict:
    env = {**os.environ, "OMP_WAIT_POLICY": os.environ.get("OMP_WAIT_POLICY", "PASSIVE")}
    cmd = [sys.executable, __file__, "--child", variant, "--package", str(package), "--input", str(source),
           "--output", str(output), "--overlap", str(overlap), "--threads", str(threads)]
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env)
    if proc.returncode:
        raise RuntimeError(proc.stderr[-3000:])
    return json.loads(proc.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--arch", default="cnn", choices=["swin", "cnn"])
    parser.add_argument("--feature-size", type=int, default=8)
    parser.add_argument("--cases", nargs="+", default=["example_ct", "resampled"], choices=["example_ct", "resampled"])
    parser.add_argument("--roi", type=int, default=64)
    parser.add_argument("--overlap", type=float, default=0.5)
    parser.add_argument("--size", type=int, nargs=3, default=[512, 512, 300])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--work", type=Path, help="folder for the inputs and outputs (default: a temp folder)")
    parser.add_argument("--model", type=Path, help="an existing .vocomodel (e.g. the trained finetune_small "
                        "best.vocomodel) instead of a seed-0 package of --arch/--feature-size/--roi")
    parser.add_argument("--child", choices=["ours", "monai"], help=argparse.SUPPRESS)
    parser.add_argument("--package", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--input", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--output", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child(args)
        return
    from vococore.io import read_volume
    from vococore.io.sampledata import fetch

    work = args.work or Path(tempfile.mkdtemp(prefix="bench-infer-"))
    work.mkdir(parents=True, exist_ok=True)
    package = args.model or work / "model.vocomodel"
    if args.model is None:
        make_package(package, args.arch, args.feature_size, args.roi)
    cases = {"example_ct": fetch("TotalSegCT")}
    if "resampled" in args.cases:
        cases["resampled"] = work / "large_ct.nii.gz"
        make_large(cases["example_ct"], cases["resampled"], tuple(args.size))
    model = str(args.model) if args.model else f"{args.arch} fs {args.feature_size}, ROI {args.roi}^3 (seed 0)"
    print(f"model: {model}, overlap {args.overlap}, gaussian, {args.threads} threads")
    for name in args.cases:
        source = cases[name]
        shape = read_volume(source).shape
        results = {v: measure(v, package, source, work / f"{name}_{v}.nii.gz", args.overlap, args.threads)
                   for v in ("monai", "ours")}
        a = read_volume(work / f"{name}_ours.nii.gz").array
        b = read_volume(work / f"{name}_monai.nii.gz").array
        same = float((a == b).mean())
        m, o = results["monai"], results["ours"]
        print(json.dumps({"case": name, "shape": shape, "monai": m, "ours": o,
                          "speedup": round(m["wall_s"] / o["wall_s"], 2),
                          "memory_ratio": round(o["peak_rss_mib"] / m["peak_rss_mib"], 3),
                          "same_argmax": round(same, 6)}))


if __name__ == "__main__":
    main()
