"""The presenter: the module's state, its running job and the scene events, combining the three sections
(segment, see what VoCo sees, train). See the package docstring for how a front end drives it."""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any

from VoCoSlicerLib.presenter.curves import DICE_METRICS, LOSS_METRICS, Curves
from VoCoSlicerLib.presenter.see import SeeSection
from VoCoSlicerLib.presenter.segment import SegmentSection
from VoCoSlicerLib.presenter.train import TAB_FINETUNE, TAB_PRETRAIN, TrainSection
from VoCoSlicerLib.presenter.view import Action, ViewState
from VoCoSlicerLib.runner import ProgressEvent, RunState

__all__ = ["Presenter", "TAB_FINETUNE", "TAB_PRETRAIN"]


class Presenter(SegmentSection, SeeSection, TrainSection):
    """Owns every decision of the module's GUI; front ends render :meth:`view` and forward user events.

    ``probe_gpu`` returns the GPU facts of :func:`VoCoSlicerLib.device.gpu_facts`; by default it runs them in a
    child process (no CUDA context in the front end's process), started at once on a thread so that Apply never
    waits for it. ``runs_dir`` is the per-user folder for training outputs the user did not choose.
    """

    def __init__(self, state: Any, logic: Any, on_change: Callable[[], None] | None = None,
                 on_error: Callable[[str, str], None] | None = None,
                 probe_gpu: Callable[[], dict] | None = None, runs_dir: Any = None) -> None:
        from VoCoSlicerLib import device

        self.state, self.logic = state, logic
        self.on_change, self.on_error = on_change, on_error
        self.tab = TAB_PRETRAIN
        self.running: str | None = None  # "segment", "pretrain" or "finetune" while a run goes
        self.progress: float | None = None
        self.texts: dict[str, str] = {"progress": "", "loss": "-", "dice": "-", "status": "", "grid": ""}
        self.curves = Curves()  # loss and Dice per step of the latest training run
        self.gpu: dict | None = None
        self._settings_cache: dict[Any, dict] = {}
        self._grid_drawn: tuple[Any, str] | None = None  # (volume node, recipe) of the grid on screen
        self._runs_dir = runs_dir
        self._outputs: dict[str, str] = {}  # per-user output folder of the next run without a chosen one
        self.logic.on_progress = self._on_progress
        probe = probe_gpu or (lambda: device.probe_gpu(logic.python))
        self._probe = threading.Thread(target=self._run_probe, args=(probe,), daemon=True)
        self._probe.start()

    def _run_probe(self, probe: Callable[[], dict]) -> None:
        self.gpu = probe()

    def wait_for_gpu_check(self, timeout_s: float = 120.0) -> dict | None:
        """Block until the GPU facts are known (scripts, tests and the benchmark; the GUI never calls it)."""
        self._probe.join(timeout_s)
        return self.gpu

    # --- what to show ---------------------------------------------------------------------------------------------
    def view(self) -> ViewState:
        """Every action and label for the current state."""
        actions: dict[str, Action] = {"import_model": Action(True, "Add a .vocomodel package (made by fine-tuning "
                                                                   "or vococore) to the model list.")}
        labels: dict[str, str] = dict(self.texts)
        actions["cancel"] = Action(self.running is not None, f"Stop the {self.running} run." if self.running else
                                   "Nothing is running.", "Cancel")
        self._segment_view(actions, labels)
        self._see_view(actions, labels)
        self._train_view(actions, labels)
        return ViewState(actions=actions, labels=labels, progress=self.progress, running=self.running,
                         models=[(e.id, e.title) for e in self.logic.registry.entries()],
                         curves=self.curves.as_lists())

    # --- events ---------------------------------------------------------------------------------------------------
    def state_changed(self) -> None:
        """Call after any state field changed: the grid follows the input volume and the recipe."""
        self._follow_grid()

    def cancel(self) -> None:
        """Stop the current run, whatever it is (the whole process tree, within 5 s)."""
        self.logic.cancel()
        self.poll()

    def poll(self) -> bool:
        """Deliver the running job's progress and end (call from a timer); True while it still runs."""
        self._poll_grid()
        process = self.logic.process
        return bool(process is not None and process.poll()) or self._grid_job is not None

    def scene_about_to_close(self) -> None:
        """Closing the scene cancels a run whose result goes into the scene (segmentation); training runs
        depend only on their exported files and keep going."""
        process = self.logic.process
        if process is not None and process.state is RunState.RUNNING and process.depends_on_scene:
            self.cancel()
        self._grid_drawn = self._grid_job = None
        self.texts["grid"] = ""

    def scene_closed(self, state: Any) -> None:
        """The new scene's state (a fresh parameter node)."""
        self.state = state
        self._settings_cache.clear()

    # --- runs -----------------------------------------------------------------------------------------------------
    def _run_started(self, kind: str) -> None:
        self.running, self.progress = kind, 0.0
        self.texts.update(progress=f"{kind}: starting", status="", loss="-", dice="-")
        self.curves = Curves()
        self._changed()

    def _run_finished(self, state: RunState) -> None:
        kind, self.running, self.progress = self.running, None, None
        self.texts["status"] = f"{kind} {state.value}"
        self.texts["progress"] = ""
        if state is RunState.FAILED and self.on_error:
            self.on_error(f"VoCo {kind} failed.", self.logic.process.error_message())
        self._changed()

    def _on_progress(self, event: ProgressEvent) -> None:
        self.progress = event.fraction
        self.texts["progress"] = event.describe()
        if any(name in event.metrics for name in LOSS_METRICS):
            self.texts["loss"] = event.metric_text(*LOSS_METRICS)
        if any(name in event.metrics for name in DICE_METRICS):
            self.texts["dice"] = event.metric_text(*DICE_METRICS)
        self.curves.record(event)
        self._changed()

    def _changed(self) -> None:
        if self.on_change:
            self.on_change()

    def _busy(self) -> str:
        """Why nothing else can start now (empty when no run goes)."""
        return f"A {self.running} run is going; cancel it or wait until it ends." if self.running else ""
