"""Which CT volumes a run uses: an MSD-style datalist JSON, a folder, a glob pattern, or an explicit list.

A datalist JSON holds ``"training"`` / ``"validation"`` lists whose items are ``{"image": path}`` or plain
paths, absolute or relative to the JSON's folder. A folder is searched recursively for CT files (.nii, .nii.gz,
.nrrd, .nhdr, .mha, .mhd) and DICOM series folders (one entry per folder holding DICOM files). An entry
``sample:NAME`` names a registered public sample CT (``vococore sample-data``), for demos and tests.
"""

from __future__ import annotations

import glob
import json
import os
from collections.abc import Sequence
from pathlib import Path

from vococore.utils.errors import VoCoError
from vococore.io.formats import _SUFFIXES

VOLUME_SUFFIXES = tuple(s for s in _SUFFIXES if s != ".seg.nrrd")
SAMPLE_PREFIX = "sample:"


def is_volume_file(path: Path) -> bool:
    """True for a CT file type we read (segmentations ``.seg.nrrd`` excluded)."""
    name = path.name.lower()
    return path.is_file() and name.endswith(VOLUME_SUFFIXES) and not name.endswith(".seg.nrrd")


def is_dicom_file(path: Path) -> bool:
    """True when ``path`` carries the DICOM preamble magic ``DICM`` at byte 128."""
    try:
        with open(path, "rb") as fh:
            fh.seek(128)
            return fh.read(4) == b"DICM"
    except OSError:
        return False


def scan_folder(folder: str | os.PathLike) -> list[Path]:
    """CT files and DICOM series folders under ``folder`` (recursive, sorted for reproducibility)."""
    folder = Path(folder)
    found: list[Path] = []
    for root, dirs, files in os.walk(folder):
        dirs.sort()
        root_path = Path(root)
        paths = [root_path / f for f in sorted(files) if not f.startswith(".")]
        found.extend(p for p in paths if is_volume_file(p))
        if any(not is_volume_file(p) and is_dicom_file(p) for p in paths):
            found.append(root_path)
    return sorted(found)


def _from_json(path: Path, split: str) -> list[Path]:
    try:
        data = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise VoCoError(f"cannot read datalist JSON ({exc})", path) from None
    if not isinstance(data, dict) or split not in data:
        keys = sorted(data) if isinstance(data, dict) else type(data).__name__
        raise VoCoError(f"datalist has no {split!r} list (found {keys})", path)
    items = data[split]
    if not isinstance(items, list):
        raise VoCoError(f"datalist {split!r} must be a list", path)
    out = []
    for i, item in enumerate(items):
        image = item.get("image") if isinstance(item, dict) else item
        if not isinstance(image, str):
            raise VoCoError(f"datalist {split}[{i}] must be a path or {{'image': path}}, got {item!r}", path)
        p = Path(image)
        out.append(p if p.is_absolute() else (path.parent / p))
    return out


def load_datalist(source: str | os.PathLike | Sequence[str | os.PathLike], split: str = "training",
                  check_exists: bool = True) -> list[Path]:
    """The volume paths of ``source``: a datalist ``.json`` (its ``split`` list), a folder, a glob pattern
    (``data/*.nii.gz``), a single CT file or DICOM folder, ``sample:NAME``, or a list of any of these."""
    if isinstance(source, str) and source.startswith(SAMPLE_PREFIX):
        from vococore.io.sampledata import fetch

        return [fetch(source[len(SAMPLE_PREFIX):])]
    if isinstance(source, (list, tuple)):
        paths = [p for s in source for p in load_datalist(s, split, check_exists=False)]
    else:
        src = Path(source)
        text = os.fspath(source)
        if src.is_file() and src.suffix.lower() == ".json":
            paths = _from_json(src, split)
        elif src.is_dir():
            paths = scan_folder(src) or [src]  # nothing inside: let read_volume say what is wrong
        elif glob.has_magic(text):
            paths = [Path(p) for p in sorted(glob.glob(text, recursive=True))]
            if not paths:
                raise VoCoError("the pattern matches no files", text)
        else:
            paths = [src]
    if check_exists:
        missing = [p for p in paths if not p.exists()]
        if missing:
            more = f" (and {len(missing) - 1} more)" if len(missing) > 1 else ""
            raise VoCoError(f"datalist entry does not exist{more}", missing[0])
        if not paths:
            raise VoCoError("no CT volumes found", os.fspath(source) if not isinstance(source, list) else None)
    return paths
