"""The running training's curves: loss and Dice per training step, from the run's progress events, so a front end
can draw them (the browser app does; the labels show only the latest values)."""

from __future__ import annotations

from typing import Any

LOSS_METRICS = ("total", "loss")  # the combined loss of pretraining, then fine-tuning's
DICE_METRICS = ("mean_dice",)


def first_metric(metrics: dict[str, float], names: tuple[str, ...]) -> str | None:
    """The first of ``names`` present in ``metrics``, or None."""
    return next((name for name in names if name in metrics), None)


class Curves:
    """Loss and Dice points ``(training step, value)`` of one run, in step order, one point per step.

    Validation reports its Dice at the end of its own stage, whose step counts cases; the point is put at the
    training step reached when it ran."""

    def __init__(self) -> None:
        self.points: dict[str, dict[int, float]] = {"loss": {}, "dice": {}}
        self._train_step = 0

    def record(self, event: Any) -> None:
        """Take the loss of a training step and the Dice of a validation from one progress event."""
        loss = first_metric(event.metrics, LOSS_METRICS)
        if loss is not None and event.event == "progress":
            self._train_step = event.step
            self.points["loss"][event.step] = float(event.metrics[loss])
        dice = first_metric(event.metrics, DICE_METRICS)
        if dice is not None:
            self.points["dice"][self._train_step] = float(event.metrics[dice])

    def as_lists(self) -> dict[str, list[tuple[int, float]]]:
        """``{"loss": [(step, value), ...], "dice": [...]}`` sorted by step."""
        return {name: sorted(values.items()) for name, values in self.points.items()}
