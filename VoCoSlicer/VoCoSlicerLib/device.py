"""Device checks before a run (CUDA present, GPU architecture supported by this PyTorch build, free memory) and
honest time estimates from voxel counts, based on CPU timings measured on this project's 2-core machine."""

from __future__ import annotations

import math
import os
from pathlib import Path
from collections.abc import Sequence
from dataclasses import dataclass

# Seconds per voxel of network input on 2 CPU threads (torch 2.13 CPU, fp32), measured for MONAI SwinUNETR:
# sliding-window inference 96^3 windows, 172.4 s / 18 windows (feature size 48) and 67.3 s / 18 (feature size 12);
# one training step at 64^3: 2.69 s (fs 12), 8.48 s (fs 48), forward + backward + optimizer step.
MEASURED_THREADS = 2
INFER_S_PER_VOXEL = {12: 67.3 / 18 / 96**3, 48: 172.4 / 18 / 96**3}
TRAIN_S_PER_VOXEL = {12: 2.69 / 64**3, 48: 8.48 / 64**3}


@dataclass(frozen=True)
class DeviceCheck:
    """The outcome of checking a device before a run; ``reason`` says why it cannot be used (empty when ok)."""

    device: str
    ok: bool
    reason: str = ""
    gpu_name: str = ""
    free_gb: float | None = None
    total_gb: float | None = None


def arch_supported(capability: tuple[int, int], arch_list: Sequence[str]) -> bool:
    """Whether a GPU of compute ``capability`` can run kernels built for ``arch_list`` (e.g. ``sm_90``).

    Exact ``sm_XY`` binaries run on the same major with minor >= Y; ``compute_XY`` PTX is JIT-compiled for any
    newer GPU.
    """
    major, minor = capability
    for arch in arch_list:
        kind, _, digits = arch.partition("_")
        if not digits.isdigit():
            continue
        a_major, a_minor = int(digits[:-1]), int(digits[-1])
        if kind == "sm" and a_major == major and a_minor <= minor:
            return True
        if kind == "compute" and (a_major, a_minor) <= (major, minor):
            return True
    return False


def gpu_facts() -> dict:
    """What this process's PyTorch sees of GPU 0: build, name, compute capability, kernel list, free/total GiB.

    Initialises CUDA in the calling process: the module calls it only in a child process (:func:`probe_gpu`).
    """
    import torch

    facts = {"torch": torch.__version__, "cuda_build": torch.version.cuda, "available": torch.cuda.is_available(),
             "pid": os.getpid()}
    if facts["available"]:
        free, total = (b / 2**30 for b in torch.cuda.mem_get_info(0))
        facts.update(name=torch.cuda.get_device_name(0), capability=list(torch.cuda.get_device_capability(0)),
                     arch_list=list(torch.cuda.get_arch_list()), free_gb=free, total_gb=total)
    return facts


def probe_gpu(python: str | None = None, timeout_s: float = 120.0) -> dict:
    """:func:`gpu_facts` measured in a child process of ``python``, so Slicer's own process never holds a CUDA
    context (which keeps GPU memory for the rest of the session); ``{"error": ...}`` when the child fails."""
    import json
    import subprocess
    import sys

    code = ("import json, sys; sys.path.insert(0, sys.argv[1]); from VoCoSlicerLib.device import gpu_facts; "
            "print(json.dumps(gpu_facts()))")
    lib_parent = str(Path(__file__).resolve().parents[1])
    try:
        done = subprocess.run([python or sys.executable, "-c", code, lib_parent], capture_output=True, text=True,
                              timeout=timeout_s, stdin=subprocess.DEVNULL)
        return json.loads(done.stdout.strip().splitlines()[-1])
    except (OSError, subprocess.SubprocessError, ValueError, IndexError) as exc:
        return {"error": f"the GPU check could not run ({exc})", "available": False}


def decide_device(requested: str, required_gb: float, facts: dict) -> DeviceCheck:
    """Choose ``cuda`` or ``cpu`` for ``requested`` ('auto', 'cuda', 'cpu') from measured GPU ``facts``, and say
    why a GPU is not used (for 'auto' the reason is kept: the user is told the run falls back to the CPU)."""
    if requested not in ("auto", "cuda", "cpu"):
        return DeviceCheck(requested, False, f"unknown device {requested!r}; use auto, cuda or cpu")
    if requested == "cpu":
        return DeviceCheck("cpu", True)
    fallback = "cpu" if requested == "auto" else "cuda"
    if facts.get("error"):
        return DeviceCheck(fallback, requested == "auto", facts["error"])
    build = f"PyTorch {facts.get('torch')} (CUDA {facts['cuda_build']})" if facts.get("cuda_build") else \
        f"PyTorch {facts.get('torch')} is a CPU-only build"
    if not facts.get("available"):
        return DeviceCheck(fallback, requested == "auto", f"no CUDA GPU is usable: {build}. Install a CUDA build "
                                                          "with the PyTorch Utils module, or choose cpu.")
    name, capability, archs = facts["name"], tuple(facts["capability"]), facts["arch_list"]
    if not arch_supported(capability, archs):
        reason = (f"{name} is sm_{capability[0]}{capability[1]}, but {build} has kernels only for "
                  f"{', '.join(archs)}. Reinstall PyTorch (PyTorch Utils) with a newer CUDA.")
        return DeviceCheck(fallback, requested == "auto", reason, name)
    free, total = float(facts["free_gb"]), float(facts["total_gb"])
    if free < required_gb:
        reason = (f"{name} has {free:.1f} GiB free of {total:.1f} GiB; this run needs about {required_gb:.1f} GiB. "
                  "Close other GPU programs, pick a smaller model, or use cpu.")
        return DeviceCheck(fallback, requested == "auto", reason, name, free, total)
    return DeviceCheck("cuda", True, "", name, free, total)


def check_device(requested: str, required_gb: float) -> DeviceCheck:
    """:func:`decide_device` with the GPU facts of this process (for scripts; the module uses :func:`probe_gpu`)."""
    if requested == "cpu":
        return DeviceCheck("cpu", True)
    return decide_device(requested, required_gb, gpu_facts())


def _rate(table: dict[int, float], feature_size: int, threads: int | None) -> float:
    """Seconds per voxel for ``feature_size`` (cost grows about with its square beyond the measured range)."""
    sizes = sorted(table)
    if feature_size <= sizes[0]:
        rate = table[sizes[0]]
    elif feature_size <= sizes[-1]:
        lo, hi = sizes[0], sizes[-1]
        rate = table[lo] + (table[hi] - table[lo]) * (feature_size - lo) / (hi - lo)
    else:
        rate = table[sizes[-1]] * (feature_size / sizes[-1]) ** 2
    threads = threads or min(os.cpu_count() or 1, 32)
    return rate * MEASURED_THREADS / max(threads, 1)


def inference_memory_gb(feature_size: int, roi: Sequence[int] = (96, 96, 96)) -> float:
    """Rough GPU memory (GiB) of SwinUNETR sliding-window inference: fp32 weights (72M parameters at feature
    size 48, growing with its square) plus activations of one window, scaled from the 3.5 GB peak measured for
    feature size 48 at 96^3 (of which about 0.5 GB was the Python process itself)."""
    weights = 72e6 * 4 * (feature_size / 48) ** 2 / 2**30
    return weights + 2.7 * (feature_size / 48) * math.prod(roi) / 96**3


def window_count(shape: Sequence[int], roi: Sequence[int], overlap: float) -> int:
    """Number of sliding windows MONAI uses to cover ``shape`` with windows ``roi`` at ``overlap``."""
    count = 1
    for n, r in zip(shape, roi):
        step = max(int(r * (1 - overlap)), 1)
        count *= 1 if n <= r else math.ceil((n - r) / step) + 1
    return count


def resampled_shape(shape: Sequence[int], spacing: Sequence[float], target: Sequence[float]) -> tuple[int, ...]:
    """Grid size after resampling to ``target`` spacing (mm)."""
    return tuple(max(int(round(n * s / t)), 1) for n, s, t in zip(shape, spacing, target))


def estimate_inference_s(shape: Sequence[int], spacing: Sequence[float], feature_size: int = 48,
                         target_spacing: Sequence[float] = (1.5, 1.5, 1.5), roi: Sequence[int] = (96, 96, 96),
                         overlap: float = 0.75, threads: int | None = None) -> float:
    """CPU seconds for sliding-window segmentation of a CT of ``shape`` voxels at ``spacing`` mm."""
    windows = window_count(resampled_shape(shape, spacing, target_spacing), roi, overlap)
    return windows * math.prod(roi) * _rate(INFER_S_PER_VOXEL, feature_size, threads)


def estimate_training_s(steps: int, crops_per_step: int, crop: Sequence[int] = (64, 64, 64),
                        feature_size: int = 48, threads: int | None = None) -> float:
    """CPU seconds for ``steps`` optimizer steps that each push ``crops_per_step`` crops through the network."""
    return steps * crops_per_step * math.prod(crop) * _rate(TRAIN_S_PER_VOXEL, feature_size, threads)


def format_duration(seconds: float) -> str:
    """'45 s', '12 min', '3.5 h' or '2.1 days': the scale a person plans with."""
    if seconds < 90:
        return f"{seconds:.0f} s"
    if seconds < 90 * 60:
        return f"{seconds / 60:.0f} min"
    if seconds < 48 * 3600:
        return f"{seconds / 3600:.1f} h"
    return f"{seconds / 86400:.1f} days"
