"""Does VoCo v2 pretraining with Swin B fit a 24 GB GPU? Steps/s and peak memory, as one JSON line.

Runs the real pretraining step of the shared loop (VoCoModel v2 recipe, Swin B fs 48 with the MONAI 1.3.0 patch
merging and gradient checkpointing, 2 volumes per step = 2 x (2 targets + 9 bases) crops of 64^3, bf16 autocast,
AdamW amsgrad) on synthetic regions cut by the real pretext sampler, for at most about 3 minutes.

    python benchmarks/gpu_pretrain.py            # on a CUDA machine: needs only this repo, torch, MONAI, einops
    python benchmarks/gpu_pretrain.py --smoke    # tiny sizes on CPU, to check the script itself

``fits_24gb`` compares the allocator's peak reserved memory plus ~0.6 GiB of CUDA context with 24 GiB.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "VoCoCore"))

CONTEXT_GIB = 0.6


def build(smoke: bool):
    """Recipe, backbone spec and device for the full run, or tiny CPU sizes for ``--smoke``."""
    import torch

    from vococore.networks.backbones import BackboneSpec
    from vococore.pretraining.pretext import get_recipe

    recipe = get_recipe("v2")
    spec = BackboneSpec(arch="swin", feature_size=48, legacy_merging=True, use_checkpoint=True)
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if smoke:  # 2x2 grid of 64^3 bases on a 128x128x64 region, 1 target, Swin fs 12, CPU
        recipe = dataclasses.replace(recipe, name="v2-smoke", region_size=(128, 128, 64), grid=2, num_targets=1,
                                     target_center_range=(32, 96))
        spec = dataclasses.replace(spec, feature_size=12)
        device = torch.device("cpu")
    return recipe, spec, device


def batches(recipe, count: int, batch_size: int, seed: int = 0) -> list[dict]:
    """``count`` batches of ``batch_size`` volumes: smooth random regions through the real pretext sampler."""
    import numpy as np
    import torch

    from vococore.pretraining.pretext import PretextSampler

    rng = np.random.default_rng(seed)
    sampler = PretextSampler(recipe)
    out = []
    for _ in range(count):
        samples = []
        for _ in range(batch_size):
            coarse = torch.rand((1, 1, *(max(s // 8, 2) for s in recipe.region_size)))
            region = torch.nn.functional.interpolate(coarse, size=recipe.region_size, mode="trilinear")[0]
            samples.append(sampler(region, rng))
        out.append({"bases": torch.stack([s.bases for s in samples]),
                    "targets": torch.stack([s.targets for s in samples]),
                    "labels": torch.stack([s.labels for s in samples])})
    return out


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--smoke", action="store_true", help="tiny sizes on CPU (checks the script, not a GPU)")
    parser.add_argument("--steps", type=int, default=20, help="timed steps (fewer if --max-seconds is reached)")
    parser.add_argument("--warmup", type=int, default=3, help="untimed steps first")
    parser.add_argument("--batch-size", type=int, default=2, help="volumes per step")
    parser.add_argument("--amp", default="bf16", choices=["bf16", "fp16", "none"])
    parser.add_argument("--max-seconds", type=float, default=120.0, help="stop timing after this long")
    args = parser.parse_args(argv)
    if args.smoke:
        args.steps, args.warmup = 1, 0

    import torch

    from vococore.pretraining.model import VoCoModel
    from vococore.pretraining.run import voco_step
    from vococore.training.distributed import DistInfo
    from vococore.training.loop import LoopConfig, Trainer

    torch.manual_seed(0)
    recipe, spec, device = build(args.smoke)
    data = batches(recipe, 4, args.batch_size)
    model = VoCoModel(spec, recipe).to(device)
    with tempfile.TemporaryDirectory() as tmp:
        trainer = Trainer(model, voco_step, LoopConfig(steps=args.warmup + args.steps, amp=args.amp), tmp,
                          DistInfo(device=device), backbone=spec, tensorboard=False)

        def sync() -> None:
            if device.type == "cuda":
                torch.cuda.synchronize(device)

        for i in range(args.warmup):
            trainer.train_step(data[i % len(data)])
        sync()
        if device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(device)
        start, timed, parts = time.perf_counter(), 0, {}
        while timed < args.steps and (time.perf_counter() - start < args.max_seconds or timed == 0):
            parts = trainer.train_step(data[timed % len(data)])
            timed += 1
        sync()
        elapsed = time.perf_counter() - start
    crops = args.batch_size * (recipe.num_targets + recipe.num_bases)
    result = {"device": torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu",
              "torch": torch.__version__, "recipe": recipe.name,
              "backbone": f"{spec.arch} fs {spec.feature_size} (legacy merging {spec.legacy_merging}, "
                          f"checkpointing {spec.use_checkpoint})",
              "amp": args.amp, "volumes_per_step": args.batch_size, "crops_per_step": crops, "steps_timed": timed,
              "s_per_step": round(elapsed / timed, 4), "steps_per_s": round(timed / elapsed, 3),
              "crops_per_s_needed": round(crops * timed / elapsed, 1),
              "losses_finite": all(v == v and abs(v) != float("inf") for v in parts.values()), "smoke": args.smoke}
    if device.type == "cuda":
        allocated = torch.cuda.max_memory_allocated(device) / 2**30
        reserved = torch.cuda.max_memory_reserved(device) / 2**30
        result.update(peak_allocated_gib=round(allocated, 2), peak_reserved_gib=round(reserved, 2),
                      fits_24gb=reserved + CONTEXT_GIB < 24.0)
    else:
        import resource

        result.update(peak_rss_gib=round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20, 2),
                      fits_24gb=None)
    print(json.dumps(result))
    return result


if __name__ == "__main__":
    main()
