"""The VoCo preprocessing recipe (orientation, spacing, HU window, foreground crop, padding) and the size check
made before resampling; NumPy only, so that ``vococore info`` can read a recipe without importing torch."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from vococore.io.volume import Volume
from vococore.utils.errors import VoCoError


@dataclass
class PreprocessConfig:
    """Preprocessing parameters (voco-spec section 1.1); the defaults are the v2 abdomen recipe."""

    orientation: str = "RAS"
    spacing: tuple[float, float, float] | None = (1.5, 1.5, 1.5)  # None keeps the native spacing (v1 code)
    hu_range: tuple[float, float] = (-175.0, 250.0)  # mapped to 0..1 and clipped
    foreground_threshold: float | None = 0.0  # crop to scaled intensity > this; None keeps the whole volume
    min_size: tuple[int, int, int] = (64, 64, 64)  # pad (centred, zeros) up to at least this size


PRESETS: dict[str, PreprocessConfig] = {
    "abdomen": PreprocessConfig(),
    "chest": PreprocessConfig(spacing=(1.25, 1.25, 5.0), hu_range=(-1000.0, 500.0)),
    "v1": PreprocessConfig(spacing=None, foreground_threshold=0.3),
}

# The most voxels a resampled CT may have (4 GiB as float32), and along one axis (MONAI's foreground crop keeps
# box corners as int16): a header with a wrong spacing would otherwise make MONAI allocate an absurd grid (and
# the machine swap) or overflow before anything said why.
MAX_RESAMPLED_VOXELS = 2**30
MAX_RESAMPLED_AXIS = 32767


def check_resampled_size(volume: Volume, spacing: tuple[float, float, float] | None) -> tuple[int, int, int]:
    """The grid size resampling to ``spacing`` would give; refuses one over MAX_RESAMPLED_VOXELS, before any
    allocation, saying what the header holds and what it would become."""
    native = np.asarray(volume.spacing, dtype=np.float64)
    if spacing is None:
        return volume.shape
    world_axis = np.abs(volume.affine[:3, :3]).argmax(axis=0)  # the RAS axis each voxel axis runs along
    size = tuple(int(np.ceil(n * s / spacing[w])) for n, s, w in zip(volume.shape, native, world_axis))
    if np.prod(size, dtype=np.float64) > MAX_RESAMPLED_VOXELS or max(size) > MAX_RESAMPLED_AXIS:
        raise VoCoError(f"spacing {np.round(native, 6).tolist()} mm of a {'x'.join(map(str, volume.shape))} grid "
                        f"would resample to {'x'.join(map(str, size))} voxels at {list(spacing)} mm (limits: "
                        f"{MAX_RESAMPLED_VOXELS} voxels, {MAX_RESAMPLED_AXIS} along an axis); is the header "
                        "spacing right?", volume.source)
    return size  # type: ignore[return-value]
