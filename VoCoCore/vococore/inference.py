"""Segment CT volumes with a model package: preprocess, sliding-window argmax, and labels back on the input grid.

Memory (N = input voxels, M = preprocessed voxels, C = classes): the input volume (and one float32 copy during
preprocessing), the preprocessed image (float32, M), the class-score sums (float16, C·M; float32 with
``accumulate_dtype="float32"``), the uint8 label on the preprocessed grid, and the uint8 label on the input grid
(N), filled by world-position nearest neighbour a few slices at a time. No all-class float volume at input
resolution is ever built. On CUDA, preprocessing, windows and the label mapping all run on the GPU.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn

from vococore.errors import VoCoError
from vococore.package import ModelPackage, load_package
from vococore.preprocess import IMAGE, Preprocessed, build_transform, to_meta_tensor
from vococore.sliding_window import BLEND_MODES, InferenceCancelled, sliding_window_argmax
from vococore.volume import Volume

__all__ = ["InferenceCancelled", "InferenceOptions", "pick_device", "plan_outputs", "segment", "segment_files"]

ACCUMULATE_DTYPES = {"float16": torch.float16, "float32": torch.float32}


@dataclass
class InferenceOptions:
    """Sliding-window settings; ``None`` takes the package's value (ROI, overlap) or an automatic choice."""

    roi_size: tuple[int, int, int] | None = None
    overlap: float | None = None  # package default (0.5 for ours); the official VoCo code uses 0.75 constant
    blend: str = "gaussian"
    sw_batch_size: int = 1
    device: str = "auto"  # auto | cpu | cuda | cuda:N
    amp: bool | None = None  # None: on for CUDA (float16), off on CPU
    accumulate_dtype: str = "float16"

    def __post_init__(self) -> None:
        if self.blend not in BLEND_MODES:
            raise VoCoError(f"blend must be one of {BLEND_MODES}, got {self.blend!r}")
        if self.accumulate_dtype not in ACCUMULATE_DTYPES:
            raise VoCoError(f"accumulate_dtype must be one of {sorted(ACCUMULATE_DTYPES)}")
        if self.overlap is not None and not 0 <= self.overlap < 1:
            raise VoCoError(f"overlap must be in [0, 1), got {self.overlap}")
        if self.sw_batch_size < 1:
            raise VoCoError(f"sw_batch_size must be at least 1, got {self.sw_batch_size}")


def pick_device(name: str = "auto") -> torch.device:
    """``auto`` = CUDA when available, else CPU; asking for CUDA without one is a clear error."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise VoCoError(f"device {name!r} requested but this torch has no usable CUDA device; use --device cpu")
    return torch.device(name)


def _resolve(model: str | os.PathLike | tuple[nn.Module, ModelPackage], device: torch.device
             ) -> tuple[nn.Module, ModelPackage]:
    if isinstance(model, (str, os.PathLike)):
        return load_package(model, device)
    network, package = model
    return network.to(device).eval(), package


def segment(model: str | os.PathLike | tuple[nn.Module, ModelPackage], volume: Volume,
            options: InferenceOptions | None = None, progress: Callable[[float], None] | None = None,
            cancel: Callable[[], bool] | None = None) -> Volume:
    """Label volume (uint8) on exactly ``volume``'s grid, from a package path or a ``(network, package)`` pair.

    ``progress(fraction)`` is called as windows finish (0..1); ``cancel()`` returning True stops the run with
    :class:`InferenceCancelled`. The result's ``meta["labels"]`` holds the package's :class:`LabelInfo` list.
    """
    options = options or InferenceOptions()
    device = pick_device(options.device)
    network, package = _resolve(model, device)
    roi = tuple(options.roi_size or package.roi_size)
    overlap = package.overlap if options.overlap is None else options.overlap
    amp = device.type == "cuda" if options.amp is None else options.amp
    pre = _preprocess_on(volume, package.preprocess, device)
    report = None if progress is None else (lambda done, total: progress(0.95 * done / total))
    labels = sliding_window_argmax(network, pre.image.as_tensor()[None], roi, overlap=overlap, blend=options.blend,
                                   sw_batch_size=options.sw_batch_size,
                                   accumulate_dtype=ACCUMULATE_DTYPES[options.accumulate_dtype], amp=amp,
                                   progress=report, cancel=cancel)
    back = labels_to_grid(labels, pre.affine, volume)
    if progress is not None:
        progress(1.0)
    return volume.with_array(back, labels=package.labels)


def _preprocess_on(volume: Volume, config, device: torch.device) -> Preprocessed:
    """:class:`Preprocessor` run with the image already on ``device`` (resampling a large CT on the GPU)."""
    transform = build_transform(config)
    out = transform({IMAGE: to_meta_tensor(volume).to(device)})
    return Preprocessed(image=out[IMAGE], label=None, original=volume, transform=transform)


@torch.inference_mode()
def labels_to_grid(labels: torch.Tensor, labels_affine: np.ndarray, target: Volume, slab: int = 8) -> np.ndarray:
    """Nearest-neighbour map of a uint8 label (on any grid, any device) onto ``target``'s grid by world position.

    This undoes padding, crop, spacing and orientation in one step (the preprocessed affine records them all),
    a few slices at a time, so memory stays at the uint8 output plus one slab of indices.
    """
    to_labels = torch.as_tensor(np.linalg.inv(labels_affine) @ target.affine, dtype=torch.float64,
                                device=labels.device)
    ni, nj, nk = target.shape
    grid = torch.stack(torch.meshgrid(torch.arange(ni, device=labels.device, dtype=torch.float64),
                                      torch.arange(nj, device=labels.device, dtype=torch.float64),
                                      indexing="ij"), -1).reshape(-1, 2)
    limits = torch.as_tensor(labels.shape, device=labels.device)
    out = np.empty(target.shape, dtype=np.uint8)
    for k0 in range(0, nk, slab):
        ks = torch.arange(k0, min(k0 + slab, nk), device=labels.device, dtype=torch.float64)
        ijk = torch.cat([grid.repeat(len(ks), 1), ks.repeat_interleave(len(grid))[:, None]], 1)
        idx = torch.round(ijk @ to_labels[:3, :3].T + to_labels[:3, 3]).long()
        inside = ((idx >= 0) & (idx < limits)).all(1)
        values = torch.zeros(len(idx), dtype=torch.uint8, device=labels.device)
        values[inside] = labels[idx[inside, 0], idx[inside, 1], idx[inside, 2]]
        out[:, :, k0:k0 + len(ks)] = values.reshape(len(ks), ni, nj).permute(1, 2, 0).cpu().numpy()
    return out


def plan_outputs(inputs: list[str | os.PathLike], output: str | os.PathLike, suffix: str = ".nii.gz"
                 ) -> tuple[list[Path], list[Path]]:
    """Pair inputs with output files. A folder input holding volume files means each of them, any other folder
    is one DICOM series. One input and an ``output`` with a volume suffix gives that file; otherwise ``output``
    is a folder receiving ``<input name>_seg<suffix>`` for each input."""
    from vococore.io.formats import detect_format, full_suffix

    cases: list[Path] = []
    for item in map(Path, inputs):
        if not item.exists():
            raise VoCoError("no such file or folder", item)
        files = sorted(p for p in item.iterdir() if p.is_file() and _known(p)) if item.is_dir() else [item]
        cases.extend(files or [item])
    output = Path(output)
    detect_format("x" + suffix)
    if len(cases) == 1 and _known(output):
        return cases, [output]
    names = [(c.name[:-len(full_suffix(c))] if _known(c) else c.name) + "_seg" + suffix for c in cases]
    if len(set(names)) != len(names):
        raise VoCoError("two inputs would write the same output name; run them separately", output)
    return cases, [output / n for n in names]


def _known(path: Path) -> bool:
    from vococore.io.formats import detect_format

    try:
        detect_format(path)
        return True
    except VoCoError:
        return False


def segment_files(package_path: str | os.PathLike, inputs: list[Path], outputs: list[Path],
                  options: InferenceOptions | None = None, overwrite: bool = False,
                  progress: Callable[[int, float], None] | None = None) -> list[Path]:
    """Segment each input file or DICOM folder into the matching output file (format by suffix), atomically.

    The package is loaded once; ``progress(case_index, fraction)`` reports each case. Outputs are checked
    before any work, so an existing file (without ``overwrite``) stops the run early.
    """
    from vococore.atomic import check_writable
    from vococore.io import read_volume, write_labelmap
    from vococore.io.formats import detect_format

    if len(inputs) != len(outputs):
        raise ValueError("inputs and outputs must pair up")
    for out in outputs:
        detect_format(out)
        check_writable(out, overwrite)
    options = options or InferenceOptions()
    loaded = load_package(package_path, pick_device(options.device))
    written = []
    for i, (src, dst) in enumerate(zip(inputs, outputs)):
        volume = read_volume(src)
        report = None if progress is None else (lambda fraction, i=i: progress(i, fraction))
        result = segment(loaded, volume, options, progress=report)
        written.append(write_labelmap(result.array, volume, dst, label_info=loaded[1].labels, overwrite=overwrite))
    return written
