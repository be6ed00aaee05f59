"""The studio's state and actions: one trame-slicer scene with an axial and a 3D view, driven by the Qt-free
:class:`VoCoSlicerLib.presenter.Presenter`, as the Slicer widget is. The presenter decides what is enabled and why,
every label, estimate and progress text, and what Apply, Start, Cancel, the grid and Predict do; this class only
copies the page's inputs into the presenter's :class:`ModuleState`, renders the presenter's view into trame state,
and does what only a web page has to (loading files, streaming views, saving). The page (``ui.py``) binds to it."""

from __future__ import annotations

import shutil
import tempfile
import types
from pathlib import Path
from typing import Any

import numpy as np

from vococore.utils.errors import VoCoError
from VoCoSlicerLib import nodes, position
from VoCoSlicerLib.logic import VoCoLogic
from VoCoSlicerLib.presenter import ModuleState, Presenter, path_text
from VoCoSlicerLib.registry import ModelRegistry
from VoCoStudio import access

POLL_S = 0.25  # how often the page's timer drains the background run's output
POSITION_SEED = 0  # an untrained position model is built from this seed, so a test can rebuild the same one
# the ModuleState fields the page edits, by kind (nodes travel as MRML node IDs, "" for none)
TEXT_FIELDS = ("model", "device", "recipe", "positionCheckpoint", "pretrainData", "pretrainOutput",
               "finetuneWeights", "finetuneOutput", "finetuneNetwork")
FLAG_FIELDS = ("showGrid", "resume")
COUNT_FIELDS = ("pretrainSteps", "finetuneSteps")
NODE_FIELDS = ("inputVolume", "finetuneVolume", "finetuneSegmentation")
FIELDS = TEXT_FIELDS + FLAG_FIELDS + COUNT_FIELDS + NODE_FIELDS
PAGE_INPUTS = ("sample_name", "ct_path", "import_path", "seg_output", "overwrite")  # the page's own inputs
# what a button's click sends along (trame evaluates it in the page): every input as the page shows it
CLICK_INPUTS = "[{" + ", ".join(f"{name}: {name}" for name in FIELDS + PAGE_INPUTS) + "}]"


class Studio:
    """Everything the web page can do, on one MRML scene of a trame-slicer ``SlicerApp``."""

    def __init__(self, server: Any, work_dir: str | Path | None = None,
                 models_dir: str | Path | None = None) -> None:
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
        self.logic = VoCoLogic(self.app.scene, registry=ModelRegistry(cache_dir=models_dir), work_dir=self.work_dir,
                               on_log=self._on_log)
        self.module = ModuleState()
        self.presenter = Presenter(self.module, self.logic, on_change=self.render, on_error=self._on_error,
                                   runs_dir=self.work_dir / "runs")
        self.segmentation_node: Any = None  # the latest segmentation result, shown and saved
        self._shown_volume: Any = None
        self._gpu_known = False
        self._click_observer: tuple[Any, int] | None = None
        self.state.update(dict(
            message="", error="", ct_path="", sample_name="TotalSegCTSmall", import_path="", seg_output="",
            overwrite=False, saved_path="", has_segmentation=False, click_ras=None, positions=[], train_tab=0,
            run_pid=None, losses=[], dices=[], loss_svg=""))
        self.render()
        self.state.change(*FIELDS)(lambda **_: self._guard(self.take_inputs))
        self.state.change("train_tab")(lambda train_tab, **_: self._guard(self.presenter.set_tab, int(train_tab)))

    # --- the presenter's view on the page --------------------------------------------------------------------------
    def render(self) -> None:
        """Show the presenter's view: each action's enabled flag, reason and text, every label, progress, curves;
        and the state's current inputs (the presenter may change them, e.g. importing a model chooses it)."""
        view = self.presenter.view()
        volumes = self.presenter.loaded_volumes()
        segmentations = self.app.scene.GetNodesByClass("vtkMRMLSegmentationNode")
        curves = view.curves
        losses = [dict(step=s, loss=round(v, 5)) for s, v in curves.get("loss", [])]
        self.state.update(dict(
            actions={k: dict(enabled=a.enabled, reason=a.reason, text=a.text) for k, a in view.actions.items()},
            labels=dict(view.labels), running=view.running or "",
            progress=0.0 if view.progress is None else round(100 * view.progress, 1),
            models=[dict(value=i, text=t) for i, t in view.models],
            volume_items=[dict(value=v.GetID(), text=v.GetName()) for v in volumes],
            segmentation_items=[dict(value=n.GetID(), text=n.GetName()) for n in
                                (segmentations.GetItemAsObject(i) for i in range(segmentations.GetNumberOfItems()))],
            losses=losses, loss_svg=_loss_svg([p["loss"] for p in losses]) if losses else "",
            dices=[dict(step=s, dice=round(v, 4)) for s, v in curves.get("dice", [])],
            volume_name=self.module.inputVolume.GetName() if self.module.inputVolume is not None else "",
            run_pid=self.logic.process.pid if view.running and self.logic.process is not None else None,
            **{name: self._to_page(name) for name in FIELDS}))
        self._follow_display()

    def take_inputs(self) -> None:
        """Copy the page's inputs into the presenter's state; on any change, tell the presenter and re-render."""
        changed = False
        for name in FIELDS:
            value = self._from_page(name, self.state[name])
            if value != getattr(self.module, name):
                setattr(self.module, name, value)
                changed = True
        if changed:
            self.presenter.state_changed()
            self.render()

    def _to_page(self, name: str) -> Any:
        value = getattr(self.module, name)
        if name in NODE_FIELDS:
            return value.GetID() if value is not None else ""
        return path_text(value) if name in TEXT_FIELDS else value

    def _from_page(self, name: str, value: Any) -> Any:
        if name in NODE_FIELDS:
            return self.app.scene.GetNodeByID(value) if value else None
        if name in FLAG_FIELDS:
            return bool(value)
        if name in COUNT_FIELDS:
            try:
                return int(value)
            except (TypeError, ValueError):
                raise VoCoError(f"{name}: {value!r} is not a whole number") from None
        return str(value or "")

    def _follow_display(self) -> None:
        """The views show the input volume, and a new segmentation result as overlay and 3D surfaces."""
        volume = self.module.inputVolume
        if volume is not None and volume is not self._shown_volume:
            self.app.display_manager.show_volume_in_slice_background(volume)
            for view in self.app.view_manager.get_slice_views():
                view.set_visible_in_3d(True)
            self.app.display_manager.reset_views()
            self._shown_volume = volume
        result = self.logic.result_node
        if result is not None and result is not self.segmentation_node and result.GetScene() is not None:
            self.segmentation_node = result
            result.CreateClosedSurfaceRepresentation()
            for view in self.app.view_manager.get_views():
                view.schedule_render()
            self.state.update(dict(has_segmentation=True, saved_path="", message=(
                f"Segmentation: {result.GetSegmentation().GetNumberOfSegments()} segments")))

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
        matrix = self._axial_view().get_view_node().GetXYToRAS()
        ras = [0.0, 0.0, 0.0, 1.0]
        matrix.MultiplyPoint([float(x), float(y), 0.0, 1.0], ras)
        return np.asarray(ras[:3])

    def _on_slice_click(self, interactor: Any, _event: str) -> None:
        x, y = interactor.GetEventPosition()
        self._guard(self.place_target, self.slice_xy_to_ras(x, y))

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
        """Read ``path`` with vococore's reader (one-line errors), add it to the scene and make it the input."""
        from vococore.io import read_volume

        volume = read_volume(path)
        node = nodes.node_from_volume(volume, self.app.scene, Path(path).name.split(".")[0])
        node.CreateDefaultDisplayNodes()  # node_from_volume leaves display to the caller
        node.GetDisplayNode().SetAutoWindowLevel(True)
        self.module.inputVolume = node
        self.state.update(dict(positions=[], click_ras=None, message=f"Loaded {Path(path).name}"))
        self.presenter.state_changed()
        self.render()

    # --- segment --------------------------------------------------------------------------------------------------
    def import_model(self) -> None:
        """Add the ``.vocomodel`` package at the typed server path to the model list (the presenter chooses it)."""
        self.presenter.import_model(access.readable_file(self.state.import_path, "model package"))
        self.state.message = f"Imported model {self.module.model!r}"

    def apply(self) -> None:
        """The presenter's Apply: segment the input volume (downloading a listed model first), or cancel."""
        self.presenter.apply(self.logic.registry.download)

    def save_segmentation(self) -> None:
        """Write the latest segmentation to the typed ``.seg.nrrd`` path (never over a file unless asked)."""
        if self.segmentation_node is None or self.segmentation_node.GetScene() is None:
            raise VoCoError("no segmentation yet: run Apply first")
        path = access.writable_output(self.state.seg_output, bool(self.state.overwrite), ".seg.nrrd")
        saved = nodes.save_segmentation(self.segmentation_node, path, overwrite=bool(self.state.overwrite))
        self.state.update(dict(saved_path=str(saved), message=f"Saved {saved}"))

    # --- see what VoCo sees ---------------------------------------------------------------------------------------
    def place_target(self, ras: Any) -> None:
        """Put the target point at world point ``ras`` (when the presenter allows placing) and predict there."""
        if not self.presenter.view().actions["place_point"].enabled:
            return
        points = self.presenter.target_point_list()
        points.RemoveAllControlPoints()
        points.AddControlPointWorld(*[float(v) for v in ras])
        self.presenter.state_changed()
        if self.presenter.view().actions["predict"].enabled:
            self.predict()
        else:
            self.render()

    def predict(self) -> None:
        """The presenter's Predict at the placed point; its table's rows become the page's table and bar chart."""
        import torch

        torch.manual_seed(POSITION_SEED)  # an untrained model (no checkpoint chosen) is then the same every time
        table, _ = self.presenter.predict()
        data = table.GetTable()
        predicted, true = position.table_values(table)
        columns = [data.GetColumnByName(name) for name in position.COLUMNS[:3]]
        point = [0.0, 0.0, 0.0]
        self.module.targetPoint.GetNthControlPointPositionWorld(0, point)
        self.state.update(dict(click_ras=[round(float(v), 3) for v in point], positions=[
            dict(base=int(columns[0].GetValue(k)), i=int(columns[1].GetValue(k)), j=int(columns[2].GetValue(k)),
                 predicted=round(float(p), 4), true=round(float(t), 4))
            for k, (p, t) in enumerate(zip(predicted, true))], message="Position predicted"))

    # --- runs -----------------------------------------------------------------------------------------------------
    def poll(self) -> None:
        """Deliver the background run's progress (called from a timer); re-render once the GPU check is known."""
        self.presenter.poll()
        if not self._gpu_known and self.presenter.gpu is not None:
            self._gpu_known = True
            self.render()
        if self.state.running and self.logic.process is not None and self.state.run_pid != self.logic.process.pid:
            self.state.run_pid = self.logic.process.pid  # the subprocess starts after its preparation

    def _on_error(self, title: str, details: str) -> None:
        lines = [line for line in (details or "").splitlines() if line.strip()]
        self.state.error = f"{title} {lines[-1]}" if lines else title

    def _on_log(self, line: str) -> None:
        self.state.message = line[-300:]

    # --- helpers --------------------------------------------------------------------------------------------------
    def guarded(self, action: Any) -> Any:
        """``action`` as a page callback: a VoCoError becomes the page's one-line error; the view is re-rendered."""
        return lambda *args: self._guard(action, *args)

    def clicked(self, action: Any) -> Any:
        """``action`` as a button's callback (see :data:`CLICK_INPUTS`): the page's inputs that the click carries are
        taken first, so the run starts with what the page shows. trame's client holds its state changes back while
        any request of its own is in flight (a view image, say), but sends a click at once: a value typed just
        before the click would otherwise reach the server after it."""
        def run(inputs: dict | None = None) -> None:
            self._guard(self._take_then, action, inputs or {})
        return run

    def _take_then(self, action: Any, inputs: dict) -> None:
        self.state.update({name: value for name, value in inputs.items() if name in FIELDS + PAGE_INPUTS})
        self.take_inputs()
        action()

    def _guard(self, action: Any, *args: Any) -> None:
        try:
            self.state.error = ""
            action(*args)
        except VoCoError as error:
            self.state.error = str(error)
        self.render()

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
