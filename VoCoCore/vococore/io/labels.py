"""Label ids with names and colours: what a labelmap's values mean, carried into files and Slicer segments."""

from __future__ import annotations

import colorsys
from dataclasses import dataclass


@dataclass(frozen=True)
class LabelInfo:
    """One label value of a labelmap, with its segment name and RGB colour (each 0..1)."""

    value: int
    name: str
    color: tuple[float, float, float]


def default_color(value: int) -> tuple[float, float, float]:
    """A distinct, stable colour for a label value (golden-angle hues), for labels given without colour."""
    hue = (value * 0.618033988749895) % 1.0
    return tuple(round(c, 4) for c in colorsys.hsv_to_rgb(hue, 0.65, 0.95))  # type: ignore[return-value]


def make_labels(names: dict[int, str], colors: dict[int, tuple[float, float, float]] | None = None) -> list[LabelInfo]:
    """Build a sorted label list from ``{value: name}``, filling missing colours with :func:`default_color`."""
    colors = colors or {}
    return [LabelInfo(int(v), str(n), tuple(colors.get(v, default_color(int(v))))) for v, n in sorted(names.items())
            if int(v) != 0]
