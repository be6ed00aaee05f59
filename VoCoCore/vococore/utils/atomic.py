"""Atomic file output: write to a temporary file beside the target, then rename, so no partial file is left.

Every operating-system failure on the way (read-only folder, full disk, a folder where a file should go, a file
where a folder should go) becomes one :class:`VoCoError` naming the target and the cause.
"""

from __future__ import annotations

import contextlib
import os
import uuid
from collections.abc import Iterable, Iterator
from pathlib import Path

from vococore.utils.errors import VoCoError, os_error_text


def check_output_dir(folder: str | os.PathLike) -> Path:
    """Create ``folder`` (and parents) for output, or say in one line why it cannot be: a file in the way,
    no permission, read-only or full file system. Probes with a small file so a run fails before long work."""
    folder = Path(folder)
    for parent in [folder, *folder.parents]:
        if parent.exists():
            if not parent.is_dir():
                raise VoCoError("is a file, not a folder; cannot write output into it"
                                if parent == folder else f"is a file, so the output folder {folder} cannot be made",
                                parent)
            break
    probe = folder / f".vococore-write-test.{uuid.uuid4().hex[:8]}"
    try:
        folder.mkdir(parents=True, exist_ok=True)
        probe.write_bytes(b"0" * 4096)
        probe.unlink()
    except OSError as exc:
        with contextlib.suppress(OSError):
            probe.unlink()
        raise VoCoError(f"cannot write into this folder: {os_error_text(exc)}", folder) from None
    return folder


def check_writable(path: str | os.PathLike, overwrite: bool = False) -> Path:
    """Refuse to replace an existing file unless ``overwrite`` is set, and a folder ever; create the parent."""
    path = Path(path)
    if path.is_dir():
        raise VoCoError("is a folder; the output must be a file name", path)
    if path.exists() and not overwrite:
        raise VoCoError("already exists; choose another name or pass overwrite (--overwrite)", path)
    check_output_dir(path.parent)
    return path


def refuse_inputs_as_outputs(inputs: Iterable[str | os.PathLike], outputs: Iterable[str | os.PathLike]) -> None:
    """An output that is one of the inputs (or inside an input DICOM folder) would destroy it: refuse, even with
    overwrite. Paths are compared after resolving links."""
    resolved = {Path(p).resolve(): Path(p) for p in inputs}
    for out in map(Path, outputs):
        target = out.resolve()
        for src_resolved, src in resolved.items():
            if target == src_resolved or (src_resolved.is_dir() and src_resolved in target.parents):
                raise VoCoError(f"is the input {src}; writing there would destroy it (even with --overwrite)", out)


def _folder_problem(folder: Path) -> str | None:
    """Why ``folder`` cannot take a file (read-only, full), or None when it can (the failure was elsewhere)."""
    try:
        free = os.statvfs(folder)
    except OSError as exc:
        return os_error_text(exc)
    if free.f_flag & os.ST_RDONLY:
        return "read-only file system"
    if free.f_bavail * free.f_frsize < 1 << 20:
        return f"no space left on device ({free.f_bavail * free.f_frsize // 1024} KiB free)"
    return None


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike, overwrite: bool = False, suffix: str | None = None) -> Iterator[Path]:
    """Yield a temporary path in the target's folder; on success rename it onto ``path``, on error delete it.

    ``suffix`` (default: all of the target's suffixes, e.g. ``.nii.gz``) keeps writers that choose the format by
    the end of the name working. An OSError while writing (e.g. disk full) is raised as a VoCoError naming
    ``path``; a failure to delete the temporary file never hides the error that caused it.
    """
    path = check_writable(path, overwrite)
    suffix = "".join(path.suffixes) if suffix is None else suffix
    tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex[:8]}.tmp{suffix}")
    try:
        yield tmp
        os.replace(tmp, path)
    except OSError as exc:
        raise VoCoError(f"cannot write: {os_error_text(exc)}; nothing was written", path) from None
    except RuntimeError:  # ITK and torch writers raise RuntimeError: say so when the folder is the cause
        problem = _folder_problem(path.parent)
        if problem is None:
            raise
        raise VoCoError(f"cannot write: {problem}; nothing was written", path) from None
    finally:
        with contextlib.suppress(OSError):
            tmp.unlink()


def save_torch(obj: object, path: str | os.PathLike, overwrite: bool = True) -> Path:
    """``torch.save`` atomically (temp + rename): a crash mid-write never leaves a truncated checkpoint."""
    import torch

    with atomic_path(path, overwrite=overwrite, suffix=".tmp") as tmp:
        torch.save(obj, tmp)
    return Path(path)
