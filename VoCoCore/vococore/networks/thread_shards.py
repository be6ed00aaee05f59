"""Training a backbone on several CPU threads by splitting its batch: each thread runs the forward and the backward
of its part of the batch on one intra-op thread, and the parameter gradients of the parts are summed in a fixed
order (part 0 first), so a run repeats bit for bit.

Why: PyTorch's intra-op threads barely speed up the small CNN's 4-24-channel 3D convolutions. On this project's
2-core CPU the ``small`` pretraining backbone's forward + backward (22 crops of 32³) took 0.76 s on one thread and
2.9 s on two (default kernels), against 0.51 s for two halves of the batch on one thread each (under load; the
quiet figures are in BENCHMARKS.md, "Training kernels on CPU").

Only for networks whose layers see one sample at a time (instance or layer norm, no batch norm, no active dropout
or drop path): there every part's numbers are those of the whole batch, and only the order in which a parameter's
gradient is summed over the samples changes (float32 rounding).
"""

from __future__ import annotations

import contextlib
import os
import types
from typing import Any
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor

import torch
from torch import nn
from torch.autograd.function import once_differentiable

from vococore.networks.fast_inference import cpu_float32

_pools: dict[int, ThreadPoolExecutor] = {}


def _pool(workers: int) -> ThreadPoolExecutor:
    """A process-wide pool of ``workers`` threads, made on first use."""
    if workers not in _pools:
        _pools[workers] = ThreadPoolExecutor(workers, thread_name_prefix="vococore-shard")
    return _pools[workers]


os.register_at_fork(after_in_child=_pools.clear)  # a forked child (a DataLoader worker) has none of the threads


def batch_separable(modules: list[nn.Module]) -> bool:
    """Whether ``modules`` treat each sample of a batch on its own in training (no batch norm, no active dropout
    or drop path), so that splitting the batch keeps their numbers."""
    for m in (m for module in modules for m in module.modules()):
        if isinstance(m, nn.modules.batchnorm._NormBase) and not isinstance(m, nn.modules.instancenorm._InstanceNorm):
            return False
        if isinstance(m, nn.modules.dropout._DropoutNd) and m.p > 0:
            return False
        if float(getattr(m, "drop_prob", 0.0) or 0.0) > 0:  # MONAI's DropPath
            return False
    return True


@contextlib.contextmanager
def intra_op_threads(count: int) -> Iterator[None]:
    """The caller's intra-op thread count at ``count`` for the block, restored after."""
    before = torch.get_num_threads()
    torch.set_num_threads(count)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def _map_one_thread(fn: Callable[[Any], Any], items: list[Any]) -> list[Any]:
    """``fn`` of each item, one pool thread per item, each on one intra-op thread (the caller's too while it
    waits); results in item order."""
    def task(item: Any) -> Any:
        torch.set_num_threads(1)  # per thread: a pool thread keeps the count it first saw
        return fn(item)

    with intra_op_threads(1):
        return list(_pool(len(items)).map(task, items))


class _ThreadShards(torch.autograd.Function):
    """``module``'s forward on parts of the batch in the pool's threads; backward the same way."""

    @staticmethod
    def forward(ctx, module: nn.Module, parts: int, x: torch.Tensor, *params: torch.Tensor) -> torch.Tensor:
        """Each part's own graph is recorded in its thread (autograd's grad mode is per thread)."""
        needs_x = ctx.needs_input_grad[2]

        def run(part: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
            with torch.enable_grad():
                leaf = part.detach().requires_grad_(needs_x)
                return leaf, type(module).forward(module, leaf)

        ctx.parts = _map_one_thread(run, list(x.tensor_split(parts)))
        ctx.params = params
        return torch.cat([out.detach() for _, out in ctx.parts])

    @staticmethod
    @once_differentiable
    def backward(ctx, grad: torch.Tensor):
        """Each part's gradients in its thread (autograd runs a CPU graph on the calling thread); parameter
        gradients summed in part order."""
        wanted = [i for i, p in enumerate(ctx.params) if ctx.needs_input_grad[3 + i]]
        needs_x = ctx.needs_input_grad[2]
        sizes = [out.shape[0] for _, out in ctx.parts]

        def back(item: tuple[tuple[torch.Tensor, torch.Tensor], torch.Tensor]) -> tuple[torch.Tensor | None, ...]:
            (leaf, out), g = item
            inputs = ([leaf] if needs_x else []) + [ctx.params[i] for i in wanted]
            return torch.autograd.grad(out, inputs, g, allow_unused=True)

        results = _map_one_thread(back, list(zip(ctx.parts, grad.split(sizes))))
        ctx.parts = None
        grad_x = torch.cat([r[0] for r in results]) if needs_x else None
        grads: list[torch.Tensor | None] = [None] * len(ctx.params)
        for k, i in enumerate(wanted):
            for r in results:
                g = r[k + int(needs_x)]
                if g is not None:
                    grads[i] = g if grads[i] is None else grads[i] + g
        return (None, None, grad_x, *grads)


def _sharded_forward(self: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """The batch split over ``torch.get_num_threads()`` threads for float32 CPU training, with a gradient at
    least two samples per part (without one, at least one); the module's own forward otherwise (one thread, too
    few samples, another device, autocast, eval, or ``OMP_WAIT_POLICY=ACTIVE``: there the caller's spinning OpenMP
    threads take the cores from the parts, and a 2-thread fine-tuning step took 0.41-0.50 s split against
    0.33-0.38 s whole).

    Why two with a gradient: PyTorch picks the backward kernel of each convolution itself, and for a batch of one
    with few channels (``N*C*D*H`` up to 20480) it takes its im2col kernel, not oneDNN. The CNN's 8-channel layers
    at 32³ then took 65 ms for one crop against 10 ms for two, and a 2-thread step of BasicUNet fs 8 on 2 crops
    took 0.27-0.30 s split in two parts of one against 0.12 s whole (the default path: 0.20 s)."""
    per_part = 2 if torch.is_grad_enabled() else 1
    parts = min(torch.get_num_threads(), x.shape[0] // per_part)
    if (parts < 2 or not self.training or not cpu_float32(x)
            or os.environ.get("OMP_WAIT_POLICY", "").upper() == "ACTIVE"):
        return type(self).forward(self, x)
    if not torch.is_grad_enabled():
        def run(part: torch.Tensor) -> torch.Tensor:
            with torch.no_grad():
                return type(self).forward(self, part)

        return torch.cat(_map_one_thread(run, list(x.tensor_split(parts))))
    params = [p for p in self.parameters() if p.requires_grad]
    return _ThreadShards.apply(self, parts, x, *params)


@contextlib.contextmanager
def thread_shards(modules: list[tuple[nn.Module, list[nn.Module]]]) -> Iterator[int]:
    """While active, each ``(module, what its forward runs)`` of ``modules`` whose parts are batch-separable splits
    its training batch across threads (see the module docstring); yields how many were switched. Restored on exit."""
    switched = [m for m, used in modules if batch_separable(used) and "forward" not in vars(m)]
    for module in switched:
        module.forward = types.MethodType(_sharded_forward, module)
    try:
        yield len(switched)
    finally:
        for module in switched:
            del module.forward
