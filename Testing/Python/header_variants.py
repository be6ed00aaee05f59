"""Shared by the preprocessing tests: real CT voxels under headers that exercise every preprocessing step."""

from __future__ import annotations

import numpy as np

from vococore.io.volume import Volume


def rotation(degrees: float, axis: int) -> np.ndarray:
    """4x4 rotation by ``degrees`` about voxel axis ``axis``."""
    c, s = np.cos(np.radians(degrees)), np.sin(np.radians(degrees))
    i, j = [a for a in range(3) if a != axis]
    r = np.eye(4)
    r[i, i], r[i, j], r[j, i], r[j, j] = c, -s, s, c
    return r


def header_variants(v: Volume) -> list[Volume]:
    """``v``'s voxels with oblique directions, axes stored in another order and flipped (PSR), an anisotropic
    spacing, a spacing within MONAI's 1e-3 mm of the 1.5 mm target, and as an all-air volume."""
    variants = [
        Volume(v.array, rotation(25, 2) @ v.affine),
        Volume(v.array, rotation(40, 0) @ rotation(10, 1) @ v.affine),
        Volume(np.ascontiguousarray(v.array.transpose(1, 2, 0)[::-1]), v.affine[:, [1, 2, 0, 3]] @ np.diag([-1, 1, 1, 1])),
        Volume(v.array, v.affine @ np.diag([0.7 / 3, 0.7 / 3, 2.3 / 3, 1])),
        Volume(v.array, v.affine @ np.diag([1.5004 / 3, 1.4997 / 3, 1.5 / 3, 1])),
        Volume(np.full_like(v.array, -1000), v.affine),
    ]
    assert variants[2].orientation == "PSR"
    return variants
