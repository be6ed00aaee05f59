"""Hashing and verified downloads: one place for the SHA-256 of a file and for fetching a URL into a file
atomically, shared by the sample-data registry, the weight loader and the Slicer model registry."""

from __future__ import annotations

import hashlib
import os
import urllib.request
from collections.abc import Callable
from pathlib import Path

from vococore.utils.atomic import atomic_path
from vococore.utils.errors import VoCoError


def sha256_of(path: str | os.PathLike) -> str:
    """Hex SHA-256 of a file, read in 1 MiB chunks."""
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def download(url: str, target: str | os.PathLike, sha256: str | None = None,
             progress: Callable[[int, int | None], None] | None = None, timeout: float = 60,
             overwrite: bool = True, hint: str = "") -> str:
    """Download ``url`` to ``target`` atomically and return the file's SHA-256.

    When ``sha256`` is given a file that differs is deleted and refused; ``progress(done, total)`` is called per MiB.
    ``overwrite=False`` refuses an existing ``target``; ``hint`` is appended to the message of a failed transfer.
    """
    failed = f"{'; ' + hint if hint else ''}"
    with atomic_path(target, overwrite=overwrite) as tmp:
        try:  # a transfer error is the source's fault, not the target folder's: said before atomic_path sees it
            response = urllib.request.urlopen(url, timeout=timeout)
        except OSError as exc:
            raise VoCoError(f"cannot download ({exc}){failed}", url) from None
        with response, open(tmp, "wb") as out:
            length = response.headers.get("Content-Length")  # file:// responses have no .length
            total = int(length) if length else None
            done = 0
            while True:
                try:
                    chunk = response.read(1 << 20)
                except OSError as exc:
                    raise VoCoError(f"cannot download ({exc}){failed}", url) from None
                if not chunk:
                    break
                out.write(chunk)
                done += len(chunk)
                if progress is not None:
                    progress(done, total)
        got = sha256_of(tmp)
        if sha256 is not None and got != sha256:
            raise VoCoError(f"downloaded file has SHA-256 {got}, expected {sha256}; not kept", url)
    return got
