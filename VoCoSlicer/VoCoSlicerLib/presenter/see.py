"""The "See what VoCo sees" section of the presenter: the base-crop grid that follows the input volume and the
recipe, the target point list created on demand, and the position prediction with the model it uses."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from VoCoSlicerLib.presenter.view import Action, path_text

TARGET_LIST_NAME = "VoCo target"


class SeeSection:
    """Mixed into :class:`~VoCoSlicerLib.presenter.Presenter`."""

    _grid_job: tuple[tuple[Any, str], Any] | None = None  # ((volume node, recipe), future) of the grid computing

    def position_model_text(self) -> str:
        """Which model predicts positions; without a pretraining checkpoint, that it is untrained."""
        checkpoint = path_text(self.state.positionCheckpoint)
        if checkpoint:
            return f"Predictions from the pretraining checkpoint {Path(checkpoint).name} ({checkpoint})."
        return (f"No pretraining checkpoint chosen: the predictions come from an untrained {self.state.recipe} "
                "encoder and show only the mechanics, not what VoCo learns. Choose a checkpoint written by "
                "pretraining (Train section) to see a trained model.")

    def _see_view(self, actions: dict[str, Action], labels: dict[str, str]) -> None:
        s = self.state
        labels["position_model"] = self.position_model_text()
        labels["grid"] = self.texts.get("grid", "")
        if s.inputVolume is None:
            no_volume = "Select an input CT volume first."
            actions["show_grid"] = actions["place_point"] = actions["predict"] = Action(False, no_volume)
            return
        actions["show_grid"] = Action(True, f"Draw the {s.recipe} recipe's base crops on '{s.inputVolume.GetName()}'.")
        actions["place_point"] = Action(True, "Click in a slice view to place the target point (a point list is "
                                              "created if there is none).")
        points = s.targetPoint
        if points is None or points.GetNumberOfControlPoints() == 0:
            actions["predict"] = Action(False, "Place the target point first.")
        elif self.running:
            actions["predict"] = Action(False, self._busy())
        else:
            actions["predict"] = Action(True, "Predict the target crop's overlap with each base crop.")

    def target_point_list(self) -> Any:
        """The point list to place the target in: the chosen one, or a new one-point list named "VoCo target"."""
        points = self.state.targetPoint
        if points is None or points.GetScene() is None:
            scene = self.logic.scene
            points = scene.AddNewNodeByClass("vtkMRMLMarkupsFiducialNode", scene.GenerateUniqueName(TARGET_LIST_NAME))
            points.SetMaximumNumberOfControlPoints(1)
            if points.GetDisplayNode() is None:
                points.CreateDefaultDisplayNodes()
            self.state.targetPoint = points
            self._changed()
        return points

    def predict(self) -> tuple[Any, Any]:
        """Predict at the placed point with the chosen checkpoint (or the untrained model); (table, chart)."""
        from vococore.utils.errors import VoCoError

        action = self.view().actions["predict"]
        if not action.enabled:
            raise VoCoError(action.reason)
        point = [0.0, 0.0, 0.0]
        self.state.targetPoint.GetNthControlPointPositionWorld(0, point)
        model = self.logic.load_position_model(path_text(self.state.positionCheckpoint) or None, self.state.recipe)
        table, chart, _ = self.logic.predict_positions(self.state.inputVolume, point, model)
        self.texts["position"] = f"Predicted and true overlaps are in table '{table.GetName()}'."
        self._changed()
        return table, chart

    def show_grid(self, show: bool) -> None:
        """Draw (or remove) the grid of the current recipe on the input volume."""
        self.state.showGrid = bool(show)
        self._follow_grid()

    def _follow_grid(self) -> None:
        """Remove a grid that no longer fits volume and recipe at once; compute the wanted one on a worker
        thread (the preprocessing that places it takes seconds for a large CT); :meth:`poll` draws it."""
        s = self.state
        wanted = (s.inputVolume, s.recipe) if s.showGrid and s.inputVolume is not None else None
        if wanted == self._grid_drawn or (self._grid_job is not None and self._grid_job[0] == wanted):
            return
        if self._grid_drawn is not None:
            self.logic.hide_grid(self._grid_drawn[0])  # by node ID: works after the volume left the scene
            self._grid_drawn = None
        self._grid_job, self.texts["grid"] = None, ""  # a grid still computing for an older choice is dropped
        if wanted is not None:
            self._grid_job = (wanted, self.logic.start_grid(*wanted))
            self.texts["grid"] = (f"Preprocessing '{wanted[0].GetName()}' as the {wanted[1]} recipe does, to place "
                                  "its grid...")
        self._changed()

    def _poll_grid(self) -> None:
        """Draw the grid once its worker is done (from :meth:`poll`, on the GUI thread)."""
        from vococore.utils.errors import VoCoError

        if self._grid_job is None or not self._grid_job[1].done():
            return
        (volume, recipe), future = self._grid_job
        self._grid_job, self.texts["grid"] = None, ""
        try:
            geometry = future.result()
        except VoCoError as exc:
            self.texts["grid"] = f"No grid for '{volume.GetName()}': {exc}"
        else:
            if volume.GetScene() is not None:
                rois = self.logic.draw_grid(geometry, volume)
                self._grid_drawn = (volume, recipe)
                self.texts["grid"] = f"{len(rois)} base crops of the {recipe} recipe on '{volume.GetName()}'."
        self._changed()

    def wait_for_grid(self, timeout_s: float = 120.0) -> None:
        """Block until the grid being computed is drawn (scripts, tests and the benchmark; the GUI polls)."""
        if self._grid_job is not None:
            self._grid_job[1].result(timeout_s)
            self._poll_grid()
