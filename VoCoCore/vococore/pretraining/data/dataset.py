"""The pretraining dataset: one sample = the pretext crops of one cached volume, reproducible from its index.

Sample ``n`` (a global counter over the whole run) picks volume ``perm_e[n mod V]`` where ``perm_e`` is the
seeded permutation of epoch ``e = n div V``, and draws its crops with ``numpy.random.default_rng([seed, n])``.
So a run's data depends only on (seed, step, rank): resuming at step k needs no loader state, DataLoader
workers may run in any order, and every rank of a distributed run takes its own share of each step.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from vococore.pretraining.data.cache import VolumeCache
from vococore.utils.errors import VoCoError

log = logging.getLogger(__name__)

# make_sample(stored image (x, y, z), float16 or uint8 as cached, rng) -> dict of tensors for one volume.
SampleFn = Callable[[np.ndarray, np.random.Generator], dict[str, Any]]


def warm_cache(cache: VolumeCache, paths: Sequence[str | os.PathLike], skip_bad_files: bool = False,
               progress: Any = None) -> tuple[list[Path], list[tuple[Path, str]]]:
    """Read and preprocess every volume once (filling the cache) before training starts.

    Returns the usable paths and the (path, reason) of bad ones. Without ``skip_bad_files`` the first bad file
    raises its VoCoError (which names the file); with it, bad files are left out and counted.
    """
    good: list[Path] = []
    bad: list[tuple[Path, str]] = []
    for i, path in enumerate(paths):
        try:
            cache.get(path)
            good.append(Path(path))
        except VoCoError as exc:
            if not skip_bad_files:
                raise VoCoError(f"{exc} (pass skip_bad_files to leave unreadable volumes out)") from None
            bad.append((Path(path), str(exc)))
            log.warning("skipping unreadable volume: %s", exc)
        if progress is not None:
            progress.update(i + 1, bad_files=len(bad))
    if not good:
        raise VoCoError(f"none of the {len(paths)} volume(s) could be read; first problem: {bad[0][1]}")
    return good, bad


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
