"""The volume type: voxels plus exact geometry, with RAS world coordinates and explicit LPS conversion."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

# Diagonal that turns LPS world coordinates into RAS (and back: it is its own inverse).
LPS_TO_RAS = np.diag([-1.0, -1.0, 1.0, 1.0])


@dataclass(frozen=True)
class Volume:
    """A 3D image: ``array`` indexed (i, j, k) and ``affine`` mapping voxel (i, j, k, 1) to RAS millimetres.

    This is the MONAI/nibabel convention. ITK/DICOM/NRRD files are LPS; they are converted once, at the file
    boundary, with :data:`LPS_TO_RAS`.
    """

    array: np.ndarray
    affine: np.ndarray
    source: str | None = None
    meta: dict[str, Any] = field(default_factory=dict, compare=False)

    def __post_init__(self) -> None:
        affine = np.asarray(self.affine, dtype=np.float64)
        if affine.shape != (4, 4):
            raise ValueError(f"affine must be 4x4, got {affine.shape}")
        if self.array.ndim != 3:
            raise ValueError(f"Volume needs a 3D array, got shape {self.array.shape}")
        object.__setattr__(self, "affine", affine)

    @property
    def shape(self) -> tuple[int, int, int]:
        """Voxel counts along i, j, k."""
        return tuple(int(s) for s in self.array.shape)  # type: ignore[return-value]

    @property
    def spacing(self) -> np.ndarray:
        """Voxel size in mm along i, j, k (the column norms of the affine)."""
        return np.linalg.norm(self.affine[:3, :3], axis=0)

    @property
    def origin(self) -> np.ndarray:
        """RAS position (mm) of the centre of voxel (0, 0, 0)."""
        return self.affine[:3, 3].copy()

    @property
    def direction(self) -> np.ndarray:
        """3x3 matrix whose columns are the unit RAS directions of the i, j, k axes."""
        return self.affine[:3, :3] / self.spacing

    @property
    def affine_lps(self) -> np.ndarray:
        """Voxel-to-world matrix in LPS, the convention of ITK, DICOM and NRRD files."""
        return LPS_TO_RAS @ self.affine

    @property
    def orientation(self) -> str:
        """Three-letter axis code, e.g. ``"RAS"`` or ``"LPS"``: where each voxel axis points in the world."""
        import nibabel.orientations as nio

        return "".join(nio.aff2axcodes(self.affine))

    def voxel_to_world(self, ijk: np.ndarray) -> np.ndarray:
        """Map voxel indices (..., 3) to RAS mm."""
        ijk = np.asarray(ijk, dtype=np.float64)
        return ijk @ self.affine[:3, :3].T + self.affine[:3, 3]

    def world_to_voxel(self, ras: np.ndarray) -> np.ndarray:
        """Map RAS mm (..., 3) to (fractional) voxel indices."""
        inv = np.linalg.inv(self.affine)
        ras = np.asarray(ras, dtype=np.float64)
        return ras @ inv[:3, :3].T + inv[:3, 3]

    def world_bounds(self) -> np.ndarray:
        """(2, 3) array of RAS min and max over the voxel-centre corners of the grid."""
        corners = np.array(np.meshgrid(*[[0, s - 1] for s in self.shape], indexing="ij")).reshape(3, -1).T
        world = self.voxel_to_world(corners)
        return np.stack([world.min(axis=0), world.max(axis=0)])

    def with_array(self, array: np.ndarray, **meta: Any) -> "Volume":
        """A new volume with other voxels on the same grid (e.g. a labelmap on this CT's geometry)."""
        if tuple(array.shape) != self.shape:
            raise ValueError(f"array shape {array.shape} differs from the grid {self.shape}")
        return Volume(array=array, affine=self.affine.copy(), source=self.source, meta={**self.meta, **meta})

    def same_grid(self, other: "Volume", atol: float = 1e-4) -> bool:
        """True when both volumes have the same shape and voxel-to-world matrix (within ``atol`` mm)."""
        return self.shape == other.shape and bool(np.allclose(self.affine, other.affine, atol=atol))
