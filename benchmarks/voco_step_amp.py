"""VoCo training step under mixed precision: loss parts and step time for fp32 (the baseline), bf16 and fp16
autocast, on the same weights and batch, in one process. Prints one JSON line per (recipe, precision).

Usage: python benchmarks/voco_step_amp.py [--device cuda] [--recipes v2 v1] [--arch swin] [--feature-size 48]
       [--volumes 2] [--steps 3]. On CPU use --recipes small --arch cnn --feature-size 8 --device cpu.
"""

from __future__ import annotations

import argparse
import copy
import json
import time

import numpy as np
import torch

from vococore.networks.backbones import BackboneSpec
from vococore.pretraining.model import VoCoModel
from vococore.pretraining.pretext import RECIPES, PretextSampler, collate


def _batch(recipe, volumes: int, device: str) -> dict[str, torch.Tensor]:
    rng = np.random.default_rng(0)
    sampler = PretextSampler(recipe)
    samples = [sampler(torch.from_numpy(rng.random((1, *recipe.region_size), dtype=np.float32)), rng)
               for _ in range(volumes)]
    return {k: v.to(device) for k, v in collate(samples).items()}


def _sync(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def run_case(model: VoCoModel, batch: dict, precision: str, device: str, steps: int) -> dict:
    """A fresh copy of ``model``; one untimed step, then ``steps`` timed steps (forward, backward, AdamW)."""
    model = copy.deepcopy(model).train()
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-4, amsgrad=True)
    dtype = {"fp32": None, "bf16": torch.bfloat16, "fp16": torch.float16}[precision]
    scaler = torch.amp.GradScaler(device.split(":")[0], enabled=precision == "fp16")
    first, times = None, []
    for step in range(steps + 1):
        torch.manual_seed(123 + step)  # same row-dropout draw for every precision
        _sync(device)
        start = time.perf_counter()
        with torch.autocast(device.split(":")[0], dtype=dtype or torch.float32, enabled=dtype is not None):
            parts = model(**batch)
        optimizer.zero_grad(set_to_none=True)
        scaler.scale(parts["total"]).backward()
        scaler.step(optimizer)
        scaler.update()
        _sync(device)
        if step == 0:
            first = {k: float(v.detach()) for k, v in parts.items()}
        else:
            times.append(time.perf_counter() - start)
    finite = all(np.isfinite(v) for v in first.values())
    peak = torch.cuda.max_memory_allocated() / 2**30 if device.startswith("cuda") else None
    return {"first_step_parts": first, "finite": finite, "step_s": float(np.median(times)), "peak_gib": peak}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--recipes", nargs="+", default=["v2", "v1"])
    parser.add_argument("--arch", default="swin")
    parser.add_argument("--feature-size", type=int, default=48)
    parser.add_argument("--volumes", type=int, default=2)
    parser.add_argument("--steps", type=int, default=3)
    args = parser.parse_args()
    precisions = ["fp32", "bf16", "fp16"] if args.device.startswith("cuda") else ["fp32", "bf16"]
    for name in args.recipes:
        recipe = RECIPES[name]
        torch.manual_seed(0)
        spec = BackboneSpec(arch=args.arch, feature_size=args.feature_size)
        model = VoCoModel(spec, recipe).to(args.device)
        batch = _batch(recipe, args.volumes, args.device)
        baseline = None
        for precision in precisions:
            if args.device.startswith("cuda"):
                torch.cuda.reset_peak_memory_stats()
            result = run_case(model, batch, precision, args.device, args.steps)
            baseline = baseline or result
            rel = {k: abs(v - baseline["first_step_parts"][k]) / max(abs(baseline["first_step_parts"][k]), 1e-8)
                   for k, v in result["first_step_parts"].items()}
            print(json.dumps({"recipe": name, "arch": args.arch, "feature_size": args.feature_size,
                              "volumes": args.volumes, "precision": precision, "device": args.device,
                              "device_name": torch.cuda.get_device_name() if args.device.startswith("cuda") else "cpu",
                              **result, "rel_diff_vs_fp32": rel,
                              "speedup_vs_fp32": baseline["step_s"] / result["step_s"]}), flush=True)


if __name__ == "__main__":
    main()
