"""Shared by the DICOM SEG tests: the sample series with its emptied UIDs set again, and a SEG decoded by
highdicom mapped onto one of our grids through world coordinates."""

from __future__ import annotations

from pathlib import Path

import numpy as np


def series_with_uids(source: Path, folder: Path) -> Path:
    """Copy the sample series (20 real CT slices, JPEG 2000) into ``folder`` with the Study and Series UIDs its
    anonymiser emptied set again, pixels untouched; the emptied SOP Instance UIDs stay empty (the file meta
    holds them)."""
    import pydicom
    from pydicom.uid import generate_uid

    folder.mkdir(parents=True)
    study, series = generate_uid(), generate_uid()
    for f in sorted(Path(source).iterdir()):
        ds = pydicom.dcmread(f)
        ds.StudyInstanceUID, ds.SeriesInstanceUID = study, series
        ds.save_as(folder / f.name)
    return folder


def seg_on_grid(seg_path: Path, grid) -> tuple[np.ndarray, dict[str, int]]:
    """The SEG's segments as one labelmap (segment numbers) on ``grid`` (a Volume), by mapping every SEG voxel
    centre through highdicom's affine (LPS, slices in the SEG's own order) and ``grid``'s inverse (RAS)."""
    import highdicom as hd

    seg = hd.seg.segread(seg_path)
    volume = seg.get_volume(combine_segments=True, relabel=False)
    decoded = volume.array
    idx = np.indices(decoded.shape).reshape(3, -1).T
    ras = (idx @ volume.affine[:3, :3].T + volume.affine[:3, 3]) * np.array([-1.0, -1.0, 1.0])
    ijk = grid.world_to_voxel(ras)
    assert np.abs(ijk - np.rint(ijk)).max() < 1e-3, "SEG voxels are not on the grid"
    ijk = np.rint(ijk).astype(int)
    assert ((ijk >= 0) & (ijk < grid.shape)).all() and len(ijk) == np.prod(grid.shape)
    out = np.zeros(grid.shape, dtype=decoded.dtype)
    out[ijk[:, 0], ijk[:, 1], ijk[:, 2]] = decoded.reshape(-1)
    return out, {d.SegmentLabel: int(d.SegmentNumber) for d in seg.SegmentSequence}
