"""The model registry: official models from ``Resources/Models/models.json`` plus models the user imported,
all kept in a per-user cache and verified by SHA-256 (recorded on first download when none was published)."""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from vococore.utils.atomic import atomic_path
from vococore.utils.downloads import download, sha256_of
from vococore.utils.errors import VoCoError

MODELS_JSON = Path(__file__).resolve().parents[1] / "Resources" / "Models" / "models.json"
USER_MODELS = "user_models.json"
RECORDED = "recorded_sha256.json"
VERIFIED = "verified_sha256.json"  # file name -> [size, mtime_ns, sha256] of cache files already hashed


def default_cache_dir() -> Path:
    """``$VOCOCORE_CACHE/models`` or ``~/.cache/vococore/models`` (shared with the vococore command line)."""
    root = os.environ.get("VOCOCORE_CACHE") or Path.home() / ".cache" / "vococore"
    return Path(root) / "models"



@dataclass(frozen=True)
class ModelEntry:
    """One model: where it comes from, how big, which checksum, under which license, and its label names."""

    id: str
    title: str
    filename: str
    url: str | None = None
    description: str = ""
    size: int | None = None
    size_note: str = ""
    sha256: str | None = None
    sha256_note: str = ""
    license: str = "unknown"
    modality: str = "CT"
    source: str = "official"
    labels: dict[int, str] = field(default_factory=dict)
    extra: dict[str, Any] = field(default_factory=dict, compare=False)


class ModelRegistry:
    """Lists, downloads, imports and verifies models; files live in ``cache_dir`` under their file names."""

    def __init__(self, models_json: str | os.PathLike = MODELS_JSON, cache_dir: str | os.PathLike | None = None):
        self.models_json = Path(models_json)
        self.cache_dir = Path(cache_dir) if cache_dir is not None else default_cache_dir()
        self._official = _read_models_json(self.models_json)

    def entries(self) -> list[ModelEntry]:
        """Official models first, then the user's imported models."""
        return [*self._official, *self._user_entries()]

    def get(self, model_id: str) -> ModelEntry:
        """The entry called ``model_id``; the error lists the known ones."""
        for entry in self.entries():
            if entry.id == model_id:
                return entry
        raise VoCoError(f"unknown model {model_id!r}; known: {[e.id for e in self.entries()]}")

    def path(self, entry: ModelEntry) -> Path:
        """Where the model's file lives (or will live) in the cache."""
        return self.cache_dir / entry.filename

    def expected_sha256(self, entry: ModelEntry) -> str | None:
        """The published checksum, else the one recorded at first download, else None."""
        return entry.sha256 or self._recorded().get(entry.id)

    def local_path(self, entry: ModelEntry) -> Path | None:
        """The verified cached file, or None when it is missing; a file whose checksum differs is an error."""
        path = self.path(entry)
        if not path.is_file():
            return None
        expected = self.expected_sha256(entry)
        if expected is not None and self.file_sha256(path) != expected:
            raise VoCoError(f"cached model {entry.id!r} has a different SHA-256 than {expected[:12]}...; "
                            "delete it and download again", path)
        return path

    def file_sha256(self, path: Path) -> str:
        """SHA-256 of a cached file, computed once and remembered with its size and modification time: hashing an
        H model (4.65 GB) on every Apply would hold the GUI for tens of seconds. A changed file is hashed again."""
        stat = path.stat()
        key = [stat.st_size, stat.st_mtime_ns]
        known = self._read_json(VERIFIED, {}).get(path.name)
        if known and known[:2] == key:
            return known[2]
        digest = sha256_of(path)
        self._remember(path, digest)
        return digest

    def _remember(self, path: Path, digest: str) -> None:
        stat = path.stat()
        self._write_json(VERIFIED, {**self._read_json(VERIFIED, {}), path.name: [stat.st_size, stat.st_mtime_ns,
                                                                                 digest]})

    def download(self, entry: ModelEntry, on_bytes: Callable[[int, int | None], None] | None = None) -> Path:
        """Fetch ``entry`` into the cache (atomically), verify its SHA-256, record it if none was published."""
        if (cached := self.local_path(entry)) is not None:
            return cached
        if not entry.url:
            raise VoCoError(f"model {entry.id!r} has no download address; import the file instead")
        target = self.path(entry)
        progress = None if on_bytes is None else lambda done, total: on_bytes(done, total or entry.size)
        got = download(entry.url, target, self.expected_sha256(entry), progress, overwrite=False,
                       hint="download the file by other means and use 'Import model file'")
        if entry.sha256 is None:
            self._record(entry.id, got)
        self._remember(target, got)
        return target

    def import_model(self, source: str | os.PathLike, model_id: str, title: str | None = None,
                     expected_sha256: str | None = None, labels: dict[int, str] | None = None) -> ModelEntry:
        """Copy a model file into the cache (for offline use), check it against ``expected_sha256`` if given."""
        source = Path(source)
        if not source.is_file():
            raise VoCoError("model file not found", source)
        if any(e.id == model_id for e in self.entries()):
            raise VoCoError(f"a model called {model_id!r} is already registered; choose another name")
        got = sha256_of(source)
        if expected_sha256 is not None and got != expected_sha256.lower():
            raise VoCoError(f"SHA-256 is {got}, expected {expected_sha256}; not imported", source)
        entry = ModelEntry(id=model_id, title=title or model_id, filename=f"{model_id}{''.join(source.suffixes)}",
                           size=source.stat().st_size, sha256=got, sha256_note="computed at import",
                           source="user", license="user-supplied", labels=dict(labels or {}),
                           description=f"imported from {source}")
        with atomic_path(self.path(entry), overwrite=False) as tmp:
            shutil.copyfile(source, tmp)
            if sha256_of(tmp) != got:
                raise VoCoError("copy into the model cache does not match the source; not imported", source)
        self._write_json(USER_MODELS, [_entry_to_json(e) for e in [*self._user_entries(), entry]])
        self._remember(self.path(entry), got)
        return entry

    def _user_entries(self) -> list[ModelEntry]:
        return [_entry_from_json(d, {}) for d in self._read_json(USER_MODELS, [])]

    def _recorded(self) -> dict[str, str]:
        return self._read_json(RECORDED, {})

    def _record(self, model_id: str, sha256: str) -> None:
        self._write_json(RECORDED, {**self._recorded(), model_id: sha256})

    def _read_json(self, name: str, default: Any) -> Any:
        path = self.cache_dir / name
        if not path.is_file():
            return default
        try:
            return json.loads(path.read_text())
        except ValueError as exc:
            raise VoCoError(f"not valid JSON ({exc})", path) from None

    def _write_json(self, name: str, data: Any) -> None:
        with atomic_path(self.cache_dir / name, overwrite=True) as tmp:
            tmp.write_text(json.dumps(data, indent=1))


def _read_models_json(path: Path) -> list[ModelEntry]:
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise VoCoError(f"cannot read the model list ({exc})", path) from None
    label_sets = {name: {int(k): v for k, v in names.items()} for name, names in data.get("labels", {}).items()}
    return [_entry_from_json(d, label_sets, path) for d in data.get("models", [])]


def _entry_from_json(data: dict[str, Any], label_sets: dict[str, dict[int, str]],
                     source: Path | None = None) -> ModelEntry:
    known = set(ModelEntry.__dataclass_fields__) - {"labels", "extra"}
    missing = {"id", "title", "filename"} - set(data)
    if missing:
        raise VoCoError(f"model entry {data.get('id', '?')!r} lacks {sorted(missing)}", source)
    labels = {int(k): v for k, v in data.get("labels", {}).items()} or label_sets.get(data.get("labels_ref", ""), {})
    return ModelEntry(**{k: v for k, v in data.items() if k in known}, labels=labels,
                      extra={k: v for k, v in data.items() if k not in known and k not in ("labels", "labels_ref")})


def _entry_to_json(entry: ModelEntry) -> dict[str, Any]:
    data = asdict(entry)
    data["labels"] = {str(k): v for k, v in entry.labels.items()}
    data.update(data.pop("extra"))
    return data
