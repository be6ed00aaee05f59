"""Progress reporting: a tqdm bar for people (stderr) and, when asked, JSON lines for programs (stdout).

Each JSON line is one object: ``{"event": "start"|"progress"|"end", "stage": str, "step": int, "total": int,
"elapsed_s": float, "eta_s": float|null, "metrics": {name: number}}``. The Slicer runner parses these.
"""

from __future__ import annotations

import json
import sys
import time
from typing import Any, TextIO


class Progress:
    """Reports the steps of one stage (e.g. ``pretrain``) to a tqdm bar and optionally to JSON lines."""

    def __init__(self, stage: str, total: int, initial: int = 0, json_lines: bool = False,
                 stream: TextIO | None = None, enabled: bool = True) -> None:
        from tqdm import tqdm

        self.stage, self.total, self.step = stage, int(total), int(initial)
        self.json_lines = json_lines
        self.stream = stream or sys.stdout
        self._start = time.monotonic()
        self._initial = int(initial)
        self._bar = tqdm(total=total, initial=initial, desc=stage, disable=not enabled or None,
                         dynamic_ncols=True, file=sys.stderr)
        self._emit("start", {})

    def update(self, step: int | None = None, **metrics: float) -> None:
        """Advance to ``step`` (default: one more) and report ``metrics`` (loss parts, Dice, steps/s...)."""
        new = self.step + 1 if step is None else int(step)
        self._bar.update(new - self.step)
        self.step = new
        if metrics:
            self._bar.set_postfix({k: _short(v) for k, v in metrics.items()}, refresh=False)
        self._emit("progress", metrics)

    def eta_s(self) -> float | None:
        """Seconds left at the mean pace of this run so far (None before the first step)."""
        done = self.step - self._initial
        if done <= 0:
            return None
        return (time.monotonic() - self._start) / done * max(self.total - self.step, 0)

    def close(self, **metrics: float) -> None:
        """Finish the bar and emit the ``end`` event."""
        self._bar.close()
        self._emit("end", metrics)

    def __enter__(self) -> "Progress":
        return self

    def __exit__(self, *exc: object) -> None:
        self._bar.close()

    def _emit(self, event: str, metrics: dict[str, Any]) -> None:
        if not self.json_lines:
            return
        eta = self.eta_s()
        record = {"event": event, "stage": self.stage, "step": self.step, "total": self.total,
                  "elapsed_s": round(time.monotonic() - self._start, 3),
                  "eta_s": None if eta is None else round(eta, 1),
                  "metrics": {k: float(v) for k, v in metrics.items()}}
        self.stream.write(json.dumps(record) + "\n")
        self.stream.flush()


def _short(value: float) -> str:
    return f"{value:.4g}" if isinstance(value, float) else str(value)
