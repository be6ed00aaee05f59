"""Weights-only torch loading with one-line errors that say what was found (never torch's unpickling advice)."""

from __future__ import annotations

import os
from typing import Any

from vococore.utils.errors import VoCoError, file_kind, torch_load_problem


def load_weights_only(path: str | os.PathLike, what: str, map_location: Any = "cpu") -> Any:
    """``torch.load(weights_only=True)``; a model package, a pickle asking for code, or a damaged file is refused
    as a VoCoError naming ``path`` and saying it was expected to be ``what`` (e.g. "a pretraining checkpoint")."""
    import torch

    kind = file_kind(path)
    if kind == "package":
        raise VoCoError(f"is a model package (safetensors, .vocomodel), not {what}", path)
    try:
        return torch.load(path, map_location=map_location, weights_only=True)
    except Exception as exc:  # UnpicklingError, RuntimeError, EOFError... for foreign or damaged files
        problem = torch_load_problem(exc, pickled=kind == "pickle")
        raise VoCoError(f"expected {what}; vococore {problem}" if problem.startswith("refuses") else
                        f"expected {what}; the file is {problem}", path) from None
