"""Sample-data registry: real public CT files named by dataset, each with its URL and SHA-256.

Lookup order: a local mirror folder (``--sample-data-mirror`` / ``VOCOCORE_SAMPLE_DATA_MIRROR``), then the
user cache (``VOCOCORE_CACHE`` or ``~/.cache/vococore``), then a verified download into that cache.
Mirror files are used in place and never written to, so a read-only mirror works.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

from vococore.utils.downloads import download, sha256_of
from vococore.utils.errors import VoCoError

MIRROR_ENV = "VOCOCORE_SAMPLE_DATA_MIRROR"
CACHE_ENV = "VOCOCORE_CACHE"


@dataclass(frozen=True)
class SampleFile:
    """One file of a dataset: where it lives relative to the mirror/cache root, and how to check it."""

    path: str
    url: str
    sha256: str
    size: int


@dataclass(frozen=True)
class SampleDataset:
    """A named sample: one volume file, or several files forming one DICOM series folder."""

    name: str
    description: str
    license: str
    files: tuple[SampleFile, ...]

    @property
    def is_folder(self) -> bool:
        return len(self.files) > 1


def registry() -> dict[str, SampleDataset]:
    """All registered sample datasets by name."""
    raw = json.loads(resources.files("vococore.io").joinpath("sample_data.json").read_text())
    return {name: SampleDataset(name, d["description"], d["license"], tuple(SampleFile(**f) for f in d["files"]))
            for name, d in raw["datasets"].items()}


def cache_dir() -> Path:
    """Where downloads are kept: ``$VOCOCORE_CACHE/sampledata`` or ``~/.cache/vococore/sampledata``."""
    root = os.environ.get(CACHE_ENV) or Path.home() / ".cache" / "vococore"
    return Path(root) / "sampledata"


def fetch(name: str, mirror: str | os.PathLike | None = None, download: bool = True) -> Path:
    """Path of dataset ``name`` (a file, or the folder of a DICOM series), verified by SHA-256.

    Uses the mirror when its copy matches, else the cache, else downloads (when ``download``) into the cache.
    """
    datasets = registry()
    if name not in datasets:
        raise VoCoError(f"unknown sample dataset {name!r}; known: {sorted(datasets)}")
    dataset = datasets[name]
    mirror = mirror if mirror is not None else os.environ.get(MIRROR_ENV)
    roots = [Path(mirror)] if mirror else []
    for root in roots + [cache_dir()]:
        if all(_matches(root / f.path, f) for f in dataset.files):
            return _dataset_path(root, dataset)
    if not download:
        where = f"mirror {mirror} or cache {cache_dir()}" if mirror else f"cache {cache_dir()}"
        raise VoCoError(f"sample dataset {name!r} not found in {where} and downloads are off")
    for f in dataset.files:
        target = cache_dir() / f.path
        if not _matches(target, f):
            _download(f, target)
    return _dataset_path(cache_dir(), dataset)


def _dataset_path(root: Path, dataset: SampleDataset) -> Path:
    return (root / dataset.files[0].path).parent if dataset.is_folder else root / dataset.files[0].path


def _matches(path: Path, f: SampleFile) -> bool:
    return path.is_file() and path.stat().st_size == f.size and sha256_of(path) == f.sha256


def _download(f: SampleFile, target: Path) -> None:
    """Download ``f`` to ``target``; a file whose SHA-256 differs is refused and not kept."""
    try:
        download(f.url, target, sha256=f.sha256)
    except VoCoError as exc:
        if "SHA-256" in str(exc):
            raise
        raise VoCoError(f"{exc}; set {MIRROR_ENV} to a folder holding the sample data") from None
