"""The preprocessed-volume cache: each CT is read and preprocessed once, then kept as a compact float16 or
uint8 array, on disk (memory-mappable ``.npy``) or in memory, within a size limit the user sets.

Disk entries are keyed by the file's absolute path, size and modification time plus a hash of the
preprocessing config and storage dtype, so an edited file or a changed recipe never reuses a stale entry.
Beyond the limit, new volumes are not cached (a warning says how many) and are re-read on each use.
Files that fail to read leave a ``.bad.json`` marker with the error, so other ranks/workers skip re-reading them.

Each disk entry is ``KEY.npy`` then ``KEY.json`` (its manifest line: source, affine, shape, dtype, which rank built
it), both written atomically, the ``.json`` last: an entry counts only once both exist, so a build killed at any
moment resumes with the finished volumes and redoes only the one it was writing. ``manifest.json`` sums up the
last complete build (see vococore.pretraining.data.dataset.warm_cache).
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from vococore.utils.atomic import atomic_path
from vococore.utils.config import to_dict
from vococore.utils.errors import VoCoError
from vococore.preprocessing.preprocessor import PreprocessConfig, Preprocessor

log = logging.getLogger(__name__)

STORAGE_DTYPES = {"float16": np.float16, "uint8": np.uint8}
CACHE_VERSION = 1


@dataclass(frozen=True)
class CachedVolume:
    """One preprocessed volume: ``array`` (x, y, z) in 0..1 (float16, or uint8 scaled by 255), its RAS affine."""

    array: np.ndarray
    affine: np.ndarray
    source: str

    def as_float(self) -> np.ndarray:
        """The intensities as float32 0..1 (decoding uint8 storage)."""
        return decode(self.array)


def decode(array: np.ndarray) -> np.ndarray:
    """Stored intensities (float16, or uint8 = 255·x) as float32 0..1."""
    if array.dtype == np.uint8:
        return array.astype(np.float32) / 255.0
    return array.astype(np.float32)


def decode_window(array: np.ndarray, start: np.ndarray, size: tuple[int, int, int]) -> np.ndarray:
    """The float32 box ``[start, start + size)`` of a stored (x, y, z) array, zero outside it (air after the HU
    window). Only this box is read from a memory-mapped cache entry and decoded."""
    start = np.asarray(start, dtype=np.int64)
    out = np.zeros(size, dtype=np.float32)
    lo = np.maximum(start, 0)
    hi = np.minimum(start + np.asarray(size), np.asarray(array.shape))
    if np.all(hi > lo):
        dst = lo - start
        out[dst[0]:dst[0] + hi[0] - lo[0], dst[1]:dst[1] + hi[1] - lo[1], dst[2]:dst[2] + hi[2] - lo[2]] = \
            decode(array[lo[0]:hi[0], lo[1]:hi[1], lo[2]:hi[2]])
    return out


def file_signature(path: Path) -> dict:
    """Absolute path, total size and newest mtime (a DICOM folder counts all its files)."""
    path = path.resolve()
    if path.is_dir():
        stats = [p.stat() for p in sorted(path.iterdir()) if p.is_file()]
        size, mtime = sum(s.st_size for s in stats), max((s.st_mtime_ns for s in stats), default=0)
    else:
        st = path.stat()
        size, mtime = st.st_size, st.st_mtime_ns
    return {"path": str(path), "size": int(size), "mtime_ns": int(mtime)}


def encode(image: np.ndarray, dtype: str) -> np.ndarray:
    """Store 0..1 float intensities compactly: float16 as is, uint8 as round(255·x)."""
    image = np.clip(np.nan_to_num(np.asarray(image, dtype=np.float32)), 0.0, 1.0)
    if dtype == "uint8":
        return np.rint(image * 255.0).astype(np.uint8)
    return image.astype(np.float16)


class VolumeCache:
    """Reads, preprocesses and caches volumes; ``get(path)`` returns a :class:`CachedVolume`.

    ``cache_dir`` None keeps arrays in this process's memory; ``limit_gb`` bounds the cached bytes
    (0 or None: unbounded).
    """

    def __init__(self, preprocess: PreprocessConfig, cache_dir: str | os.PathLike | None = None,
                 limit_gb: float | None = None, dtype: str = "float16") -> None:
        if dtype not in STORAGE_DTYPES:
            raise VoCoError(f"cache dtype must be one of {sorted(STORAGE_DTYPES)}, got {dtype!r}")
        self.preprocess = preprocess
        self.dtype = dtype
        self.cache_dir = None if cache_dir is None else Path(cache_dir)
        self.limit_bytes = int(limit_gb * 2**30) if limit_gb else None
        self._preprocessor: Preprocessor | None = None
        self._memory: dict[str, CachedVolume] = {}
        self._skipped: set[str] = set()
        self.config_hash = hashlib.sha256(json.dumps(
            {"v": CACHE_VERSION, "dtype": dtype, "pre": to_dict(preprocess)}, sort_keys=True).encode()).hexdigest()
        self.rank = 0  # recorded in the entries this process builds
        self.built = 0  # volumes read and preprocessed by this instance
        self.reused = 0  # volumes found ready on disk
        self.used_bytes = 0
        if self.cache_dir is not None:
            self.cache_dir.mkdir(parents=True, exist_ok=True)
            self.used_bytes = self.disk_bytes()

    def disk_bytes(self) -> int:
        """Bytes of the complete entries on disk (temporary files of an unfinished write excluded)."""
        return sum(p.stat().st_size for p in self.cache_dir.glob("*.npy")
                   if not p.name.startswith(".") and p.with_suffix(".json").is_file())

    def key(self, path: str | os.PathLike) -> str:
        """Cache key of ``path``: hash of its signature and of the preprocessing config."""
        sig = json.dumps({**file_signature(Path(path)), "config": self.config_hash}, sort_keys=True)
        return hashlib.sha256(sig.encode()).hexdigest()[:32]

    @property
    def skipped_count(self) -> int:
        """How many volumes were not cached because of the size limit."""
        return len(self._skipped)

    def get(self, path: str | os.PathLike) -> CachedVolume:
        """The preprocessed volume of ``path``, from the cache when present; raises VoCoError on a bad file."""
        path = Path(path)
        if not path.exists():
            raise VoCoError("no such file or folder", path)
        key = self.key(path)
        if key in self._memory:
            return self._memory[key]
        if self.cache_dir is not None:
            hit = self._load(key)
            if hit is not None:
                return hit
        volume = self._compute(path, key)
        self._store(key, volume)
        return volume

    def _load(self, key: str) -> CachedVolume | None:
        bad = self.cache_dir / f"{key}.bad.json"
        if bad.is_file():
            info = json.loads(bad.read_text())
            raise VoCoError(info["error"], info["path"])
        npy, meta = self.cache_dir / f"{key}.npy", self.cache_dir / f"{key}.json"
        if not (npy.is_file() and meta.is_file()):
            return None
        info = json.loads(meta.read_text())
        try:
            array = np.load(npy, mmap_mode="r")
        except (OSError, ValueError):
            return None  # a damaged cache entry is rebuilt
        self.reused += 1
        return CachedVolume(array, np.asarray(info["affine"], dtype=np.float64), info["source"])

    def _compute(self, path: Path, key: str) -> CachedVolume:
        from vococore.io import read_volume

        try:
            volume = read_volume(path)
        except VoCoError as exc:
            if self.cache_dir is not None:
                with atomic_path(self.cache_dir / f"{key}.bad.json", overwrite=True) as tmp:
                    tmp.write_text(json.dumps({"path": str(path), "error": str(exc).removeprefix(f"{path}: ")}))
            raise
        if self._preprocessor is None:
            self._preprocessor = Preprocessor(self.preprocess)
        pre = self._preprocessor(volume)
        image = np.asarray(pre.image.as_tensor()[0].numpy() if hasattr(pre.image, "as_tensor") else pre.image[0])
        self.built += 1
        return CachedVolume(encode(image, self.dtype), pre.affine, str(path))

    def _store(self, key: str, volume: CachedVolume) -> None:
        size = volume.array.nbytes
        if self.limit_bytes is not None and self.used_bytes + size > self.limit_bytes:
            if key not in self._skipped:
                self._skipped.add(key)
                log.warning("cache limit %.2f GB reached: %s is not cached and will be re-read on every use "
                            "(%d volume(s) uncached so far); raise cache_limit_gb to cache it",
                            self.limit_bytes / 2**30, volume.source, len(self._skipped))
            return
        self.used_bytes += size
        if self.cache_dir is None:
            self._memory[key] = volume
            return
        with atomic_path(self.cache_dir / f"{key}.npy", overwrite=True) as tmp:
            np.save(tmp, volume.array)
        with atomic_path(self.cache_dir / f"{key}.json", overwrite=True) as tmp:
            tmp.write_text(json.dumps({"source": volume.source, "affine": volume.affine.tolist(),
                                       "shape": list(volume.array.shape), "dtype": self.dtype,
                                       "built_by_rank": self.rank}))
