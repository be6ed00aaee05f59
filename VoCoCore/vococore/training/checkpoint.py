"""Training checkpoints that resume a run exactly: model, optimizer, scaler, scheduler, step, RNG states, data
state and the resolved config, written atomically and read back with ``weights_only=True`` (no unpickling).

Layout of a checkpoint file (a plain dict of tensors, numbers, strings, lists and dicts)::

    {"format": "vococore-checkpoint", "version": 1, "kind": "pretrain"|"finetune"|..., "step": int,
     "backbone": {BackboneSpec fields, incl. legacy_merging}, "recipe": name | {Recipe fields} | None,
     "model": state_dict,
     "optimizer": ..., "scheduler": ..., "scaler": ..., "rng": {...} | [{...} per rank],
     "data_state": {...}, "config": {resolved config}, "extra": {...}}
"""

from __future__ import annotations

import dataclasses
import os
import random
from pathlib import Path
from typing import Any

import numpy as np
import torch

from vococore.utils.atomic import save_torch
from vococore.utils.errors import VoCoError

FORMAT = "vococore-checkpoint"
VERSION = 1


def capture_rng_state() -> dict[str, Any]:
    """The torch (CPU and CUDA), numpy and python RNG states, as weights_only-loadable data."""
    kind, keys, pos, has_gauss, gauss = np.random.get_state()
    py_version, py_state, py_gauss = random.getstate()
    state: dict[str, Any] = {
        "torch": torch.get_rng_state(),
        "numpy": {"kind": str(kind), "keys": torch.from_numpy(np.asarray(keys, dtype=np.int64)), "pos": int(pos),
                  "has_gauss": int(has_gauss), "gauss": float(gauss)},
        "python": {"version": int(py_version), "state": [int(v) for v in py_state], "gauss": py_gauss},
    }
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def restore_rng_state(state: dict[str, Any]) -> None:
    """Put back the RNG states of :func:`capture_rng_state` so the next random draws repeat exactly."""
    torch.set_rng_state(torch.as_tensor(state["torch"], dtype=torch.uint8))
    npy = state["numpy"]
    np.random.set_state((npy["kind"], np.asarray(npy["keys"], dtype=np.uint32), npy["pos"], npy["has_gauss"],
                         npy["gauss"]))
    py = state["python"]
    random.setstate((py["version"], tuple(py["state"]), py["gauss"]))
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all([torch.as_tensor(s, dtype=torch.uint8) for s in state["cuda"]])


def _plain(obj: Any) -> Any:
    """Dataclasses and paths as plain data so that weights_only loading accepts them."""
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        from vococore.utils.config import to_dict

        return to_dict(obj)
    if isinstance(obj, os.PathLike):
        return os.fspath(obj)
    return obj


def build_checkpoint(step: int, model: torch.nn.Module | dict[str, torch.Tensor], *, kind: str = "pretrain",
                     backbone: Any = None, recipe: Any = None, optimizer: torch.optim.Optimizer | None = None,
                     scheduler: Any = None, scaler: Any = None, rng: dict | list | None = None,
                     data_state: dict[str, Any] | None = None, config: Any = None,
                     extra: dict[str, Any] | None = None) -> dict[str, Any]:
    """Assemble the checkpoint dict (see module docstring); ``rng`` defaults to this process's RNG state.

    ``backbone`` is the BackboneSpec (or its dict); it is required so every checkpoint records
    ``legacy_merging``. ``recipe`` (a VoCo Recipe, its dict or name) lets ``load_voco_model`` rebuild the model.
    """
    if backbone is None:
        raise ValueError("a checkpoint must record the backbone spec (incl. legacy_merging)")
    state = model.state_dict() if isinstance(model, torch.nn.Module) else dict(model)
    return {
        "format": FORMAT, "version": VERSION, "kind": kind, "step": int(step),
        "backbone": _plain(backbone),
        "recipe": _plain(recipe),
        "model": {k: v.detach().cpu() for k, v in state.items()},
        "optimizer": None if optimizer is None else optimizer.state_dict(),
        "scheduler": None if scheduler is None else scheduler.state_dict(),
        "scaler": None if scaler is None or not scaler.is_enabled() else scaler.state_dict(),
        "rng": capture_rng_state() if rng is None else rng,
        "data_state": dict(data_state or {}),
        "config": _plain(config),
        "extra": dict(extra or {}),
    }


def save_checkpoint(path: str | os.PathLike, checkpoint: dict[str, Any]) -> Path:
    """Write ``checkpoint`` atomically (temp file + rename): a crash never leaves a truncated file."""
    if checkpoint.get("format") != FORMAT:
        raise ValueError("save_checkpoint expects a dict from build_checkpoint")
    return save_torch(checkpoint, path, overwrite=True)


def load_checkpoint(path: str | os.PathLike, map_location: str | torch.device = "cpu") -> dict[str, Any]:
    """Read a checkpoint with ``weights_only=True``; a missing, damaged or foreign file raises VoCoError."""
    path = Path(path)
    if not path.is_file():
        raise VoCoError("checkpoint not found", path)
    from vococore.utils.torchload import load_weights_only

    ckpt = load_weights_only(path, "a vococore training checkpoint", map_location)
    if not isinstance(ckpt, dict) or ckpt.get("format") != FORMAT:
        raise VoCoError("not a vococore training checkpoint (no 'format: vococore-checkpoint' entry); "
                        "released weights are loaded with the model loader instead", path)
    if int(ckpt.get("version", 0)) > VERSION:
        raise VoCoError(f"checkpoint version {ckpt['version']} is newer than this vococore ({VERSION})", path)
    return ckpt


def restore_training_state(ckpt: dict[str, Any], model: torch.nn.Module,
                           optimizer: torch.optim.Optimizer | None = None, scheduler: Any = None,
                           scaler: Any = None, rank: int = 0, restore_rng: bool = True) -> int:
    """Load model/optimizer/scheduler/scaler state and RNG states from ``ckpt``; returns the step reached.

    ``rng`` may be one state or a list with one per rank (distributed runs); ``rank`` picks this process's.
    """
    model.load_state_dict(ckpt["model"], strict=True)
    if optimizer is not None and ckpt.get("optimizer") is not None:
        optimizer.load_state_dict(ckpt["optimizer"])
    if scheduler is not None and ckpt.get("scheduler") is not None:
        scheduler.load_state_dict(ckpt["scheduler"])
    if scaler is not None and ckpt.get("scaler") is not None and scaler.is_enabled():
        scaler.load_state_dict(ckpt["scaler"])
    if restore_rng and ckpt.get("rng") is not None:
        rng = ckpt["rng"]
        if isinstance(rng, list):
            if rank >= len(rng):
                raise VoCoError(f"checkpoint holds RNG states for {len(rng)} ranks; cannot resume rank {rank} "
                                "exactly (resume with the same number of processes)")
            rng = rng[rank]
        restore_rng_state(rng)
    return int(ckpt["step"])


def checkpoint_backbone(ckpt: dict[str, Any]) -> Any:
    """The BackboneSpec the checkpoint was trained with (including ``legacy_merging``)."""
    from vococore.utils.config import from_dict
    from vococore.networks.backbones import BackboneSpec

    return from_dict(BackboneSpec, ckpt["backbone"], where="checkpoint backbone")
