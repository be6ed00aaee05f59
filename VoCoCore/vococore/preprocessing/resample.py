"""Resampling between grids by world position (nearest neighbour), e.g. a label stored LAS onto an LPS series."""

from __future__ import annotations

import numpy as np

from vococore.io.volume import Volume


def resample_to_grid(source: Volume, reference: Volume, fill: int | float = 0) -> Volume:
    """Nearest-neighbour resample ``source`` onto ``reference``'s grid through RAS world coordinates.

    Each reference voxel centre takes the value of the source voxel containing it (``fill`` outside the source).
    Works slice by slice so memory stays at one reference slice of indices.
    """
    to_source = np.linalg.inv(source.affine) @ reference.affine
    out = np.full(reference.shape, fill, dtype=source.array.dtype)
    ni, nj, nk = reference.shape
    ii, jj = np.meshgrid(np.arange(ni), np.arange(nj), indexing="ij")
    plane = np.stack([ii.ravel(), jj.ravel(), np.zeros(ii.size), np.ones(ii.size)])
    src_shape = np.asarray(source.shape)[:, None]
    for k in range(nk):
        plane[2] = k
        idx = np.rint(to_source @ plane)[:3].astype(np.int64)
        inside = np.all((idx >= 0) & (idx < src_shape), axis=0)
        values = np.full(idx.shape[1], fill, dtype=source.array.dtype)
        values[inside] = source.array[idx[0, inside], idx[1, inside], idx[2, inside]]
        out[:, :, k] = values.reshape(ni, nj)
    return Volume(array=out, affine=reference.affine.copy(), source=source.source,
                  meta={**source.meta, "resampled_to": reference.source})


def grid_alignment(source: Volume, reference: Volume, atol: float = 1e-3) -> bool:
    """True when every reference voxel centre falls exactly on a source voxel centre (axis flips/permutations
    and integer shifts only), so nearest-neighbour resampling is lossless."""
    to_source = np.linalg.inv(source.affine) @ reference.affine
    return bool(np.allclose(to_source, np.rint(to_source), atol=atol))
