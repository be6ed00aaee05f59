"""The v2 Swin B pretraining step with the official settings against ours on the same card in one run, and the
end-to-end inference of a 512x512x300 CT with a B model; prints one JSON line (about 5-8 minutes on an H100).

Official (VoCo's code): fp16 autocast with GradScaler, gradient checkpointing, MONAI's default attention, 2 volumes
per GPU, AdamW amsgrad (for-each). Ours: bf16 autocast, the training kernels (``vococore.networks.fast_training``:
SDPA window attention), ``torch.compile`` of the backbone (cold compile time measured; Inductor's cache in
``TORCHINDUCTOR_CACHE_DIR``, default ~/.cache/vococore/inductor, so a second run compiles from cache), fused
AdamW amsgrad, and checkpointing and batch chosen by the memory rule of :func:`choose_batch`.
MFU = FLOPs counted with ``torch.utils.flop_counter.FlopCounterMode`` on one forward + backward without
checkpointing (the recompute is not useful work) per second, over the card's dense bf16/fp16 peak.
Learning rate for a larger batch: lr = lr_2 * sqrt(volumes / 2) (square-root rule for Adam-type optimizers),
printed as ``lr_rule``.

    python benchmarks/gpu_bench.py            # CUDA; needs this repo, torch, MONAI, einops, nibabel
    python benchmarks/gpu_bench.py --smoke    # CPU run of the same code: small recipe, CNN fs 4, fp32, no
                                              # compile, no memory probe, tiny gpu_infer
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import dataclasses
import json
import math
import os
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "VoCoCore"))
os.environ.setdefault("TORCHINDUCTOR_CACHE_DIR", str(Path.home() / ".cache" / "vococore" / "inductor"))

# Dense (no sparsity) bf16/fp16 tensor-core peaks from the vendors' data sheets, FLOP/s.
PEAK_FLOPS = {"H200": 989e12, "H100 80GB HBM3": 989e12, "H100 SXM": 989e12, "H100 PCIe": 756e12,
              "H100 NVL": 835e12, "A100": 312e12, "L40S": 362e12, "A10": 125e12}
MEMORY_SHARE = 0.85  # the batch may use this share of the free memory (the allocator needs slack)


def build(smoke: bool):
    """v2 recipe with Swin B (MONAI 1.3.0 merging) on CUDA; for ``--smoke`` the ``small`` recipe with a CNN fs 4 on
    CPU (the same loop, counting and rows; a Swin needs 64³ crops, minutes on the CPU)."""
    import torch

    from gpu_pretrain import build as build_v2
    from vococore.networks.backbones import BackboneSpec
    from vococore.pretraining.pretext import get_recipe

    if smoke:
        return get_recipe("small"), BackboneSpec(arch="cnn", feature_size=4), torch.device("cpu")
    return build_v2(False)


def peak_flops(name: str) -> float | None:
    """The card's dense bf16 peak by name (None if not in the table)."""
    return next((v for k, v in PEAK_FLOPS.items() if k in name), None)


def step_flops(model, batch: dict) -> int:
    """FLOPs of one forward + backward of ``model`` on ``batch``, counted, without checkpointing."""
    import torch
    from torch.utils.flop_counter import FlopCounterMode

    from vococore.pretraining.run import voco_step

    model = copy.deepcopy(model)
    for module in model.modules():
        if hasattr(module, "use_checkpoint"):
            module.use_checkpoint = False
    with FlopCounterMode(display=False) as counter:
        voco_step(model, batch)["total"].backward()
    del model
    if torch.cuda.is_available():
        torch.cuda.empty_cache()
    return counter.get_total_flops()


def make_trainer(model, spec, amp: str, fast: bool, fused: bool, steps: int, lr: float, device, tmp: str):
    """The shared loop's Trainer; ``fused`` swaps in fused AdamW amsgrad (same recipe, one kernel per step)."""
    import torch

    from vococore.pretraining.run import voco_step
    from vococore.training.distributed import DistInfo
    from vococore.training.loop import LoopConfig, Trainer, warmup_cosine

    config = LoopConfig(steps=steps, lr=lr, amp=amp, fast_kernels=fast)
    trainer = Trainer(model, voco_step, config, tmp, DistInfo(device=device), backbone=spec, tensorboard=False)
    if fused:
        params = [p for p in model.parameters() if p.requires_grad]
        trainer.optimizer = torch.optim.AdamW(params, lr=lr, weight_decay=config.weight_decay, amsgrad=True,
                                              fused=True)
        trainer.scheduler = warmup_cosine(trainer.optimizer, config.warmup_steps, config.steps)
    return trainer


def peak_step_bytes(model, spec, recipe, volumes: int, device, tmp: str) -> int | None:
    """Peak allocated bytes of one bf16 step of ``volumes`` volumes (None if it runs out of memory)."""
    import torch

    from gpu_pretrain import batches

    torch.cuda.empty_cache()
    torch.cuda.reset_peak_memory_stats(device)
    try:
        trainer = make_trainer(copy.deepcopy(model), spec, "bf16", True, True, 2, 1e-4, device, tmp)
        trainer.train_step(batches(recipe, 1, volumes)[0])
        return torch.cuda.max_memory_allocated(device)
    except torch.cuda.OutOfMemoryError:
        return None
    finally:
        trainer = None
        torch.cuda.empty_cache()


def choose_batch(model, spec, recipe, device, tmp: str, max_volumes: int) -> tuple[bool, int, dict]:
    """The rule: measure the peak of a step of 2 and of 4 volumes without checkpointing; memory per volume is their
    difference / 2, the rest is fixed; take the largest even number of volumes (<= ``max_volumes``) whose estimate
    fits ``MEMORY_SHARE`` of the free memory. If 2 volumes without checkpointing do not fit, checkpoint."""
    import torch

    free = torch.cuda.mem_get_info(device)[0]
    no_ckpt = dataclasses.replace(spec, use_checkpoint=False)
    probe = copy.deepcopy(model)
    for module in probe.modules():
        if hasattr(module, "use_checkpoint"):
            module.use_checkpoint = False
    p2 = peak_step_bytes(probe, no_ckpt, recipe, 2, device, tmp)
    p4 = peak_step_bytes(probe, no_ckpt, recipe, 4, device, tmp) if p2 else None
    info = {"free_gib": round(free / 2**30, 1), "peak_2_gib": p2 and round(p2 / 2**30, 2),
            "peak_4_gib": p4 and round(p4 / 2**30, 2)}
    if not p2:
        return True, 2, info
    per_volume = max((p4 - p2) / 2, 1) if p4 else p2 / 2
    fixed = p2 - 2 * per_volume
    volumes = int((MEMORY_SHARE * free - fixed) // per_volume) // 2 * 2
    return False, max(2, min(volumes, max_volumes)), info


def measure(trainer, data: list, steps: int, max_seconds: float, device) -> tuple[float, int, float]:
    """(seconds per step, steps timed, peak GiB) over up to ``steps`` steps after the warm-up done by the caller."""
    import torch

    def sync() -> None:
        if device.type == "cuda":
            torch.cuda.synchronize(device)

    sync()
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    start, timed = time.perf_counter(), 0
    while timed < steps and (time.perf_counter() - start < max_seconds or timed == 0):
        trainer.train_step(data[timed % len(data)])
        timed += 1
    sync()
    peak = torch.cuda.max_memory_allocated(device) / 2**30 if device.type == "cuda" else None
    return (time.perf_counter() - start) / timed, timed, peak


def compare_steps(args: argparse.Namespace) -> dict:
    """Official settings against ours on the v2 recipe with Swin B; see the module docstring."""
    import torch

    from gpu_pretrain import batches
    from vococore.networks.fast_training import fast_training
    from vococore.pretraining.model import VoCoModel

    torch.manual_seed(0)
    recipe, spec, device = build(args.smoke)
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu"
    model = VoCoModel(dataclasses.replace(spec, use_checkpoint=True), recipe).to(device)
    crops_per_volume = recipe.num_targets + recipe.num_bases
    flops_per_volume = step_flops(model, batches(recipe, 1, 2)[0]) / 2
    peak = peak_flops(name)
    result: dict = {"device": name, "torch": torch.__version__, "recipe": recipe.name,
                    "backbone": f"{spec.arch} fs {spec.feature_size} (legacy merging {spec.legacy_merging})",
                    "gflop_per_crop_fwd_bwd": round(flops_per_volume / crops_per_volume / 1e9, 2),
                    "peak_tflops_dense": peak and peak / 1e12}
    with tempfile.TemporaryDirectory() as tmp, contextlib.ExitStack() as stack:
        official = make_trainer(copy.deepcopy(model), spec, "fp16" if device.type == "cuda" else "none", False,
                                False, 1000, 1e-4, device, tmp)
        data = batches(recipe, 2, 2)
        for i in range(args.warmup):
            official.train_step(data[i % 2])
        s, timed, mem = measure(official, data, args.steps, args.max_seconds, device)
        official = None
        rows = {"official": (s, timed, mem, 2, True, "fp16 + GradScaler" if device.type == "cuda" else "none")}
        if device.type == "cuda":
            checkpointing, volumes, rule = choose_batch(model, spec, recipe, device, tmp, args.max_volumes)
        else:
            checkpointing, volumes, rule = False, 2, {"smoke": "no memory probe on CPU"}
        ours_model = copy.deepcopy(model)
        for module in ours_model.modules():
            if hasattr(module, "use_checkpoint"):
                module.use_checkpoint = checkpointing
        lr = 1e-4 * math.sqrt(volumes / 2)
        amp = "bf16" if device.type == "cuda" else "none"
        # the kernels are switched once for the whole run (not per step as the loop does), so that torch.compile
        # sees the same layers every step instead of recompiling
        kernels = stack.enter_context(fast_training(ours_model))
        ours = make_trainer(ours_model, spec, amp, False, True, 1000, lr, device, tmp)
        compile_s = None
        if device.type == "cuda" and not args.no_compile:
            ours_model.backbone.compile()
        data = batches(recipe, 2, volumes)
        start = time.perf_counter()
        ours.train_step(data[0])  # compiles (cold unless the cache holds it)
        if device.type == "cuda":
            torch.cuda.synchronize(device)
            compile_s = round(time.perf_counter() - start, 1) if not args.no_compile else None
        for i in range(args.warmup):
            ours.train_step(data[i % 2])
        s2, timed2, mem2 = measure(ours, data, args.steps, args.max_seconds, device)
        rows["ours"] = (s2, timed2, mem2, volumes, checkpointing, amp)
    for key, (sec, timed, mem, vols, ckpt, precision) in rows.items():
        flops = flops_per_volume * vols / sec
        result[key] = {"volumes_per_gpu": vols, "crops_per_step": vols * crops_per_volume, "checkpointing": ckpt,
                       "amp": precision, "steps_timed": timed, "s_per_step": round(sec, 4),
                       "steps_per_s": round(1 / sec, 3), "crops_per_s": round(vols * crops_per_volume / sec, 1),
                       "tflops_per_s": float(f"{flops / 1e12:.3g}"), "mfu": peak and round(flops / peak, 4),
                       "peak_gib": mem and round(mem, 2)}
    result["ours"].update(compile_cold_s=compile_s, compiled=compile_s is not None, fused_adamw=True,
                          kernels_switched=kernels, memory_rule=rule, lr_rule=f"lr = 1e-4 * sqrt({volumes} / 2) = {lr:.2e}")
    result["crops_per_s_ratio"] = round(result["ours"]["crops_per_s"] / result["official"]["crops_per_s"], 2)
    return result


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--smoke", action="store_true", help="tiny sizes on CPU (checks the script, not a GPU)")
    parser.add_argument("--steps", type=int, default=15, help="timed steps per setting")
    parser.add_argument("--warmup", type=int, default=3, help="untimed steps per setting")
    parser.add_argument("--max-seconds", type=float, default=60.0, help="stop timing a setting after this long")
    parser.add_argument("--max-volumes", type=int, default=16, help="largest per-GPU batch the rule may pick")
    parser.add_argument("--no-compile", action="store_true")
    parser.add_argument("--skip-infer", action="store_true")
    args = parser.parse_args(argv)
    if args.smoke:
        args.steps, args.warmup = 1, 0
    result = {"benchmark": "gpu_bench", "smoke": args.smoke, "step": compare_steps(args)}
    if not args.skip_infer:
        import gpu_infer

        with contextlib.redirect_stdout(sys.stderr):  # gpu_infer prints its own line; ours is the only one
            result["infer"] = gpu_infer.main(["--smoke", "--repeats", "1"] if args.smoke else ["--repeats", "3"])
    print(json.dumps(result))
    return result


if __name__ == "__main__":
    main()
