"""The studio's state and actions: one trame-slicer scene with an axial and a 3D view, driven by VoCoSlicerLib's
Qt-free :class:`VoCoLogic` (the same logic the Slicer widget calls); the page (``ui.py``) only binds to these."""

from __future__ import annotations

import shutil
import tempfile
import types
from pathlib import Path
from typing import Any

import numpy as np

from vococore.utils.errors import VoCoError
from VoCoSlicerLib import nodes
from VoCoSlicerLib.logic import VoCoLogic
from VoCoSlicerLib.parameters import FinetuneParameters, PretrainParameters, SegmentParameters
from VoCoSlicerLib.runner import ProgressEvent, RunState
from VoCoStudio import access

POLL_S = 0.25  # how often the page's timer drains the background run's output
POSITION_SEED = 0  # an untrained position model is built from this seed, so a test can rebuild the same one


class Studio:
    """Everything the web page can do, on one MRML scene of a trame-slicer ``SlicerApp``."""

    def __init__(self, server: Any, work_dir: str | Path | None = None) -> None:
        import slicer
        from trame_slicer.core import LayoutManager, SlicerApp
        from trame_slicer.rca_view import register_rca_factories
        from trame_slicer.views import Layout, LayoutDirection, ViewLayoutDefinition

        self.server, self.state = server, server.state
        self.app = SlicerApp()
        register_rca_factories(self.app.view_manager, server)
        self.layout_manager = LayoutManager(self.app.scene, self.app.view_manager, server)
        self.layout_manager.register_layout("VoCo", Layout(LayoutDirection.Horizontal, [
            ViewLayoutDefinition.axial_view(), ViewLayoutDefinition.threed_view()]))
        # VoCoSlicerLib's node helpers use slicer.util, which reads these globals (as inside Slicer)
        slicer.mrmlScene = self.app.scene
        slicer.modules = types.SimpleNamespace(
            segmentations=types.SimpleNamespace(logic=lambda: self.app.segmentations_logic),
            volumes=types.SimpleNamespace(logic=lambda: self.app.volumes_logic),
            markups=types.SimpleNamespace(logic=lambda: self.app.markups_logic))
        self.work_dir = Path(work_dir) if work_dir else Path(tempfile.mkdtemp(prefix="VoCoStudio-"))
        self.logic = VoCoLogic(self.app.scene, work_dir=self.work_dir, on_progress=self._on_progress,
                               on_log=self._on_log)
        self.volume_node: Any = None
        self.segmentation_node: Any = None
        self.position_model: Any = None
        self._click_observer: tuple[Any, int] | None = None
        self.state.update(dict(
            message="", error="", volume_name="", ct_path="", sample_name="TotalSegCTSmall", model_path="",
            running=False, run_kind="", progress=0.0, progress_text="", eta="", run_state="",
            seg_output="", overwrite=False, saved_path="", has_segmentation=False,
            recipe="small", grid_count=0, click_ras=None, positions=[], checkpoint="",
            train_kind="pretrain", train_data="", train_output="", train_steps=3, train_resume=False,
            losses=[], loss_svg="", dices=[], pid=None))

    # --- views ----------------------------------------------------------------------------------------------------
    def start_layout(self) -> None:
        """Show the axial + 3D layout and start listening for clicks in the axial view."""
        self.layout_manager.set_layout("VoCo")
        view = self._axial_view()
        if view is not None and self._click_observer is None:
            interactor = view.interactor()
            tag = interactor.AddObserver("LeftButtonPressEvent", self._on_slice_click, 1.0)
            self._click_observer = (interactor, tag)

    def _axial_view(self) -> Any:
        views = self.app.view_manager.get_slice_views()
        return next((v for v in views if v.get_orientation() == "Axial"), views[0] if views else None)

    def slice_xy_to_ras(self, x: float, y: float) -> np.ndarray:
        """World (RAS) point under display pixel (x, y) of the axial view (VTK's origin: bottom left)."""
        view = self._axial_view()
        matrix = view.get_view_node().GetXYToRAS()
        ras = [0.0, 0.0, 0.0, 1.0]
        matrix.MultiplyPoint([float(x), float(y), 0.0, 1.0], ras)
        return np.asarray(ras[:3])

    def _on_slice_click(self, interactor: Any, _event: str) -> None:
        if self.volume_node is None or not self.state.grid_count:
            return
        x, y = interactor.GetEventPosition()
        self._guard(self.predict_at, self.slice_xy_to_ras(x, y))

    # --- loading --------------------------------------------------------------------------------------------------
    def load_sample(self, name: str | None = None) -> None:
        """Load a registered real CT sample (through vococore's verified registry)."""
        from vococore.io.sampledata import fetch

        self.load_file(fetch(name or self.state.sample_name))

    def load_path(self, text: str | None = None) -> None:
        """Load the CT at a server path the user typed (checked first)."""
        self.load_file(access.readable_file(text if text is not None else self.state.ct_path, "CT"))

    def load_upload(self, files: list[dict]) -> None:
        """Load a CT uploaded from the browser (written to the work folder first)."""
        from trame_slicer.utils import write_client_files_to_dir

        folder = Path(tempfile.mkdtemp(prefix="upload-", dir=self.work_dir))
        loaded = write_client_files_to_dir(files, str(folder))
        if not loaded:
            raise VoCoError("upload: no file received")
        self.load_file(Path(loaded[0]))

    def load_file(self, path: Path) -> None:
        """Read ``path`` with vococore's reader (one-line errors) and show it in both views."""
        from vococore.io import read_volume

        volume = read_volume(path)
        self._remove_data()
        self.volume_node = nodes.node_from_volume(volume, self.app.scene, Path(path).name.split(".")[0])
        self.segmentation_node = None
        self.volume_node.CreateDefaultDisplayNodes()  # node_from_volume leaves display to the caller
        self.volume_node.GetDisplayNode().SetAutoWindowLevel(True)
        # slices in 3D rather than volume rendering: software OpenGL (a headless server) renders it too slowly
        self.app.display_manager.show_volume_in_slice_background(self.volume_node)
        for view in self.app.view_manager.get_slice_views():
            view.set_visible_in_3d(True)
        self.app.display_manager.reset_views()
        self.state.update(dict(volume_name=self.volume_node.GetName(), grid_count=0, positions=[], click_ras=None,
                               has_segmentation=False, saved_path="", message=f"Loaded {Path(path).name}",
                               error=""))

    # --- segment --------------------------------------------------------------------------------------------------
    def segment(self) -> None:
        """Run the model package at ``model_path`` on the loaded CT in the background."""
        self._need_volume()
        model = access.readable_file(self.state.model_path, "model package")
        if self.logic.hide_grid(self.volume_node):  # its filled boxes would hide the overlay
            self.state.update(dict(grid_count=0, positions=[], click_ras=None))
        self.logic.start_segmentation(self.volume_node, SegmentParameters(model="", device="auto"),
                                      on_finished=self._segmentation_finished, model_file=model)
        self._run_started("segment")

    def _segmentation_finished(self, state: RunState, node: Any) -> None:
        self._run_finished(state)
        if node is not None:
            self.segmentation_node = node
            node.CreateDefaultDisplayNodes()  # loaded from file without one: nothing would be drawn
            node.CreateClosedSurfaceRepresentation()
            for view in self.app.view_manager.get_views():
                view.schedule_render()
            self.state.has_segmentation = True
            self.state.message = f"Segmentation: {node.GetSegmentation().GetNumberOfSegments()} segments"

    def save_segmentation(self) -> None:
        """Write the segmentation to the typed ``.seg.nrrd`` path (never over a file unless asked)."""
        if self.segmentation_node is None:
            raise VoCoError("no segmentation yet: run Segment first")
        path = access.writable_output(self.state.seg_output, bool(self.state.overwrite), ".seg.nrrd")
        saved = nodes.save_segmentation(self.segmentation_node, path, overwrite=bool(self.state.overwrite))
        self.state.update(dict(saved_path=str(saved), message=f"Saved {saved}"))

    # --- see what VoCo sees ---------------------------------------------------------------------------------------
    def show_grid(self) -> None:
        """Draw the recipe's base-crop grid where the preprocessing places it."""
        self._need_volume()
        rois = self.logic.show_grid(self.volume_node, self.state.recipe)
        self.position_model = None
        self.state.update(dict(grid_count=len(rois), message=f"{len(rois)} base crops of recipe "
                                                              f"{self.state.recipe!r}"))

    def predict_at(self, ras: Any) -> None:
        """Predicted vs true overlap of a target crop centred at world point ``ras`` with each base crop."""
        import torch

        self._need_volume()
        if self.position_model is None:
            torch.manual_seed(POSITION_SEED)
            self.position_model = self.logic.load_position_model(self.state.checkpoint or None, self.state.recipe)
        _, _, sub = self.logic.predict_positions(self.volume_node, ras, self.position_model)
        grid = int(round(len(sub.true) ** 0.5))
        self.state.update(dict(click_ras=[round(float(v), 3) for v in ras], positions=[
            dict(base=k, i=k // grid, j=k % grid, predicted=round(float(p), 4), true=round(float(t), 4))
            for k, (p, t) in enumerate(zip(sub.predicted, sub.true))], message="Position predicted"))

    # --- train ----------------------------------------------------------------------------------------------------
    def train(self, resume: bool = False) -> None:
        """Start pretraining (a CT folder) or fine-tuning (the loaded CT and its segmentation) in the background."""
        steps = int(self.state.train_steps)
        if self.state.train_kind == "pretrain":
            data = Path(self.state.train_data).expanduser()
            if not data.exists():
                raise VoCoError(f"{data}: no such folder or datalist")
            params = PretrainParameters(data=str(data), output_dir=self.state.train_output, recipe=self.state.recipe,
                                        steps=steps, device="auto", resume=resume)
            self.logic.start_pretraining(params, on_finished=self._run_finished)
        else:
            self._need_volume()
            if self.segmentation_node is None:
                raise VoCoError("fine-tuning needs a segmentation of the loaded CT (run or load one first)")
            params = FinetuneParameters(output_dir=self.state.train_output, steps=steps, device="auto",
                                        resume=resume)
            self.logic.start_finetuning([(self.volume_node, self.segmentation_node)], params,
                                        on_finished=self._run_finished)
        self.state.update(dict(losses=[], dices=[], loss_svg=""))
        self._run_started(self.state.train_kind)

    # --- runs -----------------------------------------------------------------------------------------------------
    def poll(self) -> None:
        """Deliver the background run's progress to the page (called from a timer)."""
        process = self.logic.process
        if process is not None:
            process.poll()
            if self.state.running and process.pid != self.state.pid:  # the subprocess starts after its preparation
                self.state.pid = process.pid

    def cancel(self) -> None:
        """Stop the current run and its whole process tree."""
        self.logic.cancel()
        self.poll()

    def _run_started(self, kind: str) -> None:
        process = self.logic.process
        self.state.update(dict(running=True, run_kind=kind, progress=0.0, progress_text=f"{kind}: starting",
                               eta="", run_state="running", pid=process.pid if process else None, error=""))

    def _run_finished(self, state: RunState, *_: Any) -> None:
        process = self.logic.process
        error = process.error_message() if process is not None else ""
        self.state.update(dict(running=False, run_state=state.value, pid=None, error=error.splitlines()[-1] if error else "",
                               message=f"{self.state.run_kind} {state.value}"))

    def _on_progress(self, event: ProgressEvent) -> None:
        self.state.update(dict(progress=round(100 * event.fraction, 1), progress_text=event.describe(),
                               eta="" if event.eta_s is None else f"{event.eta_s:.0f} s"))
        loss = next((event.metrics[k] for k in ("loss", "total", "train_loss") if k in event.metrics), None)
        if event.event == "progress" and loss is not None and event.stage in ("pretrain", "finetune", "train"):
            self.state.losses = [*self.state.losses, dict(step=event.step, loss=round(float(loss), 5))]
            self.state.loss_svg = _loss_svg([p["loss"] for p in self.state.losses])
        dice = next((v for k, v in event.metrics.items() if "dice" in k.lower()), None)
        if dice is not None:
            self.state.dices = [*self.state.dices, dict(step=event.step, dice=round(float(dice), 4))]

    def _on_log(self, line: str) -> None:
        self.state.message = line[-300:]

    def _remove_data(self) -> None:
        """Remove the previous CT, its segmentation, grid and position results (the views' own nodes stay)."""
        if self.volume_node is not None:
            self.logic.hide_grid(self.volume_node)
        for node in (self.segmentation_node, self.volume_node):
            if node is not None:
                self.app.scene.RemoveNode(node)

    # --- helpers --------------------------------------------------------------------------------------------------
    def _need_volume(self) -> None:
        if self.volume_node is None:
            raise VoCoError("no CT loaded: load a sample, a server path or an upload first")

    def _guard(self, action: Any, *args: Any) -> None:
        """Run a page action; a VoCoError becomes the page's one-line error instead of a traceback."""
        try:
            self.state.error = ""
            action(*args)
        except VoCoError as error:
            self.state.error = str(error)

    def close(self) -> None:
        """Cancel any run and remove the work folder."""
        self.logic.cancel()
        shutil.rmtree(self.work_dir, ignore_errors=True)


def _loss_svg(values: list[float], width: float = 300.0, height: float = 80.0) -> str:
    """The loss curve: an inline SVG polyline of ``values`` scaled into a width x height box."""
    low, high = min(values), max(values)
    span = (high - low) or 1.0
    step = width / max(len(values) - 1, 1)
    points = " ".join(f"{i * step:.1f},{height - (v - low) / span * height:.1f}" for i, v in enumerate(values))
    return (f'<svg width="{width:.0f}" height="{height:.0f}" style="border:1px solid #ccc">'
            f'<polyline points="{points}" fill="none" stroke="#d95a1a" stroke-width="2"/></svg>')
