"""Memory-bounded sliding-window segmentation: blended class scores summed in a low-precision buffer.

Unlike MONAI's ``sliding_window_inference``, the class scores are kept in ``accumulate_dtype`` (float16 by
default; MONAI: float32) plus one float32 weight map, and normalised in place. Window placement and blending
weights are MONAI's (``dense_patch_slices``, ``compute_importance_map``, rewritten here so that a small CNN's
inference does not import MONAI), so the result is MONAI's up to precision.
The network runs with the faster inference kernels of :mod:`vococore.networks.fast_inference` (same numbers).
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Callable, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from vococore.networks.fast_inference import fast_inference

BLEND_MODES = ("gaussian", "constant")


class InferenceCancelled(RuntimeError):
    """Raised when the caller's cancel check returns True between window batches."""


def scan_intervals(image_size: Sequence[int], roi_size: Sequence[int], overlap: float) -> list[int]:
    """Step between windows per axis, as MONAI computes it (a window as large as the image does not move)."""
    return [r if r == s else max(int(r * (1 - overlap)), 1) for s, r in zip(image_size, roi_size)]


def window_slices(image_size: Sequence[int], roi_size: Sequence[int], steps: Sequence[int]) -> list[tuple[slice, ...]]:
    """Windows as MONAI's ``dense_patch_slices`` places them (first axis slowest): every ``step`` along an axis
    until one reaches the end, that last one moved back to end there. Ours, so that inference with a small CNN
    does not import MONAI (see :mod:`vococore.networks.lean_unet`); ``test_lean_preprocessing.py`` compares them."""
    per_axis = []
    for size, roi, step in zip(image_size, roi_size, steps):
        starts = [0]
        while starts[-1] + roi < size:
            starts.append(min(starts[-1] + step, size - roi))
        per_axis.append(starts)
    return [tuple(slice(s, s + r) for s, r in zip(corner, roi_size)) for corner in itertools.product(*per_axis)]


def blend_weight(roi_size: tuple[int, ...], blend: str, device: torch.device) -> torch.Tensor:
    """Per-voxel weight of a window's output: 1 (constant) or MONAI's ``compute_importance_map`` Gaussian (sigma
    1/8 of the window per axis, the product of 1D Gaussians centred on the window), floored at its smallest value
    and at 1e-3 so that no voxel weighs zero."""
    if blend == "constant":
        return torch.ones(roi_size, dtype=torch.float32, device=device)
    weight = torch.ones((), dtype=torch.float32, device=device)
    for axis, r in enumerate(roi_size):
        x = torch.arange(-(r - 1) / 2.0, (r - 1) / 2.0 + 1, dtype=torch.float32, device=device)
        gauss = torch.exp(x**2 / (-2 * (r * 0.125) ** 2))
        weight = weight.unsqueeze(-1) * gauss[(None,) * axis] if axis else gauss
    return weight.clamp(min=max(float(weight.min()), 1e-3))


def _pad_to_roi(image: torch.Tensor, roi_size: Sequence[int]) -> tuple[torch.Tensor, list[slice]]:
    """Pad (B, C, *spatial) symmetrically up to ``roi_size``; returns the padded image and the crop undoing it."""
    pads, crop = [], []
    for size, roi in zip(image.shape[2:], roi_size):
        extra = max(roi - size, 0)
        pads.append((extra // 2, extra - extra // 2))
        crop.append(slice(extra // 2, extra // 2 + size))
    flat = [p for pair in reversed(pads) for p in pair]
    return (F.pad(image, flat) if any(flat) else image), crop


@torch.inference_mode()
def sliding_window_scores(network: nn.Module | Callable[[torch.Tensor], torch.Tensor], image: torch.Tensor,
                          roi_size: Sequence[int], overlap: float = 0.5, blend: str = "gaussian",
                          sw_batch_size: int = 1, accumulate_dtype: torch.dtype = torch.float16,
                          amp: bool = False, progress: Callable[[int, int], None] | None = None,
                          cancel: Callable[[], bool] | None = None) -> torch.Tensor:
    """Blended class scores (C, X, Y, Z) in ``accumulate_dtype`` of ``network`` applied in overlapping
    ``roi_size`` windows of ``image`` (1, 1, X, Y, Z): the weighted mean of the window outputs, as MONAI's.

    ``progress(done, total)`` is called after each batch of windows; ``cancel()`` returning True stops with
    :class:`InferenceCancelled`. ``amp`` runs the network under autocast (float16 on CUDA, bfloat16 on CPU).
    """
    if blend not in BLEND_MODES:
        raise ValueError(f"blend must be one of {BLEND_MODES}, got {blend!r}")
    if not 0 <= overlap < 1:
        raise ValueError(f"overlap must be in [0, 1), got {overlap}")
    device = image.device
    padded, crop = _pad_to_roi(image, roi_size)
    size = padded.shape[2:]
    windows = window_slices(size, roi_size, scan_intervals(size, roi_size, overlap))
    weight = blend_weight(tuple(roi_size), blend, device)
    autocast = torch.autocast(device.type, dtype=torch.float16 if device.type == "cuda" else torch.bfloat16,
                              enabled=amp)
    scores: torch.Tensor | None = None
    weights = torch.zeros(size, dtype=torch.float32, device=device)
    total = len(windows)
    with fast_inference(network):
        for start in range(0, total, sw_batch_size):
            if cancel is not None and cancel():
                raise InferenceCancelled(f"cancelled after {start} of {total} windows")
            batch_windows = windows[start:start + sw_batch_size]
            batch = torch.cat([padded[(slice(None), slice(None), *w)] for w in batch_windows])
            with autocast:
                out = network(batch)
            out = out.float() * weight
            if scores is None:
                scores = torch.zeros((out.shape[1], *size), dtype=accumulate_dtype, device=device)
            for window, window_scores in zip(batch_windows, out):
                scores[(slice(None), *window)] += window_scores.to(accumulate_dtype)
                weights[window] += weight
            if progress is not None:
                progress(min(start + sw_batch_size, total), total)
    assert scores is not None
    scores, weights = scores[(slice(None), *crop)], weights[tuple(crop)]
    for x in range(scores.shape[1]):  # normalise in place, one x-plane at a time
        scores[:, x] /= weights[x].to(accumulate_dtype)
    return scores


def class_argmax(scores: torch.Tensor) -> torch.Tensor:
    """Argmax over the first (class) dim as uint8, first maximum on ties like ``argmax``. A running maximum over a
    handful of classes is several times faster than ``argmax(0)``, which reduces across the strided class dim."""
    best = scores[0].clone()
    labels = torch.zeros(scores.shape[1:], dtype=torch.uint8, device=scores.device)
    for c in range(1, scores.shape[0]):
        labels.masked_fill_(scores[c] > best, c)
        torch.maximum(best, scores[c], out=best)
    return labels


def argmax_in_slabs(scores: torch.Tensor, slab_voxels: int = 1 << 22) -> torch.Tensor:
    """Argmax over classes in slabs along x, so the int64 temporary stays small; returns uint8 (X, Y, Z)."""
    if scores.shape[0] > 256:
        raise ValueError(f"{scores.shape[0]} classes do not fit a uint8 label map")
    labels = torch.empty(scores.shape[1:], dtype=torch.uint8, device=scores.device)
    step = max(1, slab_voxels // max(math.prod(scores.shape[2:]), 1))
    for x in range(0, scores.shape[1], step):
        labels[x:x + step] = class_argmax(scores[:, x:x + step])
    return labels
