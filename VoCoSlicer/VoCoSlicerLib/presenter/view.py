"""What a front end shows: the state it edits (:class:`ModuleState`) and what the presenter says about it
(:class:`ViewState`: each action's enabled flag, tooltip reason and text, and every label)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True)
class Action:
    """A button: whether it can be pressed, why not (its tooltip), and its text (Apply becomes Cancel)."""

    enabled: bool
    reason: str = ""
    text: str = ""


@dataclass(frozen=True)
class ViewState:
    """Everything to render; ``progress`` is 0..1 while a run goes, else None; ``running`` its kind; ``curves``
    the latest training run's ``{"loss": [(step, value)], "dice": [...]}``."""

    actions: dict[str, Action]
    labels: dict[str, str]
    progress: float | None = None
    running: str | None = None
    models: list[tuple[str, str]] = field(default_factory=list)
    curves: dict[str, list[tuple[int, float]]] = field(default_factory=dict)


@dataclass
class ModuleState:
    """The module's inputs, field for field those of Slicer's parameter node (``VoCoSlicerParameterNode``);
    nodes are MRML nodes or None, paths are strings or ``pathlib.Path`` (empty: not set)."""

    inputVolume: Any = None
    model: str = "VoComni_B"
    device: str = "auto"
    recipe: str = "v2"
    showGrid: bool = False
    targetPoint: Any = None
    positionCheckpoint: Any = ""
    pretrainData: Any = ""
    pretrainOutput: Any = ""
    pretrainSteps: int = 1000
    finetuneVolume: Any = None
    finetuneSegmentation: Any = None
    finetuneWeights: Any = ""
    finetuneOutput: Any = ""
    finetuneNetwork: str = "swin"
    finetuneSteps: int = 500
    resume: bool = False


def path_text(path: Any) -> str:
    """A path field as text: empty when not set (an empty path line edit reads back as '.', never shown)."""
    text = str(path or "")
    return "" if text in (".", "") else text
