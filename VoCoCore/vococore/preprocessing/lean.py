"""The VoCo preprocessing of one image for inference (orientation, spacing, HU window, foreground crop, padding)
in plain PyTorch, giving what the MONAI transforms of :mod:`vococore.preprocessing.preprocessor` give.

Why not MONAI here: inference only needs the preprocessed image and its grid, and importing MONAI costs more
than a small CNN's whole inference of the example CT (see :mod:`vococore.networks.lean_unet`); training, which
also needs labels, random crops and MONAI's inverse, keeps the MONAI transforms. The steps follow MONAI 1.6 as
:mod:`vococore.preprocessing.output_shape` describes them; the resampling is separable (trilinear = linear along each
axis in turn, largest reduction first, the first pass reading the stored integers), so no float copy of the
whole input is made. ``Testing/Python/test_lean_preprocessing.py`` checks image and affine against the MONAI
pipeline on real CT and reoriented, oblique and anisotropic variants of it.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from vococore.io.volume import Volume
from vococore.preprocessing.config import PreprocessConfig, check_resampled_size
from vococore.preprocessing.output_shape import oriented, output_spacing, resampled_shape


@dataclass
class InferenceInput:
    """The preprocessed image (1, X, Y, Z), float32 in 0..1, its voxel-to-RAS matrix, and the (before, after)
    voxels per axis that the final padding to ``min_size`` added (they hold no image)."""

    image: torch.Tensor
    affine: np.ndarray
    pads: tuple[tuple[int, int], tuple[int, int], tuple[int, int]]


def _lerp_border(values: torch.Tensor, dim: int, coords: torch.Tensor) -> torch.Tensor:
    """Linear interpolation (float32) of ``values`` along ``dim`` at fractional indices ``coords``, clamped to
    the edge voxels (MONAI's border padding)."""
    size = values.shape[dim]
    coords = coords.clamp(0, size - 1)
    below = coords.floor().long().clamp(max=size - 1)
    above = (below + 1).clamp(max=size - 1)
    shape = [1] * values.dim()
    shape[dim] = len(coords)
    frac = (coords - below).float().view(shape)
    low = values.index_select(dim, below).float()
    return low.add_((values.index_select(dim, above).float() - low).mul_(frac))


def preprocess_for_inference(volume: Volume, config: PreprocessConfig, device: torch.device | str = "cpu"
                             ) -> InferenceInput:
    """``volume`` preprocessed by ``config`` on ``device`` (a large CT is resampled on the GPU there)."""
    check_resampled_size(volume, config.spacing)
    array, affine = oriented(volume, config.orientation)
    image = torch.from_numpy(np.ascontiguousarray(array)).to(device)  # may share the caller's voxels
    resampled = False
    if config.spacing is not None:
        native = np.linalg.norm(affine[:3, :3], axis=0)
        out = output_spacing(native, config.spacing)
        zoom = native / out
        sizes = resampled_shape(affine, image.shape, out)
        for axis in sorted(range(3), key=lambda a: sizes[a] / image.shape[a]):  # shrink the most first
            if sizes[axis] == image.shape[axis] and abs(zoom[axis] - 1.0) < 1e-9:
                continue
            coords = torch.arange(sizes[axis], device=image.device, dtype=torch.float64) / zoom[axis]
            image = _lerp_border(image, axis, coords)
            resampled = True
        affine = affine @ np.diag([*(1.0 / zoom), 1.0])
    image = image if resampled else image.to(torch.float32, copy=True)  # a new float32 tensor either way
    lo, hi = config.hu_range
    image = image.sub_(lo).div_(hi - lo).clamp_(0.0, 1.0)
    start = np.zeros(3, dtype=np.int64)
    if config.foreground_threshold is not None:
        image, start = _crop_foreground(image, config.foreground_threshold)
    affine = affine @ voxel_shift(start)
    missing = [max(m - s, 0) for s, m in zip(image.shape, config.min_size)]
    pads = tuple((n // 2, n - n // 2) for n in missing)
    if any(p for pair in pads for p in pair):
        flat = [p for pair in reversed(pads) for p in pair]
        image = torch.nn.functional.pad(image[None, None], flat)[0, 0]
        affine = affine @ voxel_shift(-np.asarray([before for before, _ in pads]))
    return InferenceInput(image=image[None], affine=affine, pads=pads)  # type: ignore[arg-type]


def _crop_foreground(image: torch.Tensor, threshold: float) -> tuple[torch.Tensor, np.ndarray]:
    """The box of voxels above ``threshold`` (the whole image when none is) and its first voxel."""
    mask = image > threshold
    start, stop = [], []
    for axis in range(3):
        hits = torch.nonzero(mask.any(dim=[a for a in range(3) if a != axis])).flatten()
        if hits.numel() == 0:
            return image, np.zeros(3, dtype=np.int64)
        start.append(int(hits[0]))
        stop.append(int(hits[-1]) + 1)
    box = tuple(slice(a, b) for a, b in zip(start, stop))
    return image[box], np.asarray(start, dtype=np.int64)


def voxel_shift(voxels: np.ndarray | list[int]) -> np.ndarray:
    """Voxel-to-voxel matrix moving the origin by ``voxels``."""
    matrix = np.eye(4)
    matrix[:3, 3] = voxels
    return matrix
