"""The output grid the VoCo preprocessing gives a volume (shape and spacing after orientation, resampling and foreground
crop), computed with NumPy and nibabel instead of running the MONAI transforms.

Why not MONAI here: ``vococore info`` only reports this grid, and importing torch and MONAI costs about 6 s of CPU
on the project's machine against under 2 s for the whole command without them (BENCHMARKS.md, CLI start-up).
The steps follow what MONAI 1.6 does (Orientation by nibabel's axis codes; Spacing keeps a native spacing within
1e-3 mm of the target, maps output voxel centres onto input ones by scale alone and samples trilinearly with the
border value outside; the crop keeps the box of scaled intensity above the threshold, or everything when nothing
is); ``Testing/Python/test_cli_info.py`` checks the figures against the MONAI pipeline on real CT. Limit: torch
interpolates in float32 from normalised coordinates, so a box-edge voxel interpolated to within rounding of the HU
threshold could fall on the other side here and move an edge by one voxel (not seen on the sample CT).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from vococore.io.volume import Volume
from vococore.preprocessing.config import PreprocessConfig, check_resampled_size

# MONAI's tolerance for keeping a native spacing that is already close to the target (monai.utils AFFINE_TOL).
SPACING_TOLERANCE = 1e-3


@dataclass(frozen=True)
class PreprocessedGrid:
    """Shape (x, y, z) and spacing (mm) of a volume after the preprocessing, before the final padding (``info``
    reports how much padding the crop region needs)."""

    shape: tuple[int, int, int]
    spacing: tuple[float, float, float]


def preprocessed_grid(volume: Volume, config: PreprocessConfig | None = None) -> PreprocessedGrid:
    """The grid ``config`` (default: the v2 abdomen recipe) turns ``volume`` into, without torch or MONAI."""
    config = config or PreprocessConfig()
    check_resampled_size(volume, config.spacing)
    array, affine = oriented(volume, config.orientation)
    spacing = np.linalg.norm(affine[:3, :3], axis=0)
    if config.spacing is not None:
        out = output_spacing(spacing, config.spacing)
        array = _resample_trilinear(array, spacing / out, resampled_shape(affine, array.shape, out))
        spacing = out
    shape = array.shape
    if config.foreground_threshold is not None:
        shape = _foreground_box(array, config)
    return PreprocessedGrid(shape=tuple(int(s) for s in shape),  # type: ignore[arg-type]
                            spacing=tuple(float(s) for s in spacing))  # type: ignore[arg-type]


def oriented(volume: Volume, orientation: str) -> tuple[np.ndarray, np.ndarray]:
    """``volume``'s array flipped and transposed to ``orientation`` (a view) and its affine, as MONAI's
    Orientation (nibabel's axis codes)."""
    import nibabel.orientations as nio

    ornt = nio.ornt_transform(nio.io_orientation(volume.affine), nio.axcodes2ornt(orientation))
    return nio.apply_orientation(volume.array, ornt), volume.affine @ nio.inv_ornt_aff(ornt, volume.shape)


def output_spacing(native: np.ndarray, target: tuple[float, float, float]) -> np.ndarray:
    """The spacing MONAI's Spacing resamples to: ``target``, but a native spacing within 1e-3 mm of it is kept."""
    target_mm = np.asarray(target, dtype=np.float64)
    return np.where(np.abs(native - target_mm) <= SPACING_TOLERANCE, native, target_mm)


def resampled_shape(affine: np.ndarray, shape: tuple[int, ...], spacing: np.ndarray) -> list[int]:
    """The grid size MONAI's Spacing gives: the voxel-centre extent in output voxels plus one, rounded, computed
    with its arithmetic (Cholesky rotation, ``solve``), since an extent of exactly x.5 voxels rounds either way
    on floating-point noise (the 3 mm example CT's 112 slices give 56.5 at 6 mm, which MONAI makes 57)."""
    upper = np.linalg.cholesky(affine[:3, :3].T @ affine[:3, :3]).T
    rotation = affine[:3, :3] @ np.linalg.inv(upper)
    target = np.eye(4)
    target[:3, :3] = rotation @ np.diag(np.sign(np.diag(upper)) * spacing)
    corners = np.asarray(np.meshgrid(*[(0.0, n - 1.0) for n in shape], indexing="ij")).reshape(3, -1)
    mapped = np.linalg.solve(target, affine) @ np.concatenate([corners, np.ones_like(corners[:1])])
    return [int(v) for v in np.round(np.ptp(mapped[:3] / mapped[3], axis=1) + 1.0)]


def _resample_trilinear(array: np.ndarray, zoom: np.ndarray, sizes: list[int]) -> np.ndarray:
    """Resample to ``sizes`` by ``zoom`` (input spacing / output spacing) per axis: output voxel o samples input
    position o / zoom, linearly along each axis in turn (trilinear is separable), clamped to the edge voxels."""
    out = array.astype(np.float32, copy=False)
    for axis, (n, z, size) in enumerate(zip(array.shape, zoom, sizes)):
        if size == n and abs(z - 1.0) < 1e-9:
            continue
        x = np.clip(np.arange(size, dtype=np.float64) / z, 0.0, n - 1.0)
        lo = np.minimum(np.floor(x).astype(np.intp), n - 1)
        hi = np.minimum(lo + 1, n - 1)
        shape = [1] * out.ndim
        shape[axis] = size
        w = (x - lo).astype(np.float32).reshape(shape)
        out = np.take(out, lo, axis=axis) * (1.0 - w) + np.take(out, hi, axis=axis) * w
    return out


def _foreground_box(array: np.ndarray, config: PreprocessConfig) -> tuple[int, ...]:
    """Size of the box holding every voxel whose scaled intensity exceeds the threshold; the whole grid when
    none does (as the preprocessing's crop falls back to keeping the volume)."""
    lo, hi = config.hu_range
    scaled = (array - np.float32(lo)) / np.float32(hi - lo)
    mask = np.clip(scaled, 0.0, 1.0) > config.foreground_threshold
    size = []
    for axis in range(mask.ndim):
        hits = np.flatnonzero(mask.any(axis=tuple(a for a in range(mask.ndim) if a != axis)))
        if hits.size == 0:
            return array.shape
        size.append(int(hits[-1] - hits[0] + 1))
    return tuple(size)
