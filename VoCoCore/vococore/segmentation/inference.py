"""Segment CT volumes with a model package: preprocess, sliding-window argmax, and labels back on the input grid.

Memory (N = input voxels, M = preprocessed voxels, C = classes): the input volume (and one float32 copy during
preprocessing), the preprocessed image (float32, M), the class scores (float16, C·M; float32 with
``accumulate_dtype="float32"``) and a float32 weight map (M), and the uint8 label on the input grid (N), filled a
few slices at a time (scores interpolated trilinearly then argmax, or the argmax label by nearest neighbour).
No all-class float volume at input resolution is ever built. On CUDA, all of it runs on the GPU.
"""

from __future__ import annotations

import itertools
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn

from vococore.utils.errors import VoCoError
from vococore.segmentation.package import ModelPackage, load_package
from vococore.preprocessing.lean import InferenceInput, preprocess_for_inference, voxel_shift
from vococore.segmentation.sliding_window import (BLEND_MODES, InferenceCancelled, argmax_in_slabs, class_argmax,
                                     sliding_window_scores)
from vococore.utils.device import pick_device
from vococore.io.volume import Volume

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
    interpolation: str = "linear"  # linear: class scores onto the input grid, then argmax; nearest: the label

    def __post_init__(self) -> None:
        if self.interpolation not in ("linear", "nearest"):
            raise VoCoError(f"interpolation must be linear or nearest, got {self.interpolation!r}")
        if self.blend not in BLEND_MODES:
            raise VoCoError(f"blend must be one of {BLEND_MODES}, got {self.blend!r}")
        if self.accumulate_dtype not in ACCUMULATE_DTYPES:
            raise VoCoError(f"accumulate_dtype must be one of {sorted(ACCUMULATE_DTYPES)}")
        if self.overlap is not None and not 0 <= self.overlap < 1:
            raise VoCoError(f"overlap must be in [0, 1), got {self.overlap}")
        if self.sw_batch_size < 1:
            raise VoCoError(f"sw_batch_size must be at least 1, got {self.sw_batch_size}")


def _resolve(model: str | os.PathLike | tuple[nn.Module, ModelPackage], device: torch.device
             ) -> tuple[nn.Module, ModelPackage]:
    if isinstance(model, (str, os.PathLike)):
        return load_package(model, device, inference=True)
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
    pre = preprocess_for_inference(volume, package.preprocess, device)
    report = None if progress is None else (lambda done, total: progress(0.95 * done / total))
    scores = sliding_window_scores(network, pre.image[None], roi, overlap=overlap,
                                   blend=options.blend, sw_batch_size=options.sw_batch_size,
                                   accumulate_dtype=ACCUMULATE_DTYPES[options.accumulate_dtype], amp=amp,
                                   progress=report, cancel=cancel)
    scores, affine = _unpadded(scores, pre)
    if options.interpolation == "linear":
        back = scores_to_grid(scores, affine, volume)
    else:
        back = labels_to_grid(argmax_in_slabs(scores), affine, volume)
    if progress is not None:
        progress(1.0)
    return volume.with_array(back, labels=package.labels)


def _unpadded(scores: torch.Tensor, pre: InferenceInput) -> tuple[torch.Tensor, np.ndarray]:
    """Scores without the margins that the final padding (``min_size``) added, and the affine of what is left:
    those voxels hold no image, so input voxels near them follow the real data's border, as in MONAI's inverse."""
    spatial = pre.pads
    if not any(p for pair in spatial for p in pair):
        return scores, pre.affine
    crop = tuple(slice(before, size - after) for (before, after), size in zip(spatial, scores.shape[1:]))
    return scores[(slice(None), *crop)], pre.affine @ voxel_shift([before for before, _ in spatial])


def _slab_points(target: Volume, k0: int, k1: int, device: torch.device) -> torch.Tensor:
    """Voxel indices (n, 3) of target slices k0..k1-1, i fastest last: ordered (k, i, j) for a reshape."""
    ni, nj, _ = target.shape
    ii, jj = torch.meshgrid(torch.arange(ni, device=device, dtype=torch.float64),
                            torch.arange(nj, device=device, dtype=torch.float64), indexing="ij")
    plane = torch.stack([ii.reshape(-1), jj.reshape(-1)], 1)
    ks = torch.arange(k0, k1, device=device, dtype=torch.float64)
    return torch.cat([plane.repeat(len(ks), 1), ks.repeat_interleave(len(plane))[:, None]], 1)


def _axis_permutation(to_scores: np.ndarray) -> list[int] | None:
    """For a target-voxel -> score-voxel matrix that only scales, flips and permutes axes (grids that differ by
    orientation, spacing and crop), the score axis each target axis maps to; None for any rotation or shear."""
    linear = np.abs(to_scores[:3, :3])
    nonzero = linear > 1e-9 * linear.max()
    if not ((nonzero.sum(0) == 1).all() and (nonzero.sum(1) == 1).all()):
        return None
    return [int(a) for a in nonzero.argmax(0)]


def _lerp_along(values: torch.Tensor, dim: int, coords: torch.Tensor) -> torch.Tensor:
    """Linear interpolation (float32) of ``values`` along ``dim`` at fractional indices ``coords`` (1D), zero
    beyond the edges as ``grid_sample(padding_mode="zeros", align_corners=True)``; ``dim`` gets ``len(coords)``."""
    size = values.shape[dim]
    low = torch.floor(coords)
    frac = coords - low
    below, above = low.long(), low.long() + 1
    shape = [1] * values.dim()
    shape[dim] = len(coords)
    weights = [((1 - frac) * ((below >= 0) & (below < size))).float().view(shape),
               (frac * ((above >= 0) & (above < size))).float().view(shape)]
    return sum(values.index_select(dim, index.clamp(0, size - 1)).float() * weight
               for index, weight in zip((below, above), weights))


def _separable_slab(scores: torch.Tensor, to_scores: torch.Tensor, axes: list[int], ni: int, nj: int, k0: int,
                    k1: int) -> torch.Tensor:
    """Trilinear class scores (C, ni, nj, k1-k0) of target slices k0..k1-1 for an axis-aligned mapping, as three
    1D interpolations (k first, so the gathers stay small)."""
    device = scores.device
    positions = [torch.arange(n, device=device, dtype=torch.float64) for n in (ni, nj)]
    positions.append(torch.arange(k0, k1, device=device, dtype=torch.float64))
    values = None
    for target_axis in (2, 0, 1):
        axis = axes[target_axis]
        coords = positions[target_axis] * to_scores[axis, target_axis] + to_scores[axis, 3]
        values = _lerp_along(scores if values is None else values, axis + 1, coords)
    order = [axes[t] + 1 for t in range(3)]  # score dims holding target i, j, k
    return values.permute(0, *order)


UNMIXED = 255  # the corners of this cell do not all have the same label: interpolate there


def _uniform_cells(scores: torch.Tensor) -> torch.Tensor | None:
    """A lookup table of the label a target voxel gets without interpolation, by cell of 2×2×2 neighbouring
    score voxels: the corners' argmax label where all eight have the same (a trilinear value inside is a
    weighted sum of score vectors that all rank that class first, ties to the lower class, so it does too), else
    UNMIXED. Along each axis, slots 2..n hold the n-1 cells; slots 1 and n+1 the band less than one voxel beyond
    the scores (UNMIXED: partly zero-padded); slots 0 and n+2 everything farther out (0: all weights are zero, so
    the first class wins, as ``class_argmax`` of zeros). None where the shortcut does not apply (an axis of one
    voxel, or more than 255 classes)."""
    if scores.shape[0] > UNMIXED or min(scores.shape[1:]) < 2:
        return None
    labels = argmax_in_slabs(scores)
    corner = labels[:-1, :-1, :-1]
    same = torch.ones_like(corner, dtype=torch.bool)
    for dx, dy, dz in list(itertools.product((0, 1), repeat=3))[1:]:
        same &= labels[dx:dx + corner.shape[0], dy:dy + corner.shape[1], dz:dz + corner.shape[2]] == corner
    table = torch.full([n + 3 for n in labels.shape], UNMIXED, dtype=torch.uint8, device=scores.device)
    table[2:-2, 2:-2, 2:-2] = torch.where(same, corner, torch.full_like(corner, UNMIXED))
    table[[0, -1]] = table[:, [0, -1]] = table[:, :, [0, -1]] = 0
    return table


def _cell_slots(coords: torch.Tensor, size: int) -> torch.Tensor:
    """Slots of :func:`_uniform_cells`'s table along an axis of ``size`` score voxels for fractional indices."""
    slots = coords.floor().long().clamp(0, size - 2) + 2
    slots[(coords < 0) | (coords > size - 1)] = 1
    slots[coords > size - 1] = size + 1
    slots[coords <= -1] = 0
    slots[coords >= size] = size + 2
    return slots


def _separable_labels(scores: torch.Tensor, table: torch.Tensor, to_scores: torch.Tensor, axes: list[int],
                      ni: int, nj: int, k0: int, k1: int, flat_scores: torch.Tensor,
                      chunk_values: int = 1 << 23) -> torch.Tensor:
    """Labels (ni, nj, k1-k0) of target slices k0..k1-1 for an axis-aligned mapping: a target voxel in a cell of
    one label (see :func:`_uniform_cells`) takes it, any other is interpolated at its own position with the
    arithmetic of :func:`_separable_slab` (same weights, same order: the same float32 values), so the result is
    that function's argmax (but where float32 rounding would decide a near-tie inside a uniform cell) while most
    voxels of a large CT skip the interpolation. ``flat_scores``: the scores as float32 (C, X*Y*Z)."""
    device = scores.device
    positions = [torch.arange(n, device=device, dtype=torch.float64) for n in (ni, nj)]
    positions.append(torch.arange(k0, k1, device=device, dtype=torch.float64))
    coords = [positions[t] * to_scores[axes[t], t] + to_scores[axes[t], 3] for t in range(3)]  # per target axis
    labels = table
    for t in range(3):
        labels = labels.index_select(axes[t], _cell_slots(coords[t], scores.shape[1 + axes[t]]))
    labels = labels.permute(*[axes[t] for t in range(3)]).contiguous()  # target order (i, j, k)
    todo = torch.nonzero(labels == UNMIXED)
    step = max(1, chunk_values // (8 * scores.shape[0]))
    for start in range(0, len(todo), step):
        points = todo[start:start + step]
        values = _point_lerp(flat_scores, tuple(scores.shape[1:]), [coords[t][points[:, t]] for t in range(3)], axes)
        labels[points[:, 0], points[:, 1], points[:, 2]] = class_argmax(values)
    return labels


def _point_lerp(flat_scores: torch.Tensor, shape: tuple[int, ...], coords: list[torch.Tensor], axes: list[int]
                ) -> torch.Tensor:
    """Class scores (C, n) float32 at n points with fractional score indices ``coords[t]`` along score axis
    ``axes[t]`` of the scores (C, *shape) given flattened as float32 (C, X*Y*Z), interpolated along target axes
    k, i, j in turn with :func:`_lerp_along`'s weights and zeros beyond the edges, as :func:`_separable_slab`
    does for whole slices."""
    corners: list[tuple[torch.Tensor, torch.Tensor]] = []
    weights: list[tuple[torch.Tensor, torch.Tensor]] = []
    for t in range(3):
        size = shape[axes[t]]
        low = torch.floor(coords[t])
        frac = coords[t] - low
        below, above = low.long(), low.long() + 1
        weights.append((((1 - frac) * ((below >= 0) & (below < size))).float(),
                        (frac * ((above >= 0) & (above < size))).float()))
        corners.append((below.clamp(0, size - 1), above.clamp(0, size - 1)))
    strides = [int(np.prod(shape[a + 1:])) for a in range(3)]  # of score axis a in the flattened voxels
    gathered = {}
    for pick in itertools.product((0, 1), repeat=3):  # pick[t]: below (0) or above (1) along target axis t
        flat = sum(corners[t][pick[t]] * strides[axes[t]] for t in range(3))
        gathered[pick] = flat_scores.index_select(1, flat)
    for t in (2, 0, 1):  # collapse target axis t: value = below * weight + above * weight
        merged = {}
        for pick, value in gathered.items():
            if pick[t] == 0:
                other = pick[:t] + (1,) + pick[t + 1:]
                merged[pick] = value * weights[t][0] + gathered[other] * weights[t][1]
        gathered = merged
    return gathered[(0, 0, 0)]


@torch.inference_mode()
def scores_to_grid(scores: torch.Tensor, scores_affine: np.ndarray, target: Volume, slab: int = 4) -> np.ndarray:
    """Argmax (uint8) on ``target``'s grid of class scores (C, X, Y, Z) interpolated trilinearly at each target
    voxel's world position (zero outside, so background wins beyond one voxel) — MONAI's invert-then-argmax,
    computed a few target slices at a time: as three 1D interpolations when the grids differ only by axis order,
    flips, spacing and offset (the usual case), else by ``grid_sample`` on the bounding box those slices need."""
    import torch.nn.functional as F

    device = scores.device
    matrix = np.linalg.inv(scores_affine) @ target.affine
    to_scores = torch.as_tensor(matrix, dtype=torch.float64, device=device)
    axes = _axis_permutation(matrix)
    ni, nj, nk = target.shape
    size = torch.as_tensor(scores.shape[1:], device=device)
    out = np.zeros(target.shape, dtype=np.uint8)
    cells = _uniform_cells(scores) if axes is not None else None
    flat_scores = scores.reshape(scores.shape[0], -1).float() if cells is not None else None  # exact from float16
    for k0 in range(0, nk, slab):
        k1 = min(k0 + slab, nk)
        if cells is not None:
            out[:, :, k0:k1] = _separable_labels(scores, cells, to_scores, axes, ni, nj, k0, k1,
                                                 flat_scores).cpu().numpy()
            continue
        if axes is not None:
            out[:, :, k0:k1] = class_argmax(_separable_slab(scores, to_scores, axes, ni, nj, k0, k1)).cpu().numpy()
            continue
        pos = _slab_points(target, k0, k1, device) @ to_scores[:3, :3].T + to_scores[:3, 3]
        lo = torch.clamp(pos.min(0).values.floor().long(), min=0)
        hi = torch.minimum(pos.max(0).values.ceil().long() + 1, size)
        if (hi <= lo).any():  # these slices lie outside the preprocessed region
            continue
        box = scores[:, lo[0]:hi[0], lo[1]:hi[1], lo[2]:hi[2]].float()
        extent = (hi - lo - 1).clamp(min=1).to(torch.float64)
        norm = ((pos - lo) / extent * 2 - 1).flip(-1).to(torch.float32)  # grid_sample wants (z, y, x) order
        values = F.grid_sample(box[None], norm[None, :, None, None], mode="bilinear", padding_mode="zeros",
                               align_corners=True)[0, :, :, 0, 0]
        labels = class_argmax(values)
        out[:, :, k0:k1] = labels.reshape(k1 - k0, ni, nj).permute(1, 2, 0).cpu().numpy()
    return out


@torch.inference_mode()
def labels_to_grid(labels: torch.Tensor, labels_affine: np.ndarray, target: Volume, slab: int = 8) -> np.ndarray:
    """Nearest-neighbour map of a uint8 label (on any grid, any device) onto ``target``'s grid by world position.

    This undoes padding, crop, spacing and orientation in one step (the preprocessed affine records them all),
    a few slices at a time, so memory stays at the uint8 output plus one slab of indices.
    """
    to_labels = torch.as_tensor(np.linalg.inv(labels_affine) @ target.affine, dtype=torch.float64,
                                device=labels.device)
    ni, nj, nk = target.shape
    limits = torch.as_tensor(labels.shape, device=labels.device)
    out = np.empty(target.shape, dtype=np.uint8)
    for k0 in range(0, nk, slab):
        k1 = min(k0 + slab, nk)
        idx = torch.round(_slab_points(target, k0, k1, labels.device) @ to_labels[:3, :3].T + to_labels[:3, 3]).long()
        inside = ((idx >= 0) & (idx < limits)).all(1)
        values = torch.zeros(len(idx), dtype=torch.uint8, device=labels.device)
        values[inside] = labels[idx[inside, 0], idx[inside, 1], idx[inside, 2]]
        out[:, :, k0:k1] = values.reshape(k1 - k0, ni, nj).permute(1, 2, 0).cpu().numpy()
    return out


def plan_outputs(inputs: list[str | os.PathLike], output: str | os.PathLike, suffix: str = ".nii.gz"
                 ) -> tuple[list[Path], list[Path]]:
    """Pair inputs with output files. A folder input holding volume files means each of them, any other folder
    is one DICOM series. One input and an ``output`` with a volume suffix gives that file; otherwise ``output``
    is a folder receiving ``<input name>_seg<suffix>`` for each input (``.dcm``: DICOM SEG)."""
    from vococore.io.formats import detect_output_format, full_suffix

    cases: list[Path] = []
    for item in map(Path, inputs):
        if not item.exists():
            raise VoCoError("no such file or folder", item)
        files = sorted(p for p in item.iterdir() if p.is_file() and _known(p)) if item.is_dir() else [item]
        cases.extend(files or [item])
    output = Path(output)
    detect_output_format("x" + suffix)
    if len(cases) == 1 and (_known(output) or output.name.lower().endswith(".dcm")):
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
    from vococore.utils.atomic import check_writable
    from vococore.io import read_volume, write_labelmap
    from vococore.io.formats import DICOM_SEG, detect_output_format

    if len(inputs) != len(outputs):
        raise ValueError("inputs and outputs must pair up")
    for src, out in zip(inputs, outputs):
        if detect_output_format(out) == DICOM_SEG:
            _check_dicom_source(Path(src))
        check_writable(out, overwrite)
    options = options or InferenceOptions()
    loaded = load_package(package_path, pick_device(options.device), inference=True)
    written = []
    for i, (src, dst) in enumerate(zip(inputs, outputs)):
        volume = read_volume(src)
        report = None if progress is None else (lambda fraction, i=i: progress(i, fraction))
        result = segment(loaded, volume, options, progress=report)
        if detect_output_format(dst) == DICOM_SEG:
            written.append(_write_seg(result.array, volume, Path(src), dst, package_path, loaded[1], overwrite))
        else:
            written.append(write_labelmap(result.array, volume, dst, label_info=loaded[1].labels,
                                          overwrite=overwrite))
    return written


def _check_dicom_source(src: Path) -> None:
    """Refuse a DICOM SEG output for a non-DICOM input, or for a series whose UIDs it could not reference."""
    from vococore.io.dicom_seg import NOT_DICOM, read_sources, source_files

    if not src.is_dir():
        raise VoCoError(NOT_DICOM.format(kind=_kind(src)), src)
    read_sources(source_files(src))


def _kind(path: Path) -> str:
    from vococore.io.formats import full_suffix

    return f"{full_suffix(path)} file" if full_suffix(path) else "non-folder"


def _write_seg(labels: np.ndarray, volume: Volume, src: Path, dst: Path, package_path: str | os.PathLike,
               package: ModelPackage, overwrite: bool) -> Path:
    """DICOM SEG of one case, naming the package (description or file name), VoCoSlicer version and weights."""
    from vococore import __version__
    from vococore.io.dicom_seg import Algorithm, source_files, write_dicom_seg

    name = package.description or Path(package_path).stem
    algorithm = Algorithm(name=name, version=f"VoCoSlicer {__version__}", weights_sha256=package.weights_sha256)
    return write_dicom_seg(labels, volume, source_files(src, volume.meta.get("series_uid")), dst, package.labels,
                           algorithm, overwrite=overwrite)
