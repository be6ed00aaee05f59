"""Where the VoCo region sits on the preprocessed grid (voco-spec 1.1, last row) and its world geometry.

A :class:`RegionPlacement` maps region voxels to preprocessed-grid voxels with a 4x4 matrix: a translation for
``crop`` mode (pad to the region where the image is smaller, then a random or centred crop) and a scaling for
``resize`` mode (the whole foreground volume resized to the region, trilinear with aligned corners). The world
matrix of the region is ``pre.affine @ placement.affine``; the grid the Slicer module draws comes from
:func:`base_boxes_world`, the same boxes the position labels use.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from vococore.utils.errors import VoCoError
from vococore.pretraining.pretext.grid import base_boxes
from vococore.pretraining.pretext.recipe import Recipe


@dataclass(frozen=True)
class RegionPlacement:
    """The region of a recipe on one preprocessed image: size, mode and region-voxel -> preprocessed-voxel map."""

    source_shape: tuple[int, int, int]
    region_size: tuple[int, int, int]
    mode: str
    affine: np.ndarray  # 4x4, region voxel (x, y, z, 1) -> preprocessed voxel

    @property
    def offset(self) -> np.ndarray:
        """Preprocessed-voxel position of region voxel (0, 0, 0); negative where the image was padded."""
        return self.affine[:3, 3].copy()

    def extract(self, image: torch.Tensor | np.ndarray) -> torch.Tensor:
        """Cut (or resize) the region out of a preprocessed (C, x, y, z) image: float tensor (C, *region_size).

        Padding is with zeros, the value of air after the HU window.
        """
        tensor = torch.as_tensor(image.as_tensor() if hasattr(image, "as_tensor") else image).float()
        if tensor.ndim != 4 or tuple(tensor.shape[1:]) != self.source_shape:
            raise VoCoError(f"image shape {tuple(tensor.shape)} does not match the placement's preprocessed shape "
                            f"(C, {', '.join(map(str, self.source_shape))})")
        if self.mode == "resize":
            return torch.nn.functional.interpolate(tensor[None], size=self.region_size, mode="trilinear",
                                                   align_corners=True)[0]
        start = np.rint(self.offset).astype(int)
        out = tensor.new_zeros((tensor.shape[0], *self.region_size))
        src_lo = np.maximum(start, 0)
        src_hi = np.minimum(start + np.array(self.region_size), np.array(self.source_shape))
        dst_lo = src_lo - start
        dst_hi = dst_lo + (src_hi - src_lo)
        out[:, dst_lo[0]:dst_hi[0], dst_lo[1]:dst_hi[1], dst_lo[2]:dst_hi[2]] = \
            tensor[:, src_lo[0]:src_hi[0], src_lo[1]:src_hi[1], src_lo[2]:src_hi[2]]
        return out

    def region_to_source(self, points: np.ndarray) -> np.ndarray:
        """Map region voxel coordinates (..., 3) to preprocessed-grid voxel coordinates."""
        return np.asarray(points, dtype=np.float64) @ self.affine[:3, :3].T + self.affine[:3, 3]

    def source_to_region(self, points: np.ndarray) -> np.ndarray:
        """Map preprocessed-grid voxel coordinates (..., 3) to region voxel coordinates."""
        inv = np.linalg.inv(self.affine)
        return np.asarray(points, dtype=np.float64) @ inv[:3, :3].T + inv[:3, 3]


def place_region(preprocessed_shape: tuple[int, ...], recipe: Recipe,
                 rng: np.random.Generator | None = None) -> RegionPlacement:
    """Place ``recipe``'s region on a preprocessed image of spatial shape ``preprocessed_shape``.

    ``crop`` mode: where the image is smaller than the region it is padded symmetrically (MONAI SpatialPad, the
    extra voxel after); the crop start is then drawn uniformly (MONAI RandSpatialCrop) with ``rng``, or centred
    when ``rng`` is None (deterministic, used for position prediction). ``resize`` mode needs no randomness.
    """
    shape = np.array([int(s) for s in preprocessed_shape[-3:]], dtype=np.int64)
    region = np.array(recipe.region_size, dtype=np.int64)
    if np.any(shape < 1):
        raise VoCoError(f"cannot place a region on an empty image of shape {tuple(shape)}")
    affine = np.eye(4)
    if recipe.region_mode == "resize":
        # align_corners=True: region voxel 0 -> source 0, region R-1 -> source S-1.
        affine[:3, :3] = np.diag([(s - 1) / (r - 1) if r > 1 else 1.0 for s, r in zip(shape, region)])
    else:
        pad_before = np.maximum(region - shape, 0) // 2
        padded = np.maximum(shape, region)
        if rng is None:
            start = (padded - region) // 2
        else:
            start = np.array([rng.integers(0, p - r + 1) for p, r in zip(padded, region)], dtype=np.int64)
        affine[:3, 3] = start - pad_before
    return RegionPlacement(source_shape=tuple(int(s) for s in shape),  # type: ignore[arg-type]
                           region_size=tuple(int(r) for r in region),  # type: ignore[arg-type]
                           mode=recipe.region_mode, affine=affine)


def region_world_affine(pre_affine: np.ndarray, placement: RegionPlacement) -> np.ndarray:
    """4x4 map from region voxels to RAS mm: the preprocessed grid's affine after the placement."""
    return np.asarray(pre_affine, dtype=np.float64) @ placement.affine


def box_world(box: np.ndarray, world_affine: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Centre (3,) RAS mm and size (3,) mm of a voxel box [start, end) under ``world_affine``.

    The box spans voxel edges start-0.5 .. end-0.5, so its size is (end - start) voxels times the spacing.
    """
    box = np.asarray(box, dtype=np.float64)
    center = (box[0] + box[1] - 1.0) / 2.0
    center_ras = world_affine[:3, :3] @ center + world_affine[:3, 3]
    spacing = np.linalg.norm(world_affine[:3, :3], axis=0)
    return center_ras, (box[1] - box[0]) * spacing


def base_boxes_world(pre_affine: np.ndarray, placement: RegionPlacement,
                     recipe: Recipe) -> list[tuple[np.ndarray, np.ndarray]]:
    """World boxes of the base crops, index ``n*i + j``: a list of (centre RAS (3,), size mm (3,)).

    Sizes are along the region's voxel axes (RAS-aligned after the RAS orientation of the preprocessing).
    """
    world = region_world_affine(pre_affine, placement)
    return [box_world(box, world) for box in base_boxes(recipe)]
