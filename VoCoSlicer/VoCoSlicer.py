"""VoCoSlicer: segment CT with VoCo models, see VoCo's pretext task on your data, and pretrain or fine-tune.

This file holds only the Slicer glue (module, widget, logic wrapper, self-test); the work is in VoCoSlicerLib,
which has no Qt and is tested headless against slicer-core.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import qt
import slicer
import vtk
from slicer.i18n import tr as _
from slicer.i18n import translate
from slicer.parameterNodeWrapper import Choice, WithinRange, parameterNodeWrapper
from slicer.ScriptedLoadableModule import (
    ScriptedLoadableModule,
    ScriptedLoadableModuleLogic,
    ScriptedLoadableModuleTest,
    ScriptedLoadableModuleWidget,
)
from slicer.util import VTKObservationMixin

# Only modules that load without vococore/MONAI are imported here, so the module can offer to install them.
from VoCoSlicerLib import install
from VoCoSlicerLib.parameters import DEVICES, NETWORKS, RECIPES, SegmentParameters
from VoCoSlicerLib.runner import RunState

if TYPE_CHECKING:
    from VoCoSlicerLib.logic import VoCoLogic

POLL_MS = 200


class VoCoSlicer(ScriptedLoadableModule):
    """Module description shown in Slicer's module list and help panel."""

    def __init__(self, parent):
        ScriptedLoadableModule.__init__(self, parent)
        self.parent.title = _("VoCo")
        self.parent.categories = [translate("qSlicerAbstractCoreModule", "Segmentation")]
        self.parent.dependencies = []
        self.parent.contributors = ["VoCoSlicer developers"]
        self.parent.helpText = _(
            "Segment CT with VoCo (Volume Contrast) models, show the crop grid and position prediction of VoCo's "
            "pretext task on your own CT, and pretrain or fine-tune in the background with progress and cancel. "
            "World coordinates are RAS millimetres.")
        self.parent.acknowledgementText = _(
            "VoCo by Wu et al. (CVPR 2024) and its follow-up (VoComni models, Apache-2.0); built on MONAI.")


@parameterNodeWrapper
class VoCoSlicerParameterNode:
    """The module's state, saved with the scene; each field is bound to the widget carrying its name."""

    inputVolume: slicer.vtkMRMLScalarVolumeNode
    model: str = "VoComni_B"
    device: Annotated[str, Choice(list(DEVICES))] = "auto"
    recipe: Annotated[str, Choice(list(RECIPES))] = "v2"
    showGrid: bool = False
    targetPoint: slicer.vtkMRMLMarkupsFiducialNode
    positionCheckpoint: Path
    pretrainData: Path
    pretrainOutput: Path
    pretrainSteps: Annotated[int, WithinRange(1, 10_000_000)] = 1000
    finetuneVolume: slicer.vtkMRMLScalarVolumeNode
    finetuneSegmentation: slicer.vtkMRMLSegmentationNode
    finetuneWeights: Path
    finetuneOutput: Path
    finetuneNetwork: Annotated[str, Choice(list(NETWORKS))] = "swin"
    finetuneSteps: Annotated[int, WithinRange(1, 10_000_000)] = 500
    resume: bool = False


def pythonSlicer() -> str:
    """The interpreter that runs vococore in the background: Slicer's own Python."""
    return shutil.which("PythonSlicer") or os.path.join(slicer.app.slicerHome, "bin", "PythonSlicer")


def confirmInstall(text: str) -> bool:
    """The one confirmation before installing packages; in testing mode (the self-test) there is no dialog."""
    return slicer.app.testingEnabled() or slicer.util.confirmOkCancelDisplay(text)


# which button shows which action of the presenter's view, and which label shows which texts (joined by lines)
BUTTONS = {"applyButton": "apply", "cancelButton": "cancel", "importModelButton": "import_model",
           "showGridCheckBox": "show_grid", "predictButton": "predict", "startTrainButton": "start_training",
           "cancelTrainButton": "cancel"}
LABELS = {"modelInfoLabel": ("model_card",), "segmentEstimateLabel": ("device", "segment_estimate"),
          "etaLabel": ("progress", "status"), "positionLabel": ("position_model", "grid", "position"),
          "trainEstimateLabel": ("train_estimate", "train_data", "train_output", "progress", "status"),
          "lossLabel": ("loss",), "diceLabel": ("dice",)}


class VoCoSlicerLogic(ScriptedLoadableModuleLogic):
    """Slicer-facing logic: the parameter node, model downloads with a progress dialog, and a :class:`VoCoLogic`
    that does the work (injectable)."""

    def __init__(self, core: VoCoLogic | None = None) -> None:
        from VoCoSlicerLib.logic import VoCoLogic

        ScriptedLoadableModuleLogic.__init__(self)
        self.core = core or VoCoLogic(slicer.mrmlScene, python=pythonSlicer(),
                                      work_dir=Path(slicer.util.tempDirectory()))

    def getParameterNode(self) -> VoCoSlicerParameterNode:
        return VoCoSlicerParameterNode(super().getParameterNode())

    def download(self, entry) -> Path:
        """Download a model the user chose (once, checksum-verified) with a progress dialog."""
        dialog = slicer.util.createProgressDialog(labelText=_("Downloading {title}").format(title=entry.title),
                                                  maximum=100)

        def onBytes(done: int, total: int | None) -> None:
            dialog.setValue(int(100 * done / (total or max(done, 1))))
            slicer.app.processEvents()
        try:
            return self.core.registry.download(entry, onBytes)
        finally:
            dialog.close()


class VoCoSlicerWidget(ScriptedLoadableModuleWidget, VTKObservationMixin):
    """Binds the GUI to the parameter node and forwards events to the presenter (VoCoSlicerLib.presenter), which
    decides everything: enabled actions and their reasons, labels, what each event does."""

    def __init__(self, parent=None, logic: VoCoSlicerLogic | None = None) -> None:
        ScriptedLoadableModuleWidget.__init__(self, parent)
        VTKObservationMixin.__init__(self)
        self.logic = logic
        self.presenter = None
        self._parameterNode = None
        self._parameterNodeGuiTag = None
        self._timer = qt.QTimer()
        self._timer.setInterval(POLL_MS)
        self._timer.timeout.connect(self.onPoll)

    def setup(self) -> None:
        ScriptedLoadableModuleWidget.setup(self)
        uiWidget = slicer.util.loadUI(self.resourcePath("UI/VoCoSlicer.ui"))
        self.layout.addWidget(uiWidget)
        self.ui = slicer.util.childWidgetVariables(uiWidget)
        uiWidget.setMRMLScene(slicer.mrmlScene)
        self.logic = self.logic or self.installedLogic()
        uiWidget.enabled = self.logic is not None
        if self.logic is None:
            return
        from VoCoSlicerLib.presenter import Presenter

        self.presenter = Presenter(self.logic.getParameterNode(), self.logic.core, on_change=self.render,
                                   on_error=lambda title, detail: slicer.util.errorDisplay(title, detailedText=detail))
        self.logic.core.on_log = lambda line: print(f"[VoCo] {line}")
        self.ui.modelComboBox.connect("currentIndexChanged(int)", self.onModelSelected)
        self.addObserver(slicer.mrmlScene, slicer.mrmlScene.StartCloseEvent, self.onSceneStartClose)
        self.addObserver(slicer.mrmlScene, slicer.mrmlScene.EndCloseEvent, self.onSceneEndClose)
        self.ui.applyButton.connect("clicked(bool)", self.onAction(lambda: self.presenter.apply(self.logic.download)))
        for button in (self.ui.cancelButton, self.ui.cancelTrainButton):
            button.connect("clicked(bool)", self.onAction(lambda: self.presenter.cancel()))
        self.ui.importModelButton.connect("clicked(bool)", self.onAction(self.importModel))
        self.ui.predictButton.connect("clicked(bool)", self.onAction(self.predict))
        self.ui.startTrainButton.connect("clicked(bool)", self.onAction(lambda: self.presenter.start_training()))
        self.ui.trainTabWidget.connect("currentChanged(int)", lambda index: self.presenter.set_tab(index))
        self.initializeParameterNode()
        self._timer.start()

    def installedLogic(self) -> VoCoSlicerLogic | None:
        """The logic once MONAI and vococore's packages are importable, installing them after one confirmation
        (here, on the GUI thread); None with the next step shown when the user declines or pip fails."""
        ok = False
        with slicer.util.tryWithErrorDisplay(_("Failed to install VoCoSlicer's Python packages. ") + install.NEXT_STEP):
            ok = install.ensure_installed(confirmInstall)
        self.ui.segmentEstimateLabel.text = "" if ok else _("VoCoSlicer needs MONAI and a few other Python "
                                                            "packages. ") + install.NEXT_STEP
        return VoCoSlicerLogic() if ok else None

    def cleanup(self) -> None:
        self._timer.stop()
        self.removeObservers()
        self.logic and self.logic.core.cancel()

    def enter(self) -> None:
        self.presenter and self.initializeParameterNode()

    def exit(self) -> None:
        self.setParameterNode(None)

    def onSceneStartClose(self, caller, event) -> None:
        self.presenter.scene_about_to_close()
        self.setParameterNode(None)

    def onSceneEndClose(self, caller, event) -> None:
        self.initializeParameterNode()

    def initializeParameterNode(self) -> None:
        node = self.logic.getParameterNode()
        node.inputVolume = node.inputVolume or slicer.mrmlScene.GetFirstNodeByClass("vtkMRMLScalarVolumeNode")
        self.presenter.scene_closed(node)
        self.setParameterNode(node)

    def setParameterNode(self, inputParameterNode: VoCoSlicerParameterNode | None) -> None:
        if self._parameterNode:
            self._parameterNode.disconnectGui(self._parameterNodeGuiTag)
            self.removeObserver(self._parameterNode, vtk.vtkCommand.ModifiedEvent, self.onStateChanged)
        self._parameterNode = inputParameterNode
        if self._parameterNode:
            self._parameterNodeGuiTag = self._parameterNode.connectGui(self.ui)
            self.addObserver(self._parameterNode, vtk.vtkCommand.ModifiedEvent, self.onStateChanged)
            self.onStateChanged()

    def onStateChanged(self, caller=None, event=None) -> None:
        self.run(self.presenter.state_changed)
        self.render()

    def render(self) -> None:
        """Show the presenter's view: every button's state, tooltip and text, every label, the progress bars."""
        view = self.presenter.view()
        for name, key in BUTTONS.items():
            action, button = view.actions[key], getattr(self.ui, name)
            button.enabled, button.toolTip = action.enabled, action.reason
            button.text = action.text or button.text
        for name, keys in LABELS.items():
            getattr(self.ui, name).text = "\n".join(t for t in (view.labels.get(k, "") for k in keys) if t)
        self.ui.progressBar.visible = view.running == "segment"
        self.ui.trainProgressBar.visible = view.running in ("pretrain", "finetune")
        for bar in (self.ui.progressBar, self.ui.trainProgressBar):
            bar.value = int(100 * (view.progress or 0.0))
        combo = self.ui.modelComboBox
        wasBlocked = combo.blockSignals(True)
        combo.clear()
        for modelId, title in view.models:
            combo.addItem(title, modelId)
        combo.currentIndex = combo.findData(self._parameterNode.model) if self._parameterNode else -1
        combo.blockSignals(wasBlocked)
        self.ui.placePointWidget.setCurrentNode(self.presenter.target_point_list()
                                                if view.actions["place_point"].enabled else None)

    def onModelSelected(self, index: int) -> None:
        self._parameterNode.model = self.ui.modelComboBox.itemData(index)

    def onPoll(self) -> None:
        self.presenter.poll()

    def onAction(self, action):
        """A slot that runs ``action`` with errors shown as one message, then re-renders."""
        return lambda checked=False: self.run(action)

    def run(self, action) -> None:
        with slicer.util.tryWithErrorDisplay(_("VoCo could not do that."), waitCursor=True):
            action()
        self.render()

    def importModel(self) -> None:
        path = qt.QFileDialog.getOpenFileName(self.parent, _("Import a VoCo model package"), "",
                                              _("VoCo model packages (*.vocomodel)"))
        path and self.presenter.import_model(path)

    def predict(self) -> None:
        table, chart = self.presenter.predict()
        slicer.modules.plots.logic().ShowChartInLayout(chart)


class VoCoSlicerTest(ScriptedLoadableModuleTest):
    """Runs the logic end to end inside Slicer on real sample CT and a tiny model made on the spot."""

    def setUp(self) -> None:
        slicer.mrmlScene.Clear()

    def runTest(self) -> None:
        # in testing mode the dependencies are found or installed without a dialog
        self.assertTrue(install.ensure_installed(confirmInstall), install.plan().message())
        self.setUp()
        self.test_grid_on_sample_ct()
        self.setUp()
        self.test_segmentation_end_to_end()

    def _sampleVolume(self):
        from vococore.io.sampledata import fetch

        return slicer.util.loadVolume(str(fetch("TotalSegCTSmall")))

    def test_grid_on_sample_ct(self) -> None:
        volumeNode = self._sampleVolume()
        logic = VoCoSlicerLogic()
        rois = logic.core.show_grid(volumeNode, "small")
        self.assertEqual(len(rois), 9)
        self.assertEqual(logic.core.hide_grid(volumeNode), 9)
        self.delayDisplay("Grid drawn and removed")

    def test_segmentation_end_to_end(self) -> None:
        from vococore.io import LabelInfo
        from vococore.networks.backbones import BackboneSpec, build_segmenter
        from vococore.segmentation.package import ModelPackage, save_package
        from vococore.preprocessing.preprocessor import PreprocessConfig

        volumeNode = self._sampleVolume()
        logic = VoCoSlicerLogic()
        spec = BackboneSpec(arch="cnn", feature_size=8)
        package = ModelPackage(backbone=spec, labels=[LabelInfo(1, "organ", (1.0, 0.5, 0.0))],
                               preprocess=PreprocessConfig(spacing=(3.0, 3.0, 3.0), min_size=(32, 32, 32)),
                               roi_size=(32, 32, 32))
        modelFile = Path(slicer.util.tempDirectory()) / "tiny.vocomodel"
        save_package(build_segmenter(spec, out_channels=2), package, modelFile, overwrite=True)
        results = []
        process = logic.core.start_segmentation(volumeNode, SegmentParameters(model="", device="cpu"),
                                                on_finished=lambda state, node: results.append((state, node)),
                                                model_file=modelFile)
        self.assertEqual(process.wait_for_completion(timeout_s=600), RunState.SUCCEEDED, process.error_message())
        state, segmentationNode = results[0]
        self.assertIsNotNone(segmentationNode)
        self.assertEqual(segmentationNode.GetSegmentation().GetNthSegment(0).GetName(), "organ")
        self.delayDisplay("Segmentation ran end to end")
