"""The training loop shared by pretraining and fine-tuning: AdamW (amsgrad) with linear warmup + half-cosine
per step, AMP, gradient clipping, progress/JSON lines/TensorBoard, atomic checkpoints, exact ``resume`` and a
graceful stop on SIGTERM/SIGINT that writes a checkpoint first.

The task-specific part is ``step_fn(model, batch) -> {"total": loss, part: value, ...}``; the loop does the rest.
"""

from __future__ import annotations

import collections
import contextlib
import json
import logging
import math
import os
import random
import signal
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from vococore.networks.fast_training import fast_training
from vococore.utils.errors import VoCoError
from vococore.utils.progress import Progress
from vococore.training.checkpoint import (build_checkpoint, capture_rng_state, load_checkpoint,
                                          restore_training_state, save_checkpoint)
from vococore.training.distributed import DistInfo, any_rank, gather_objects, unwrap_model

log = logging.getLogger(__name__)
AMP_MODES = ("auto", "none", "bf16", "fp16")
StepFn = Callable[[torch.nn.Module, Any], dict[str, torch.Tensor]]


@dataclass
class LoopConfig:
    """Optimisation and bookkeeping of one run (steps are optimizer steps; lr is the peak after warmup)."""

    steps: int = 1000
    lr: float = 1e-4
    weight_decay: float = 0.01
    warmup_steps: int = 0
    amp: str = "auto"  # auto: bf16 (or fp16 + GradScaler) on GPU, none on CPU; bf16 on CPU is allowed
    grad_clip: float | None = None  # max global grad norm; None: no clipping
    checkpoint_every: int = 100  # write checkpoints/last.pt every this many steps (and at the end)
    keep_every: int = 0  # also keep checkpoints/step_XXXXXXXX.pt every this many steps (0: never)
    fast_kernels: bool = True  # forward under vococore.networks.fast_training and a fused AdamW (same numbers)

    def __post_init__(self) -> None:
        if self.amp not in AMP_MODES:
            raise VoCoError(f"amp must be one of {AMP_MODES}, got {self.amp!r}")
        if self.steps < 1 or self.checkpoint_every < 1:
            raise VoCoError("steps and checkpoint_every must be at least 1")


@dataclass
class TrainResult:
    """What a run reached: the last step, whether it stopped early, the last checkpoint, recent metrics."""

    step: int
    start_step: int
    stopped: bool
    checkpoint: Path | None
    history: list[dict[str, float]] = field(default_factory=list)
    data_wait_s: float = 0.0
    step_time_s: float = 0.0


def seed_everything(seed: int, deterministic: bool = False) -> None:
    """Seed python, numpy and torch; ``deterministic`` also asks torch for deterministic kernels."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)
    if deterministic:
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
        # What torch.use_deterministic_algorithms(True, warn_only=True) sets for the kernels. The public call also
        # sets torch.compile's inductor flag and imports torch._inductor for it, about 0.7 s of CPU at each
        # pretraining process's start (a 2-step `vococore pretrain`: 6.7 against 7.4 s, 7 pairs, 2-core VM);
        # vococore compiles nothing.
        # Pinned in Testing/Python/test_library_internals.py.
        torch._C._set_deterministic_algorithms(True, warn_only=True)
        torch.backends.cudnn.benchmark = False


def warmup_cosine(optimizer: torch.optim.Optimizer, warmup_steps: int,
                  total_steps: int) -> torch.optim.lr_scheduler.LambdaLR:
    """Linear warmup from 0 over ``warmup_steps``, then half a cosine down to 0 at ``total_steps`` (per step)."""
    def factor(step: int) -> float:
        if step < warmup_steps:
            return step / max(1, warmup_steps)
        progress = (step - warmup_steps) / max(1, total_steps - warmup_steps)
        return max(0.0, 0.5 * (1.0 + math.cos(math.pi * progress)))

    return torch.optim.lr_scheduler.LambdaLR(optimizer, factor)


def make_optimizer(model: torch.nn.Module, lr: float, weight_decay: float,
                   fused: bool = False) -> torch.optim.AdamW:
    """AdamW with amsgrad (official recipe) over the parameters that take gradients (not the EMA teacher).

    ``fused``: PyTorch's one-kernel AdamW where the parameters' device has it (CPU from PyTorch 2.4, CUDA), else
    the default. Same update to float32 rounding (2e-8 relative in the parameters after a step); on this project's
    CPU one step of the small CNNs' optimizer took 0.8 / 2.2 ms fused against 4.3 / 8.7 ms (1-thread, fs 4 / 8)."""
    params = [p for p in model.parameters() if p.requires_grad]
    if fused and params:
        try:
            return torch.optim.AdamW(params, lr=lr, weight_decay=weight_decay, amsgrad=True, fused=True)
        except RuntimeError:  # this PyTorch has no fused kernel for the parameters' device or dtype
            pass
    return torch.optim.AdamW(params, lr=lr, weight_decay=weight_decay, amsgrad=True)


def autocast_dtype(amp: str, device: torch.device) -> torch.dtype | None:
    """The autocast dtype for ``amp`` on ``device`` (None: full fp32)."""
    if amp == "none" or (amp == "auto" and device.type != "cuda"):
        return None
    if amp == "auto":
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    if amp == "fp16" and device.type != "cuda":
        raise VoCoError("amp fp16 needs a CUDA GPU; use bf16 or none on CPU")
    return torch.bfloat16 if amp == "bf16" else torch.float16


def to_device(batch: Any, device: torch.device) -> Any:
    """Move every tensor of a (nested) batch to ``device``."""
    if isinstance(batch, torch.Tensor):
        return batch.to(device, non_blocking=True)
    if isinstance(batch, dict):
        return {k: to_device(v, device) for k, v in batch.items()}
    if isinstance(batch, (list, tuple)):
        return type(batch)(to_device(v, device) for v in batch)
    return batch


class StopRequest:
    """Turns the first SIGTERM/SIGINT into a flag checked between steps (a second one interrupts at once)."""

    def __init__(self) -> None:
        self.requested = False
        self._previous: dict[int, Any] = {}

    def _handle(self, signum: int, frame: Any) -> None:
        self.requested = True
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)
        log.warning("received %s: stopping after this step and writing a checkpoint", signal.Signals(signum).name)

    def __enter__(self) -> "StopRequest":
        for sig in (signal.SIGTERM, signal.SIGINT):
            try:
                self._previous[sig] = signal.signal(sig, self._handle)
            except ValueError:  # not the main thread: signals cannot be caught here
                pass
        return self

    def __exit__(self, *exc: object) -> None:
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)


def _tensorboard(output_dir: Path, enabled: bool) -> Any:
    if not enabled:
        return None
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError:
        return None
    return SummaryWriter(str(output_dir / "tensorboard"))


class Trainer:
    """Runs ``step_fn`` for ``config.steps`` optimizer steps; see :meth:`fit`."""

    def __init__(self, model: torch.nn.Module, step_fn: StepFn, config: LoopConfig, output_dir: str | os.PathLike,
                 info: DistInfo, backbone: Any, recipe: Any = None, run_config: Any = None,
                 kind: str = "pretrain", stage: str = "pretrain", json_progress: bool = False,
                 tensorboard: bool = True) -> None:
        self.model, self.step_fn, self.config, self.info = model, step_fn, config, info
        self.output_dir = Path(output_dir)
        self.backbone, self.recipe, self.run_config = backbone, recipe, run_config
        self.kind, self.stage = kind, stage
        self.json_progress, self.use_tensorboard = json_progress, tensorboard
        self.optimizer = make_optimizer(unwrap_model(model), config.lr, config.weight_decay,
                                        fused=config.fast_kernels)
        self.scheduler = warmup_cosine(self.optimizer, config.warmup_steps, config.steps)
        self.dtype = autocast_dtype(config.amp, info.device)
        self.scaler = torch.amp.GradScaler("cuda", enabled=self.dtype == torch.float16)
        self.step = 0
        self.last_lr = 0.0

    @property
    def checkpoint_dir(self) -> Path:
        return self.output_dir / "checkpoints"

    def resume(self, path: str | os.PathLike | None = None) -> int:
        """Restore everything from ``path`` (default: ``checkpoints/last.pt``); returns the step reached."""
        path = Path(path) if path is not None else self.checkpoint_dir / "last.pt"
        ckpt = load_checkpoint(path, map_location=self.info.device)
        from vococore.utils.config import to_dict

        mine = to_dict(self.backbone)
        if ckpt["backbone"] != mine:
            raise VoCoError(f"checkpoint backbone {ckpt['backbone']} differs from this run's {mine}", path)
        self.step = restore_training_state(ckpt, unwrap_model(self.model), self.optimizer, self.scheduler,
                                           self.scaler, rank=self.info.rank)
        for group in self.optimizer.param_groups:  # this run's kernel choice, not the saved run's
            group["fused"], group["foreach"] = self.optimizer.defaults["fused"], self.optimizer.defaults["foreach"]
        return self.step

    def save(self, data_state: dict[str, Any] | None = None) -> Path | None:
        """Write ``checkpoints/last.pt`` (and a kept copy when due) from rank 0; all ranks give their RNG."""
        rng = gather_objects(capture_rng_state(), self.info)
        if not self.info.is_main:
            return None
        ckpt = build_checkpoint(self.step, unwrap_model(self.model), kind=self.kind, backbone=self.backbone,
                                recipe=self.recipe, optimizer=self.optimizer, scheduler=self.scheduler,
                                scaler=self.scaler,
                                rng=rng if self.info.distributed else rng[0], data_state=data_state,
                                config=self.run_config)
        last = save_checkpoint(self.checkpoint_dir / "last.pt", ckpt)
        if self.config.keep_every and self.step % self.config.keep_every == 0:
            save_checkpoint(self.checkpoint_dir / f"step_{self.step:08d}.pt", ckpt)
        return last

    def train_step(self, batch: Any) -> dict[str, float]:
        """One optimizer step on ``batch``; returns the loss parts as floats."""
        self.model.train()
        batch = to_device(batch, self.info.device)
        # The kernels stay switched on through the backward pass: gradient checkpointing (the Swin's default)
        # recomputes each block's forward there, and that must run the same kernels as the forward did.
        kernels = fast_training(self.model) if self.config.fast_kernels else contextlib.nullcontext()
        with kernels:
            with torch.autocast(self.info.device.type, dtype=self.dtype or torch.float32,
                                enabled=self.dtype is not None):
                parts = self.step_fn(self.model, batch)
            total = parts["total"]
            if not torch.isfinite(total.detach()).all():
                raise VoCoError(f"the loss became {total.item()} at step {self.step + 1}; lower lr, check the data "
                                "or use amp bf16/none (last checkpoint kept)")
            self.optimizer.zero_grad(set_to_none=True)
            self.scaler.scale(total.float()).backward()
        if self.config.grad_clip:
            self.scaler.unscale_(self.optimizer)
            torch.nn.utils.clip_grad_norm_(self.model.parameters(), self.config.grad_clip)
        self.scaler.step(self.optimizer)
        self.scaler.update()
        self.last_lr = float(self.optimizer.param_groups[0]["lr"])  # the lr this step used
        self.scheduler.step()
        self.step += 1
        return {k: float(v.detach().float().mean().item()) for k, v in parts.items()}

    def fit(self, batches: Iterable[Any], stop_after: int | None = None,
            data_state: Callable[[int], dict[str, Any]] | None = None,
            describe: Callable[[Any], Any] | None = None, stop: StopRequest | None = None) -> TrainResult:
        """Train on ``batches`` (one per step, starting at ``self.step``) until ``config.steps``, a stop signal,
        or ``stop_after`` steps in this call; checkpoints on the way and at the end. ``describe(batch)`` (e.g. the
        volumes it holds) is gathered from every rank and written as ``"volumes"`` in ``metrics.jsonl``, so one
        can audit what each rank trained on. ``stop``: a caller's StopRequest already listening (one that also
        covers work between calls, such as validation); None listens during this call only."""
        cfg, main = self.config, self.info.is_main
        start, end = self.step, cfg.steps if stop_after is None else min(cfg.steps, self.step + stop_after)
        history: collections.deque = collections.deque(maxlen=10000)
        if main:
            self.output_dir.mkdir(parents=True, exist_ok=True)
        writer = _tensorboard(self.output_dir, self.use_tensorboard and main)
        metrics_file = open(self.output_dir / "metrics.jsonl", "a") if main else None
        progress = Progress(self.stage, cfg.steps, initial=start, json_lines=self.json_progress and main, enabled=main)
        recent: collections.deque = collections.deque(maxlen=20)
        wait_s = step_s = 0.0
        stopped, last = False, None
        state = (lambda s: data_state(s) if data_state else {"next_step": s})
        try:
            with contextlib.nullcontext(stop) if stop is not None else StopRequest() as stop:
                iterator = iter(batches)
                while self.step < end:
                    t0 = time.perf_counter()
                    try:
                        batch = next(iterator)
                    except StopIteration:
                        raise VoCoError(f"the data ran out at step {self.step} of {end}") from None
                    except RuntimeError:
                        if not stop.requested:  # Ctrl-C also reaches DataLoader workers, which then exit
                            raise
                        stopped = True
                        break
                    t1 = time.perf_counter()
                    parts = self.train_step(batch)
                    t2 = time.perf_counter()
                    wait_s, step_s = wait_s + (t1 - t0), step_s + (t2 - t0)
                    recent.append(t2 - t0)
                    record = {"step": self.step, **parts, "lr": self.last_lr,
                              "steps_per_s": len(recent) / sum(recent), "data_wait": wait_s / step_s}
                    history.append(record)
                    seen = {"volumes": gather_objects(describe(batch), self.info)} if describe else {}
                    if main:
                        metrics_file.write(json.dumps({**record, **seen}) + "\n")
                        metrics_file.flush()
                        progress.update(self.step, **{k: v for k, v in record.items() if k != "step"})
                        if writer is not None:
                            for k, v in record.items():
                                if k != "step":
                                    writer.add_scalar(f"{self.stage}/{k}", v, self.step)
                    if any_rank(stop.requested, self.info):
                        stopped = True
                        break
                    if self.step % cfg.checkpoint_every == 0 and self.step < end:
                        last = self.save(state(self.step))
            last = self.save(state(self.step))
        finally:
            progress.close(**({k: v for k, v in history[-1].items() if k != "step"} if history else {}))
            if writer is not None:
                writer.close()
            if metrics_file is not None:
                metrics_file.close()
        return TrainResult(step=self.step, start_step=start, stopped=stopped, checkpoint=last,
                           history=list(history), data_wait_s=wait_s, step_time_s=step_s)
