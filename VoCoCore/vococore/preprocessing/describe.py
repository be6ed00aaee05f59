"""What a CT volume is and how the VoCo preprocessing will see it: geometry, HU statistics, crop-region fit."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from vococore.io.volume import Volume
from vococore.preprocessing.config import PreprocessConfig
from vococore.preprocessing.output_shape import preprocessed_grid

V2_REGION = (192, 192, 64)


@dataclass
class VolumeInfo:
    """Summary of one volume, as printed by ``vococore info``."""

    source: str | None
    shape: tuple[int, int, int]
    spacing: tuple[float, float, float]
    orientation: str
    world_bounds: list[list[float]]
    hu_min: float
    hu_max: float
    hu_percentiles: dict[str, float]
    preprocessed_shape: tuple[int, int, int]
    preprocessed_spacing: tuple[float, float, float]
    region: tuple[int, int, int]
    region_padding: tuple[int, int, int]

    @property
    def covers_region(self) -> bool:
        return not any(self.region_padding)

    def as_dict(self) -> dict[str, Any]:
        from dataclasses import asdict

        return {**asdict(self), "covers_region": self.covers_region}


def describe(volume: Volume, config: PreprocessConfig | None = None,
             region: tuple[int, int, int] = V2_REGION) -> VolumeInfo:
    """Geometry and intensity summary, plus the preprocessed grid and the padding the crop region needs.

    The grid comes from :func:`preprocessed_grid` (NumPy, no torch or MONAI: ``vococore info`` stays fast); it is
    the shape before the final padding, to see how much padding the region needs.
    """
    values = volume.array
    q = np.percentile(values, [1, 5, 50, 95, 99])
    grid = preprocessed_grid(volume, config)
    padding = tuple(max(r - s, 0) for r, s in zip(region, grid.shape))
    return VolumeInfo(
        source=volume.source,
        shape=volume.shape,
        spacing=tuple(round(float(s), 6) for s in volume.spacing),  # type: ignore[arg-type]
        orientation=volume.orientation,
        world_bounds=np.round(volume.world_bounds(), 3).tolist(),
        hu_min=float(values.min()),
        hu_max=float(values.max()),
        hu_percentiles={f"p{p}": float(v) for p, v in zip([1, 5, 50, 95, 99], q)},
        preprocessed_shape=grid.shape,
        preprocessed_spacing=tuple(round(s, 6) for s in grid.spacing),  # type: ignore[arg-type]
        region=region,
        region_padding=padding,  # type: ignore[arg-type]
    )


def format_info(info: VolumeInfo) -> str:
    """Human-readable multi-line report."""
    lo, hi = info.world_bounds
    pct = ", ".join(f"{k} {v:g}" for k, v in info.hu_percentiles.items())
    fit = ("covers the v2 crop region" if info.covers_region else
           f"smaller than the v2 crop region: zero-padded by {info.region_padding} voxels (x, y, z)")
    return "\n".join([
        f"file:          {info.source}",
        f"shape:         {' x '.join(map(str, info.shape))} voxels (i, j, k)",
        f"spacing:       {' x '.join(f'{s:g}' for s in info.spacing)} mm",
        f"orientation:   {info.orientation} (direction of i, j, k in the world)",
        f"world bounds:  R {lo[0]:.1f}..{hi[0]:.1f}, A {lo[1]:.1f}..{hi[1]:.1f}, S {lo[2]:.1f}..{hi[2]:.1f} mm (RAS)",
        f"HU range:      {info.hu_min:g} .. {info.hu_max:g}; {pct}",
        f"preprocessed:  {' x '.join(map(str, info.preprocessed_shape))} voxels of "
        f"{' x '.join(f'{s:g}' for s in info.preprocessed_spacing)} mm after RAS, resampling and foreground crop "
        "(before padding)",
        f"crop region:   {' x '.join(map(str, info.region))}: {fit}",
    ])
