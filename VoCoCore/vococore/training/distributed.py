"""torchrun support: process-group setup from the environment, DDP wrapping, rank-0-only output helpers.

Launch with ``torchrun --standalone --nproc_per_node=N -m vococore pretrain ...``; NCCL is used on GPUs and
gloo on CPU. On CPU every rank uses one thread, so N ranks share N cores instead of oversubscribing them.
"""

from __future__ import annotations

import datetime
import os
from dataclasses import dataclass
from typing import Any

import torch
import torch.distributed as dist

from vococore.utils.device import pick_device
from vococore.utils.errors import VoCoError


@dataclass(frozen=True)
class DistInfo:
    """This process's place in the run: ``rank`` of ``world_size``, ``local_rank`` on its node, its device."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    device: torch.device = torch.device("cpu")

    @property
    def is_main(self) -> bool:
        """True on the one process that writes files and prints (rank 0)."""
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.world_size > 1


def init_distributed(device: str = "auto", timeout_s: float | None = None) -> DistInfo:
    """Join the process group when launched by torchrun (``WORLD_SIZE`` > 1), else a single-process DistInfo.

    ``timeout_s`` bounds every collective (barrier, gather, all-reduce): a rank that waits longer fails instead of
    hanging; None keeps torch's default (10 minutes on NCCL, 30 on gloo).
    """
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    dev = pick_device(device, local_rank)
    if dev.type == "cuda":
        torch.cuda.set_device(dev)
    if world_size > 1:
        if dev.type == "cpu":
            torch.set_num_threads(1)
        if not dist.is_initialized():
            timeout = None if timeout_s is None else datetime.timedelta(seconds=float(timeout_s))
            dist.init_process_group(backend="nccl" if dev.type == "cuda" else "gloo", timeout=timeout)
    return DistInfo(rank=rank, world_size=world_size, local_rank=local_rank, device=dev)


def wrap_model(model: torch.nn.Module, info: DistInfo) -> torch.nn.Module:
    """DDP-wrap ``model`` for multi-process runs (find_unused_parameters=True as the official code)."""
    if not info.distributed:
        return model
    ids = [info.device.index] if info.device.type == "cuda" else None
    return torch.nn.parallel.DistributedDataParallel(model, device_ids=ids, find_unused_parameters=True)


def unwrap_model(model: torch.nn.Module) -> torch.nn.Module:
    """The plain module inside a DDP wrapper (what checkpoints store)."""
    return model.module if isinstance(model, torch.nn.parallel.DistributedDataParallel) else model


def gather_objects(obj: Any, info: DistInfo) -> list[Any]:
    """Every rank's ``obj`` in rank order (just ``[obj]`` in a single process)."""
    if not info.distributed:
        return [obj]
    out: list[Any] = [None] * info.world_size
    dist.all_gather_object(out, obj)
    return out


def any_rank(flag: bool, info: DistInfo) -> bool:
    """True when ``flag`` is set on any rank (e.g. a stop signal), so all ranks stop at the same step."""
    if not info.distributed:
        return flag
    t = torch.tensor([1.0 if flag else 0.0], device=info.device)
    dist.all_reduce(t, op=dist.ReduceOp.MAX)
    return bool(t.item() > 0)


def barrier(info: DistInfo) -> None:
    """Wait for all ranks (no-op in a single process)."""
    if info.distributed:
        dist.barrier()


def cleanup(info: DistInfo) -> None:
    """Leave the process group at the end of a run. A finished run passes a barrier first, so that no rank tears
    gloo down while a peer still writes its checkpoint: one rank of a 2-process gloo fine-tuning that went straight
    here aborted once at exit ("terminate called without an active exception"); not reproduced since."""
    if info.distributed and dist.is_initialized():
        dist.destroy_process_group()
