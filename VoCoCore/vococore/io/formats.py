"""File-format detection by name, shared by readers and writers."""

from __future__ import annotations

from pathlib import Path

from vococore.utils.errors import VoCoError

NIFTI = "nifti"
NRRD = "nrrd"
SEG_NRRD = "seg.nrrd"
METAIMAGE = "metaimage"
DICOM_SEG = "dicom-seg"  # an output only: a DICOM Segmentation instance (.dcm) for a DICOM series input

_SUFFIXES = {
    ".seg.nrrd": SEG_NRRD,
    ".nii.gz": NIFTI,
    ".nii": NIFTI,
    ".nrrd": NRRD,
    ".nhdr": NRRD,
    ".mha": METAIMAGE,
    ".mhd": METAIMAGE,
}


def detect_format(path: str | Path) -> str:
    """Name the format of a volume file from its suffix (longest match first)."""
    name = Path(path).name.lower()
    for suffix, fmt in _SUFFIXES.items():
        if name.endswith(suffix):
            return fmt
    known = ", ".join(_SUFFIXES)
    raise VoCoError(f"unknown file type; expected one of {known} or a DICOM folder", path)


def full_suffix(path: str | Path) -> str:
    """The recognised multi-part suffix of ``path`` as written (e.g. ``.nii.gz``), for temp-file names."""
    name = Path(path).name
    for suffix in _SUFFIXES:
        if name.lower().endswith(suffix):
            return name[-len(suffix):]
    return Path(path).suffix


def detect_output_format(path: str | Path) -> str:
    """Like :func:`detect_format`, plus ``.dcm`` for a DICOM SEG output (an input ``.dcm`` is one slice of a
    series folder, so reading does not take it)."""
    if Path(path).name.lower().endswith(".dcm"):
        return DICOM_SEG
    return detect_format(path)
