"""The base-crop grid, target crops and their position labels (x-y overlap proportions, voco-spec 1.2-1.3).

Boxes are integer voxel boxes ``[start, end)`` in REGION voxel coordinates, shape (2, 3): row 0 the start, row 1
the end, columns x, y, z. Base ``k = grid * i + j`` covers x in [i*s, (i+1)*s), y in [j*s, (j+1)*s), all of z.
"""

from __future__ import annotations

import numpy as np

from vococore.pretraining.pretext.recipe import Recipe


def base_boxes(recipe: Recipe) -> np.ndarray:
    """Voxel boxes of the grid² base crops, (n*n, 2, 3) int64, index ``n*i + j``."""
    n, s, z = recipe.grid, recipe.base_size, recipe.region_size[2]
    boxes = np.zeros((n * n, 2, 3), dtype=np.int64)
    for i in range(n):
        for j in range(n):
            boxes[n * i + j] = [[i * s, j * s, 0], [(i + 1) * s, (j + 1) * s, z]]
    return boxes


def target_box(center: np.ndarray | tuple[int, ...], recipe: Recipe) -> np.ndarray:
    """Voxel box (2, 3) of the target crop centred at ``center`` (x, y) or (x, y, z); z defaults to the recipe's."""
    center = np.asarray(center, dtype=np.int64)
    cz = int(center[2]) if center.shape[0] == 3 else recipe.target_center_z
    start = np.array([center[0], center[1], cz], dtype=np.int64) - recipe.target_size // 2
    return np.stack([start, start + recipe.target_size])


def position_labels(centers: np.ndarray, recipe: Recipe) -> np.ndarray:
    """Overlap proportions (T, n*n) float64 of target crops centred at ``centers`` (T, 2) x-y with each base.

    y_k = dx * dy / t² where dx, dy are the x and y overlaps of the target box with base k (0 when either is not
    positive); z is ignored because every base spans the full region depth. Rows sum to 1 for targets inside the
    region.
    """
    centers = np.asarray(centers, dtype=np.int64).reshape(-1, 2)
    t, h = recipe.target_size, recipe.target_size // 2
    lo = centers - h  # (T, 2) start of the target in x and y
    hi = lo + t
    edges = np.arange(recipe.grid) * recipe.base_size  # base starts along one axis
    # Overlap along x with base row i and along y with base column j: (T, n) each.
    dx = np.minimum(edges + recipe.base_size, hi[:, :1]) - np.maximum(edges, lo[:, :1])
    dy = np.minimum(edges + recipe.base_size, hi[:, 1:]) - np.maximum(edges, lo[:, 1:])
    dx, dy = np.clip(dx, 0, None), np.clip(dy, 0, None)
    area = dx[:, :, None] * dy[:, None, :]  # (T, n_i, n_j), flattened row-major -> index n*i + j
    return (area.reshape(len(centers), -1) / float(t * t)).astype(np.float64)


def sample_target_centers(rng: np.random.Generator, recipe: Recipe, count: int | None = None) -> np.ndarray:
    """``count`` (default ``num_targets``) random target centres (T, 2) int64, x and y each drawn uniformly from
    the recipe's integer range [low, high) (numpy ``integers``, high exclusive, as the official randint)."""
    low, high = recipe.target_center_range
    count = recipe.num_targets if count is None else int(count)
    return rng.integers(low, high, size=(count, 2), dtype=np.int64)
