"""Counts the FLOPs of the work behind the GPU times in BENCHMARKS.md, so that each time can be given with its MFU;
prints one JSON line (about 30 s on 2 cores, half of it building and preprocessing gpu_infer's phantom).

Counted with ``torch.utils.flop_counter.FlopCounterMode`` (matrix products, convolutions and attention, not the
elementwise work), without gradient checkpointing (its recompute is not useful work):

- ``v2``: the VoCo v2 step, Swin B (fs 48, MONAI 1.3.0 merging) forward + backward on 2 targets + 9 bases of 64³ per
  volume (``gpu_bench.step_flops`` on ``gpu_pretrain``'s backbone and batch of 2 volumes);
- ``v1``: the v1 step (layout twin), student forward + backward and teacher forward on 2 + 16 crops of 64³ per volume;
- ``infer``: one forward of ``gpu_infer``'s SwinUNETR B on a 96³ window, the number of windows
  ``sliding_window_scores`` places (overlap 0.5) on the grid the network sees for gpu_infer's 512×512×300 phantom,
  and their product.

The networks are built on the CPU (MONAI's Swin calls ``.item()`` while it is built) and then moved, with their
inputs, to the meta device, so counting them computes nothing. Only the phantom and its preprocessing run for real:
the foreground crop, and so the grid, depends on the voxels. Meta and real tensors count the same FLOPs (checked
2026-12-01, torch 2.13, MONAI 1.6.1): Swin fs 12 on one 64³ crop, forward + backward, 21,116,160,096 both ways;
the whole v2 step at gpu_pretrain's smoke size (2 volumes of 1 target + 4 bases, fs 12), 211,353,195,456 both
ways. ``--check`` repeats both (about 50 s more on 2 cores).

``mfu`` gives, for each GPU time in BENCHMARKS.md recorded without one (``RECORDED``, an NVIDIA H100 80GB HBM3),
counted FLOPs / time / the card's dense bf16 peak (``gpu_bench.PEAK_FLOPS``), for fp32 rows too.

    python benchmarks/count_flops.py [--check]
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "VoCoCore"))

CARD = "NVIDIA H100 80GB HBM3"
# GPU times in BENCHMARKS.md without MFU: (what was timed, which work, seconds). A v2/v1 step is of 2 volumes.
RECORDED = [
    ("voco_step_amp v2 fp32", "v2", 0.358), ("voco_step_amp v2 bf16", "v2", 0.314),
    ("voco_step_amp v2 fp16", "v2", 0.325), ("voco_step_amp v1 fp32", "v1", 0.745),
    ("voco_step_amp v1 bf16", "v1", 0.651), ("voco_step_amp v1 fp16", "v1", 0.673),
    ("gpu_pretrain default allocator", "v2", 0.339), ("gpu_pretrain expandable_segments", "v2", 0.322),
    ("gpu_infer window batch 4, run 1", "infer", 7.66), ("gpu_infer window batch 4, run 2", "infer", 5.10),
    ("gpu_infer window batch 4, run 3", "infer", 4.97), ("gpu_infer window batch 8, run 1", "infer", 6.00),
    ("gpu_infer window batch 8, run 2", "infer", 5.92),
]


def to_meta(batch: dict) -> dict:
    """The batch's tensors as meta tensors of the same shapes and dtypes."""
    return {key: value.to("meta") for key, value in batch.items()}


def voco_step_flops(recipe_name: str) -> int:
    """FLOPs of one VoCo step of 2 volumes for ``recipe_name`` with gpu_pretrain's Swin B, counted on meta."""
    from gpu_bench import step_flops
    from gpu_pretrain import batches, build
    from vococore.pretraining.model import VoCoModel
    from vococore.pretraining.pretext import get_recipe

    recipe, spec = get_recipe(recipe_name), build(False)[1]
    return step_flops(VoCoModel(spec, recipe).to("meta"), to_meta(batches(recipe, 1, 2)[0]))


def inference_flops() -> dict:
    """FLOPs of one 96³ window, the windows placed on gpu_infer's phantom after preprocessing, and the total."""
    import torch
    from torch.utils.flop_counter import FlopCounterMode

    from gpu_infer import FEATURE_SIZE, LABELS, OVERLAP, ROI, SHAPE, SPACING, phantom, segmenter_spec
    from vococore.networks.backbones import build_segmenter
    from vococore.preprocessing.config import PreprocessConfig
    from vococore.preprocessing.lean import preprocess_for_inference
    from vococore.segmentation.sliding_window import _pad_to_roi, scan_intervals, window_slices

    roi = (ROI,) * 3
    network = build_segmenter(segmenter_spec(FEATURE_SIZE), len(LABELS) + 1).eval().to("meta")
    with torch.no_grad(), FlopCounterMode(display=False) as counter:
        network(torch.empty((1, 1, *roi), device="meta"))
    # the package's default preprocessing (gpu_infer keeps it), on the phantom as gpu_infer writes it
    pre = preprocess_for_inference(phantom(SHAPE, SPACING), PreprocessConfig())
    padded = _pad_to_roi(pre.image[None], roi)[0]
    grid = tuple(padded.shape[2:])
    windows = len(window_slices(grid, roi, scan_intervals(grid, roi, OVERLAP)))
    window = counter.get_total_flops()
    return {"network_grid": list(grid), "windows": windows, "gflop_per_window": round(window / 1e9, 2),
            "flops_per_window": window, "flops_total": window * windows}


def check_meta() -> dict:
    """Meta against real CPU tensors: Swin fs 12 on one 64³ crop (forward + backward) and the v2 step at
    gpu_pretrain's smoke size (2 volumes of 1 target + 4 bases of 64³, fs 12)."""
    import dataclasses

    import torch
    from torch.utils.flop_counter import FlopCounterMode

    from gpu_bench import step_flops
    from gpu_pretrain import batches, build
    from vococore.networks.backbones import build_encoder
    from vococore.pretraining.model import VoCoModel

    def crop_flops(encoder: torch.nn.Module, crop: torch.Tensor) -> int:
        with FlopCounterMode(display=False) as counter:
            encoder(crop).sum().backward()
        return counter.get_total_flops()

    start = time.perf_counter()
    torch.manual_seed(0)
    recipe, spec, _ = build(True)
    encoder, crop = build_encoder(dataclasses.replace(spec, use_checkpoint=False)), torch.rand(1, 1, 64, 64, 64)
    model, batch = VoCoModel(spec, recipe), batches(recipe, 1, 2)[0]
    real = [crop_flops(encoder, crop), step_flops(model, batch)]
    meta = [crop_flops(encoder.to("meta"), crop.to("meta")), step_flops(model.to("meta"), to_meta(batch))]
    return {"swin_fs12_crop": {"meta": meta[0], "real": real[0]}, "v2_smoke_step": {"meta": meta[1], "real": real[1]},
            "equal": meta == real, "seconds": round(time.perf_counter() - start, 1)}


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--check", action="store_true", help="also compare meta with real CPU counts (small case)")
    args = parser.parse_args(argv)

    import monai
    import torch

    from gpu_bench import peak_flops
    from vococore.pretraining.pretext import get_recipe

    start = time.perf_counter()
    steps = {"v2": voco_step_flops("v2"), "v1": voco_step_flops("v1")}
    crops = {name: get_recipe(name).num_targets + get_recipe(name).grid ** 2 for name in steps}  # per volume
    infer = inference_flops()
    work = {**steps, "infer": infer["flops_total"]}
    peak = peak_flops(CARD)
    result: dict = {"benchmark": "count_flops", "torch": torch.__version__, "monai": monai.__version__,
                    "counted_on": "meta device (FlopCounterMode)"}
    for name, flops in steps.items():
        result[name] = {"flops_step_2_volumes": flops, "tflop_per_volume": round(flops / 2 / 1e12, 3),
                        "gflop_per_crop_fwd_bwd": round(flops / 2 / crops[name] / 1e9, 1)}
    result["infer"] = infer
    result["card"], result["peak_tflops_dense_bf16"] = CARD, peak / 1e12
    result["mfu"] = [{"timed": label, "s": seconds, "tflop_per_s": round(work[kind] / seconds / 1e12, 1),
                      "mfu": round(work[kind] / seconds / peak, 4)} for label, kind, seconds in RECORDED]
    result["seconds"] = round(time.perf_counter() - start, 1)
    if args.check:
        result["check"] = check_meta()
    print(json.dumps(result))
    return result


if __name__ == "__main__":
    main()
