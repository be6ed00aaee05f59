"""DICOM series discovery and reading through SimpleITK/GDCM (handles JPEG 2000 and other compressed syntaxes)."""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np

from vococore.utils.errors import VoCoError

log = logging.getLogger(__name__)


def find_series(folder: Path) -> dict[str, list[str]]:
    """Map each SeriesInstanceUID found in ``folder`` to its file names, sorted by slice position."""
    import SimpleITK as sitk

    if not any(folder.iterdir()):
        raise VoCoError("the folder is empty; expected a DICOM series", folder)
    reader = sitk.ImageSeriesReader()
    uids = reader.GetGDCMSeriesIDs(str(folder))
    if not uids:
        raise VoCoError("no DICOM series found in this folder (no readable DICOM image files)", folder)
    return {uid: list(reader.GetGDCMSeriesFileNames(str(folder), uid)) for uid in uids}


def read_dicom_series(folder: Path, series_uid: str | None = None) -> tuple["object", dict]:
    """Read one series of ``folder`` as a SimpleITK image; pick ``series_uid``, else the series with most slices.

    Returns the image and metadata saying which series was read and which others were present.
    """
    import SimpleITK as sitk

    series = find_series(folder)
    if series_uid is not None:
        if series_uid not in series:
            raise VoCoError(f"series {series_uid} not in this folder; found {sorted(series)}", folder)
        chosen = series_uid
    else:
        chosen = max(series, key=lambda uid: len(series[uid]))
    if len(series) > 1:
        others = {uid: len(files) for uid, files in series.items() if uid != chosen}
        log.warning("%s holds %d DICOM series; reading %s (%d slices), ignoring %s",
                    folder, len(series), chosen, len(series[chosen]), others)
    files = series[chosen]
    reader = sitk.ImageSeriesReader()
    reader.SetFileNames(files)
    reader.MetaDataDictionaryArrayUpdateOn()
    reader.LoadPrivateTagsOff()
    try:
        image = reader.Execute()
    except RuntimeError as exc:
        raise VoCoError(f"cannot read DICOM series {chosen}: {_first_line(exc)}", folder) from None
    _check_slice_spacing(folder, reader, len(files))
    meta = {
        "series_uid": chosen,
        "n_files": len(files),
        "other_series": {uid: len(f) for uid, f in series.items() if uid != chosen},
    }
    return image, meta


def _check_slice_spacing(folder: Path, reader: "object", n: int) -> None:
    """Refuse series whose slices are not evenly spaced (missing slices would silently distort geometry)."""
    if n < 3:
        return
    positions = []
    for i in range(n):
        if not reader.HasMetaDataKey(i, "0020|0032"):
            return
        positions.append([float(v) for v in reader.GetMetaData(i, "0020|0032").split("\\")])
    steps = np.linalg.norm(np.diff(np.asarray(positions), axis=0), axis=1)
    if steps.max() - steps.min() > 0.01 * max(steps.mean(), 1e-6) + 1e-3:
        raise VoCoError(
            f"slices are unevenly spaced ({steps.min():.3f} to {steps.max():.3f} mm): missing slices?", folder
        )


def _first_line(exc: Exception) -> str:
    lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
    # ITK messages put the useful sentence last ("Description: ...").
    for line in reversed(lines):
        if line.lower().startswith("description:"):
            return line.split(":", 1)[1].strip()
    return lines[-1] if lines else type(exc).__name__
