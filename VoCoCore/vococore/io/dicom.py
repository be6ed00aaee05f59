"""DICOM series discovery and reading through SimpleITK/GDCM (handles JPEG 2000 and other compressed syntaxes).

GDCM skips files it cannot parse without a word, and groups slices by SeriesInstanceUID: here every skipped
file is named, a duplicated slice is told from a missing one, and a series without a UID can still be picked.
"""

from __future__ import annotations

import contextlib
import logging
import os
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import numpy as np

from vococore.utils.errors import VoCoError, first_line

log = logging.getLogger(__name__)

# What GDCM names a series whose files carry no (or an empty) SeriesInstanceUID; --series-uid "" picks it.
NO_UID = ""


@contextlib.contextmanager
def quiet_itk() -> Iterator[None]:
    """Keep ITK/GDCM/MetaImage warnings off the terminal while reading (our own message says what matters):
    ITK's are switched off, and what the C++ code writes straight to standard error (MetaImage does) is
    captured at the file-descriptor level and logged at debug level."""
    import SimpleITK as sitk

    before = sitk.ProcessObject.GetGlobalWarningDisplay()
    sitk.ProcessObject.SetGlobalWarningDisplay(False)
    sys.stderr.flush()
    saved = os.dup(2)
    with tempfile.TemporaryFile() as sink:
        os.dup2(sink.fileno(), 2)
        try:
            yield
        finally:
            os.dup2(saved, 2)
            os.close(saved)
            sitk.ProcessObject.SetGlobalWarningDisplay(before)
            sink.seek(0)
            said = sink.read().decode(errors="replace").strip()
            if said:
                log.debug("ITK said: %s", " | ".join(said.splitlines()))


def _looks_like_dicom(path: Path) -> bool:
    """A DICOM Part 10 file ("DICM" at byte 128) or a file named like one."""
    if path.suffix.lower() in (".dcm", ".dicom", ".ima"):
        return True
    try:
        with open(path, "rb") as fh:
            head = fh.read(132)
    except OSError:
        return False
    return head[128:132] == b"DICM"


def find_series(folder: Path) -> dict[str, list[str]]:
    """Map each SeriesInstanceUID found in ``folder`` to its file names, sorted by slice position.

    A file that looks like DICOM but that GDCM skipped (damaged, truncated, unreadable) is refused by name: the
    series would otherwise silently lose a slice.
    """
    import SimpleITK as sitk

    entries = [p for p in folder.iterdir() if p.is_file()]
    if not any(folder.iterdir()):
        raise VoCoError("the folder is empty; expected a DICOM series", folder)
    reader = sitk.ImageSeriesReader()
    with quiet_itk():
        uids = list(reader.GetGDCMSeriesIDs(str(folder)))
        series = {uid.strip(): list(reader.GetGDCMSeriesFileNames(str(folder), uid)) for uid in uids}
    if not series:
        raise VoCoError("no DICOM series found in this folder (no readable DICOM image files)", folder)
    used = {Path(f).resolve() for files in series.values() for f in files}
    skipped = sorted(p.name for p in entries if p.resolve() not in used and _looks_like_dicom(p))
    if skipped:
        shown = ", ".join(skipped[:5]) + (f" and {len(skipped) - 5} more" if len(skipped) > 5 else "")
        raise VoCoError(f"{len(skipped)} DICOM file(s) could not be read (damaged or truncated?): {shown}; "
                        "fix or remove them", folder)
    return series


def read_dicom_series(folder: Path, series_uid: str | None = None) -> tuple["object", dict]:
    """Read one series of ``folder`` as a SimpleITK image; pick ``series_uid``, else the series with most slices.

    Returns the image and metadata saying which series was read and which others were present.
    """
    import SimpleITK as sitk

    series = find_series(folder)
    if series_uid is not None:
        if series_uid.strip() not in series:
            names = [uid or '"" (no SeriesInstanceUID)' for uid in sorted(series)]
            raise VoCoError(f"series {series_uid!r} not in this folder; found {names}", folder)
        chosen = series_uid.strip()
    else:
        chosen = max(series, key=lambda uid: len(series[uid]))
    if len(series) > 1:
        others = {uid: len(files) for uid, files in series.items() if uid != chosen}
        log.warning("%s holds %d DICOM series; reading %r (%d slices), ignoring %s",
                    folder, len(series), chosen, len(series[chosen]), others)
    files = series[chosen]
    reader = sitk.ImageSeriesReader()
    reader.SetFileNames(files)
    reader.MetaDataDictionaryArrayUpdateOn()
    reader.LoadPrivateTagsOff()
    try:
        with quiet_itk():
            image = reader.Execute()
    except RuntimeError as exc:
        raise VoCoError(f"cannot read DICOM series {chosen!r}: {first_line(exc)}", folder) from None
    _check_slice_spacing(folder, reader, files)
    meta = {
        "series_uid": chosen,
        "n_files": len(files),
        "other_series": {uid: len(f) for uid, f in series.items() if uid != chosen},
    }
    return image, meta


def _check_slice_spacing(folder: Path, reader: "object", files: list[str]) -> None:
    """Refuse series whose slices are not evenly spaced, saying whether a slice is duplicated (two files at one
    position) or missing (a gap of a whole number of steps): either would silently distort the geometry."""
    n = len(files)
    if n < 3:
        return
    positions = []
    for i in range(n):
        if not reader.HasMetaDataKey(i, "0020|0032"):
            return
        positions.append([float(v) for v in reader.GetMetaData(i, "0020|0032").split("\\")])
    # GDCM falls back to file-name order when positions repeat: sort by distance along the stack here.
    positions = np.asarray(positions)
    axis = positions[-1] - positions[0]
    order = np.argsort(positions @ axis) if np.linalg.norm(axis) > 0 else np.arange(n)
    positions, names = positions[order], [Path(files[i]).name for i in order]
    steps = np.linalg.norm(np.diff(positions, axis=0), axis=1)
    typical = float(np.median(steps))
    tol = 0.01 * max(typical, 1e-6) + 1e-3
    dup = np.flatnonzero(steps < tol)
    if len(dup):
        i = int(dup[0])
        raise VoCoError(f"duplicated slice: {names[i]} and {names[i + 1]} are at the same position "
                        f"({len(dup)} duplicate(s)); remove the copies", folder)
    if steps.max() - steps.min() > tol:
        i = int(np.argmax(np.abs(steps - typical)))
        gap = steps[i] / typical
        what = (f"missing slice(s): a gap of {steps[i]:.3f} mm (about {round(gap) - 1} slice(s)) between "
                f"{names[i]} and {names[i + 1]} where slices are {typical:.3f} mm apart"
                if gap > 1.5 else f"{steps.min():.3f} to {steps.max():.3f} mm")
        raise VoCoError(f"slices are unevenly spaced: {what}", folder)
