"""Per-window time of the segmentation networks with PyTorch's default kernels and with vococore's faster inference
kernels (``vococore.networks.fast_inference``), alternating in one process, plus the largest output difference.

    python benchmarks/bench_kernels.py [--roi 64] [--rounds 6] [--threads 2]
"""

from __future__ import annotations

import argparse
import json
import statistics
import time

import torch

from vococore.networks.backbones import BackboneSpec, build_segmenter
from vococore.networks.fast_inference import fast_inference

MODELS = {"cnn fs 8": BackboneSpec(arch="cnn", feature_size=8),
          "swin fs 12": BackboneSpec(arch="swin", feature_size=12, legacy_merging=True, use_checkpoint=False)}


def _seconds(net: torch.nn.Module, x: torch.Tensor, repeats: int = 2) -> float:
    """Mean seconds per call after one untimed call (kernel selection and caches warm up on the first)."""
    net(x)
    start = time.perf_counter()
    for _ in range(repeats):
        net(x)
    return (time.perf_counter() - start) / repeats


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--roi", type=int, default=64)
    parser.add_argument("--rounds", type=int, default=6)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    x = torch.rand(1, 1, args.roi, args.roi, args.roi, generator=torch.Generator().manual_seed(0))
    for name, spec in MODELS.items():
        torch.manual_seed(0)
        net = build_segmenter(spec, 5).eval()
        default, fast = [], []
        with torch.inference_mode():
            reference = net(x)  # warm-up
            with fast_inference(net):
                diff = float((net(x) - reference).abs().max())
            for _ in range(args.rounds):
                default.append(_seconds(net, x))
                with fast_inference(net):
                    fast.append(_seconds(net, x))
        d, f = statistics.median(default), statistics.median(fast)
        print(json.dumps({"model": name, "window": args.roi, "default_s": round(d, 4), "fast_s": round(f, 4),
                          "speedup": round(d / f, 2), "max_abs_diff": diff}))


if __name__ == "__main__":
    main()
