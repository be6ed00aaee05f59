"""The pretraining dataset: one sample = the pretext crops of one cached volume, reproducible from its index.

Sample ``n`` (a global counter over the whole run) picks volume ``perm_e[n mod V]`` where ``perm_e`` is the
seeded permutation of epoch ``e = n div V``, and draws its crops with ``numpy.random.default_rng([seed, n])``.
So a run's data depends only on (seed, step, rank): resuming at step k needs no loader state, DataLoader
workers may run in any order, and every rank of a distributed run takes its own share of each step.
"""

from __future__ import annotations

import json
import logging
import os
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from vococore.pretraining.data.cache import VolumeCache
from vococore.training.distributed import DistInfo, gather_objects
from vococore.utils.atomic import atomic_path
from vococore.utils.errors import VoCoError

log = logging.getLogger(__name__)

# make_sample(stored image (x, y, z), float16 or uint8 as cached, rng) -> dict of tensors for one volume.
SampleFn = Callable[[np.ndarray, np.random.Generator], dict[str, Any]]


def warm_cache(cache: VolumeCache, paths: Sequence[str | os.PathLike], skip_bad_files: bool = False,
               progress: Any = None, info: DistInfo | None = None) -> tuple[list[Path], list[tuple[Path, str]]]:
    """Read and preprocess every volume once (filling the cache) before training starts.

    With a disk cache in a distributed run every rank builds its own share (volumes rank, rank + N, ...) in
    parallel and the ranks then swap only their lists of bad files (one collective, under the process group's
    timeout); an in-memory cache is filled by every rank for itself. Volumes already on disk are reused, so a
    killed build resumes where it stopped. Returns the usable paths and the (path, reason) of bad ones, the same
    on every rank. Without ``skip_bad_files`` a bad file raises its VoCoError (which names the file) on all ranks
    alike, after the swap, so no rank is left waiting.
    """
    info = info or DistInfo()
    shared = cache.cache_dir is not None and info.distributed
    share = range(info.rank, len(paths), info.world_size) if shared else range(len(paths))
    cache.rank = info.rank
    full_limit = cache.limit_bytes
    if shared and full_limit is not None:  # each rank may fill an equal part of what is left under the limit
        cache.limit_bytes = cache.used_bytes + max(full_limit - cache.used_bytes, 0) // info.world_size
    bad: dict[int, str] = {}
    t0 = time.monotonic()
    for done, i in enumerate(share, 1):
        try:
            cache.get(paths[i])
        except VoCoError as exc:
            bad[i] = str(exc)
            # Left out: said once per file. Not left out: the run stops with one line (below), said only there.
            log.log(logging.WARNING if skip_bad_files else logging.DEBUG, "unreadable volume: %s", exc)
        if progress is not None:
            progress.update(done, volumes_per_s=done / max(time.monotonic() - t0, 1e-9), bad_files=len(bad),
                            reused=cache.reused)
    mine = {"bad": bad, "built": cache.built, "reused": cache.reused, "uncached": cache.skipped_count}
    parts = gather_objects(mine, info) if shared else [mine]
    for part in parts:
        bad.update(part["bad"])
    cache.limit_bytes = full_limit
    if cache.cache_dir is not None:
        cache.used_bytes = cache.disk_bytes()
    if bad and not skip_bad_files:
        more = f"; {len(bad) - 1} more unreadable (vococore -v lists them)" if len(bad) > 1 else ""
        raise VoCoError(f"{bad[min(bad)]}{more} (pass skip_bad_files to leave unreadable volumes out)")
    good = [Path(p) for i, p in enumerate(paths) if i not in bad]
    if not good:
        raise VoCoError(f"none of the {len(paths)} volume(s) could be read; first problem: {bad[min(bad)]}")
    if cache.cache_dir is not None and info.is_main:
        _write_manifest(cache, paths, bad, parts)
    return good, [(Path(paths[i]), bad[i]) for i in sorted(bad)]


def _write_manifest(cache: VolumeCache, paths: Sequence[str | os.PathLike], bad: dict[int, str],
                    parts: list[dict[str, Any]]) -> None:
    """``manifest.json``: what the last complete build holds and how it was made (for people and audits)."""
    record = {"config_hash": cache.config_hash, "dtype": cache.dtype, "volumes": len(paths),
              "bad": {str(paths[i]): bad[i] for i in sorted(bad)}, "bytes": cache.used_bytes,
              "limit_bytes": cache.limit_bytes, "ranks": len(parts),
              "built": sum(p["built"] for p in parts), "reused": sum(p["reused"] for p in parts),
              "uncached_over_limit": sum(p["uncached"] for p in parts)}
    with atomic_path(cache.cache_dir / "manifest.json", overwrite=True) as tmp:
        tmp.write_text(json.dumps(record, indent=1))


class PretextDataset(torch.utils.data.Dataset):
    """Map-style dataset over global sample indices (see module docstring); ``len`` is one epoch."""

    def __init__(self, paths: Sequence[str | os.PathLike], cache: VolumeCache, make_sample: SampleFn,
                 seed: int = 0) -> None:
        if not paths:
            raise VoCoError("the dataset has no volumes")
        self.paths = [Path(p) for p in paths]
        self.cache = cache
        self.make_sample = make_sample
        self.seed = int(seed)

    def __len__(self) -> int:
        return len(self.paths)

    def volume_index(self, n: int) -> int:
        """Which volume global sample ``n`` uses (a fresh seeded permutation every epoch)."""
        epoch, pos = divmod(int(n), len(self.paths))
        perm = np.random.default_rng([self.seed, 7919, epoch]).permutation(len(self.paths))
        return int(perm[pos])

    def __getitem__(self, n: int) -> dict[str, Any]:
        path = self.paths[self.volume_index(n)]
        image = self.cache.get(path).array  # as stored (often memory-mapped): the sampler decodes what it cuts
        sample = self.make_sample(image, np.random.default_rng([self.seed, int(n)]))
        sample["index"] = int(n)
        return sample


class StepShardSampler(torch.utils.data.Sampler[int]):
    """Yields the global sample indices of ``rank`` for steps ``start_step .. stop_step - 1``.

    Step s on rank r takes indices ``(s * world_size + r) * batch_size + b`` for b < batch_size: every rank
    gets distinct volumes, and together the ranks walk through each epoch's permutation.
    """

    def __init__(self, batch_size: int, start_step: int, stop_step: int, rank: int = 0,
                 world_size: int = 1) -> None:
        self.batch_size, self.rank, self.world_size = int(batch_size), int(rank), int(world_size)
        self.start_step, self.stop_step = int(start_step), int(stop_step)

    def __iter__(self) -> Iterator[int]:
        for step in range(self.start_step, self.stop_step):
            first = (step * self.world_size + self.rank) * self.batch_size
            yield from range(first, first + self.batch_size)

    def __len__(self) -> int:
        return max(self.stop_step - self.start_step, 0) * self.batch_size


def make_loader(dataset: PretextDataset, batch_size: int, start_step: int, stop_step: int, rank: int = 0,
                world_size: int = 1, workers: int = 0, pin_memory: bool = False) -> torch.utils.data.DataLoader:
    """A DataLoader giving one batch (``batch_size`` volumes) per step of this rank, from ``start_step``.

    It draws no numbers from the global torch RNG (own generator), so resuming does not shift model randomness.
    """
    sampler = StepShardSampler(batch_size, start_step, stop_step, rank, world_size)
    return torch.utils.data.DataLoader(
        dataset, batch_size=batch_size, sampler=sampler, num_workers=workers, pin_memory=pin_memory,
        persistent_workers=False, prefetch_factor=2 if workers else None, drop_last=False,
        generator=torch.Generator().manual_seed(dataset.seed))
