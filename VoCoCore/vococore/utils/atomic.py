"""Atomic file output: write to a temporary file beside the target, then rename, so no partial file is left."""

from __future__ import annotations

import contextlib
import os
import uuid
from collections.abc import Iterator
from pathlib import Path

from vococore.utils.errors import VoCoError


def check_writable(path: str | os.PathLike, overwrite: bool = False) -> Path:
    """Refuse to replace an existing file unless ``overwrite`` is set; create the parent folder."""
    path = Path(path)
    if path.exists() and not overwrite:
        raise VoCoError("already exists; choose another name or pass overwrite (--overwrite)", path)
    path.parent.mkdir(parents=True, exist_ok=True)
    return path


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike, overwrite: bool = False, suffix: str | None = None) -> Iterator[Path]:
    """Yield a temporary path in the target's folder; on success rename it onto ``path``, on error delete it.

    ``suffix`` (default: all of the target's suffixes, e.g. ``.nii.gz``) keeps writers that choose the format by
    the end of the name working.
    """
    path = check_writable(path, overwrite)
    suffix = "".join(path.suffixes) if suffix is None else suffix
    tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex[:8]}.tmp{suffix}")
    try:
        yield tmp
        os.replace(tmp, path)
    finally:
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()


def save_torch(obj: object, path: str | os.PathLike, overwrite: bool = True) -> Path:
    """``torch.save`` atomically (temp + rename): a crash mid-write never leaves a truncated checkpoint."""
    import torch

    with atomic_path(path, overwrite=overwrite, suffix=".tmp") as tmp:
        torch.save(obj, tmp)
    return Path(path)
