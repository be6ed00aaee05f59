"""Which torch device a run uses: shared by training and inference."""

from __future__ import annotations

import torch

from vococore.utils.errors import VoCoError


def pick_device(device: str = "auto", local_rank: int = 0) -> torch.device:
    """``auto``: this rank's GPU when CUDA is available, else CPU; or an explicit ``cpu``/``cuda``/``cuda:N``
    (asking for CUDA without one is a clear error)."""
    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    elif device.startswith("cuda") and not torch.cuda.is_available():
        raise VoCoError(f"device {device!r} requested but this torch has no usable CUDA device; use --device cpu")
    dev = torch.device(device)
    if dev.type == "cuda" and dev.index is None:
        dev = torch.device("cuda", local_rank)
    return dev
