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
from VoCoSlicerLib.parameters import DEVICES, NETWORKS, RECIPES, FinetuneParameters, PretrainParameters, SegmentParameters
from VoCoSlicerLib.runner import ProgressEvent, RunState

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
    """The one confirmation before installing packages (declined automatically in testing mode)."""
    return not slicer.app.testingEnabled() and slicer.util.confirmOkCancelDisplay(text)


def pathText(path: Path | None) -> str:
    """A path parameter as text; an empty path line edit reads back as '.', which means 'not set'."""
    text = str(path or "")
    return "" if text == "." else text


class VoCoSlicerLogic(ScriptedLoadableModuleLogic):
    """Slicer-facing logic: the parameter node, and a :class:`VoCoLogic` that does the work (injectable)."""

    def __init__(self, core: VoCoLogic | None = None) -> None:
        from VoCoSlicerLib.logic import VoCoLogic

        ScriptedLoadableModuleLogic.__init__(self)
        self.core = core or VoCoLogic(slicer.mrmlScene, python=pythonSlicer(),
                                      work_dir=Path(slicer.util.tempDirectory()))

    def getParameterNode(self) -> VoCoSlicerParameterNode:
        return VoCoSlicerParameterNode(super().getParameterNode())

    def segmentParameters(self, p: VoCoSlicerParameterNode) -> SegmentParameters:
        return SegmentParameters(model=p.model, device=p.device)

    def pretrainParameters(self, p: VoCoSlicerParameterNode) -> PretrainParameters:
        return PretrainParameters(data=pathText(p.pretrainData), output_dir=pathText(p.pretrainOutput),
                                  recipe=p.recipe, steps=p.pretrainSteps, device=p.device, resume=p.resume)

    def finetuneParameters(self, p: VoCoSlicerParameterNode) -> FinetuneParameters:
        return FinetuneParameters(weights=pathText(p.finetuneWeights), output_dir=pathText(p.finetuneOutput),
                                  network=p.finetuneNetwork, steps=p.finetuneSteps, device=p.device,
                                  resume=p.resume)

    def ensureModel(self, modelId: str) -> Path:
        """The model's verified file, downloading it (with a progress dialog) on first use."""
        if (path := self.core.model_path(modelId)) is not None:
            return path
        entry = self.core.registry.get(modelId)
        dialog = slicer.util.createProgressDialog(labelText=_("Downloading {title}").format(title=entry.title),
                                                  maximum=100)
        try:
            def onBytes(done: int, total: int | None) -> None:
                dialog.setValue(int(100 * done / total) if total else 0)
                slicer.app.processEvents()
            return self.core.registry.download(entry, onBytes)
        finally:
            dialog.close()


class VoCoSlicerWidget(ScriptedLoadableModuleWidget, VTKObservationMixin):
    """Binds the GUI to the parameter node and calls the logic; computes nothing itself."""

    def __init__(self, parent=None, logic: VoCoSlicerLogic | None = None) -> None:
        ScriptedLoadableModuleWidget.__init__(self, parent)
        VTKObservationMixin.__init__(self)
        self.logic = logic
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
        if self.logic is None:
            with slicer.util.tryWithErrorDisplay(_("Failed to install VoCoSlicer's Python packages.")):
                if install.ensure_installed(confirmInstall):
                    self.logic = VoCoSlicerLogic()
            if self.logic is None:
                self.ui.segmentEstimateLabel.text = _("VoCoSlicer needs MONAI and vococore: reopen the module "
                                                      "to install them.")
                uiWidget.enabled = False
                return
        self._progressBar, self._etaLabel = self.ui.progressBar, self.ui.etaLabel
        self.logic.core.on_progress = self.onProgress
        self.logic.core.on_log = lambda line: print(f"[VoCo] {line}")
        # the model list grows when the user imports a model, so this combo box is synced by hand, not bound
        for entry in self.logic.core.registry.entries():
            self.ui.modelComboBox.addItem(entry.id)
        self.ui.modelComboBox.connect("currentTextChanged(QString)", self.onModelSelected)
        self.ui.progressBar.setVisible(False)
        self.ui.trainProgressBar.setVisible(False)

        self.addObserver(slicer.mrmlScene, slicer.mrmlScene.StartCloseEvent, self.onSceneStartClose)
        self.addObserver(slicer.mrmlScene, slicer.mrmlScene.EndCloseEvent, self.onSceneEndClose)
        self.ui.applyButton.connect("clicked(bool)", self.onApply)
        self.ui.cancelButton.connect("clicked(bool)", self.onCancel)
        self.ui.cancelTrainButton.connect("clicked(bool)", self.onCancel)
        self.ui.importModelButton.connect("clicked(bool)", self.onImportModel)
        self.ui.showGridCheckBox.connect("toggled(bool)", self.onShowGrid)
        self.ui.predictButton.connect("clicked(bool)", self.onPredict)
        self.ui.startTrainButton.connect("clicked(bool)", self.onStartTraining)
        self.ui.trainTabWidget.connect("currentChanged(int)", lambda index: self.updateButtons())
        self.ui.targetPointSelector.connect("currentNodeChanged(vtkMRMLNode*)",
                                           self.ui.placePointWidget.setCurrentNode)
        self.initializeParameterNode()

    def cleanup(self) -> None:
        if self.logic is not None:
            self.logic.core.cancel()
        self._timer.stop()
        self.removeObservers()

    def enter(self) -> None:
        if self.logic is not None:
            self.initializeParameterNode()

    def exit(self) -> None:
        if self._parameterNode:
            self._parameterNode.disconnectGui(self._parameterNodeGuiTag)
            self._parameterNodeGuiTag = None
            self.removeObserver(self._parameterNode, vtk.vtkCommand.ModifiedEvent, self.updateButtons)

    def onSceneStartClose(self, caller, event) -> None:
        self.logic.core.cancel()
        self.setParameterNode(None)

    def onSceneEndClose(self, caller, event) -> None:
        if self.parent.isEntered:
            self.initializeParameterNode()

    def initializeParameterNode(self) -> None:
        self.setParameterNode(self.logic.getParameterNode())
        if not self._parameterNode.inputVolume:
            self._parameterNode.inputVolume = slicer.mrmlScene.GetFirstNodeByClass("vtkMRMLScalarVolumeNode")

    def setParameterNode(self, inputParameterNode: VoCoSlicerParameterNode | None) -> None:
        if self._parameterNode:
            self._parameterNode.disconnectGui(self._parameterNodeGuiTag)
            self.removeObserver(self._parameterNode, vtk.vtkCommand.ModifiedEvent, self.updateButtons)
        self._parameterNode = inputParameterNode
        if self._parameterNode:
            self._parameterNodeGuiTag = self._parameterNode.connectGui(self.ui)
            self.addObserver(self._parameterNode, vtk.vtkCommand.ModifiedEvent, self.updateButtons)
            self.updateButtons()

    def onModelSelected(self, modelId: str) -> None:
        if self._parameterNode and modelId:
            self._parameterNode.model = modelId

    def updateButtons(self, caller=None, event=None) -> None:
        """Enable actions whose parameters are valid; the reason for a disabled one is its tooltip."""
        p = self._parameterNode
        if self.ui.modelComboBox.currentText != p.model:
            wasBlocked = self.ui.modelComboBox.blockSignals(True)
            self.ui.modelComboBox.setCurrentText(p.model)
            self.ui.modelComboBox.blockSignals(wasBlocked)
        running = self.logic.core.process is not None and self.logic.core.process.state is RunState.RUNNING
        volume = p.inputVolume.GetName() if p.inputVolume else None
        valid = self.logic.segmentParameters(p).validate(volume, None)
        self.ui.applyButton.enabled = bool(valid) and not running
        self.ui.applyButton.toolTip = valid.reason or _("Segment the input volume.")
        self.ui.cancelButton.enabled = running
        self.ui.cancelTrainButton.enabled = running
        self.ui.predictButton.enabled = bool(p.inputVolume and p.targetPoint) and not running
        pretrain = self.logic.pretrainParameters(p).validate()
        finetuneReady = bool(p.finetuneVolume and p.finetuneSegmentation and pathText(p.finetuneOutput))
        onPretrainTab = self.ui.trainTabWidget.currentIndex == 0
        self.ui.startTrainButton.enabled = not running and (bool(pretrain) if onPretrainTab else finetuneReady)
        self.ui.startTrainButton.toolTip = pretrain.reason if onPretrainTab else ""
        if p.inputVolume:
            self.ui.segmentEstimateLabel.text = self.logic.core.segmentation_estimate(p.inputVolume)
        self.ui.trainEstimateLabel.text = self.logic.core.training_estimate(
            p.pretrainSteps if onPretrainTab else p.finetuneSteps, p.recipe)

    def onApply(self) -> None:
        with slicer.util.tryWithErrorDisplay(_("Failed to start segmentation."), waitCursor=True):
            p = self._parameterNode
            self.logic.ensureModel(p.model)
            self.logic.core.start_segmentation(p.inputVolume, self.logic.segmentParameters(p),
                                               on_finished=self.onSegmentationFinished)
            self.onRunStarted(self.ui.progressBar, self.ui.etaLabel)

    def onSegmentationFinished(self, state: RunState, segmentationNode) -> None:
        self.onRunFinished(state)
        if segmentationNode is not None:
            segmentationNode.CreateDefaultDisplayNodes()

    def onStartTraining(self) -> None:
        with slicer.util.tryWithErrorDisplay(_("Failed to start training."), waitCursor=True):
            p = self._parameterNode
            if self.ui.trainTabWidget.currentIndex == 0:
                self.logic.core.start_pretraining(self.logic.pretrainParameters(p), on_finished=self.onRunFinished)
            else:
                self.logic.core.start_finetuning([(p.finetuneVolume, p.finetuneSegmentation)],
                                                 self.logic.finetuneParameters(p), on_finished=self.onRunFinished)
            self.onRunStarted(self.ui.trainProgressBar, self.ui.trainEstimateLabel)

    def onRunStarted(self, progressBar, etaLabel) -> None:
        self._progressBar, self._etaLabel = progressBar, etaLabel
        progressBar.setValue(0)
        progressBar.setVisible(True)
        self._timer.start()
        self.updateButtons()

    def onPoll(self) -> None:
        process = self.logic.core.process
        if process is None or not process.poll():
            self._timer.stop()

    def onProgress(self, event: ProgressEvent) -> None:
        self._progressBar.setValue(int(100 * event.fraction))
        self._etaLabel.text = event.describe()
        if "total" in event.metrics:
            self.ui.lossLabel.text = event.metric_text("total")
        if "mean_dice" in event.metrics:
            self.ui.diceLabel.text = event.metric_text("mean_dice")

    def onRunFinished(self, state: RunState, *args) -> None:
        self._timer.stop()
        self._progressBar.setVisible(False)
        self._etaLabel.text = state.value
        self.updateButtons()
        if state is RunState.FAILED:
            slicer.util.errorDisplay(_("VoCo run failed."), detailedText=self.logic.core.process.error_message())

    def onCancel(self) -> None:
        with slicer.util.tryWithErrorDisplay(_("Failed to cancel."), waitCursor=True):
            self.logic.core.cancel()

    def onImportModel(self) -> None:
        path = qt.QFileDialog.getOpenFileName(self.parent, _("Import model file"), "", "Models (*.vocomodel *.pt)")
        if not path:
            return
        with slicer.util.tryWithErrorDisplay(_("Failed to import the model."), waitCursor=True):
            entry = self.logic.core.registry.import_model(path, Path(path).name.split(".")[0])
            self.ui.modelComboBox.addItem(entry.id)
            self._parameterNode.model = entry.id

    def onShowGrid(self, show: bool) -> None:
        p = self._parameterNode
        if not p.inputVolume:
            return
        with slicer.util.tryWithErrorDisplay(_("Failed to draw the VoCo grid."), waitCursor=True):
            if show:
                self.logic.core.show_grid(p.inputVolume, p.recipe)
            else:
                self.logic.core.hide_grid(p.inputVolume)

    def onPredict(self) -> None:
        p = self._parameterNode
        with slicer.util.tryWithErrorDisplay(_("Failed to predict the position."), waitCursor=True):
            if p.targetPoint.GetNumberOfControlPoints() == 0:
                raise ValueError(_("Place the target point first."))
            point = [0.0, 0.0, 0.0]
            p.targetPoint.GetNthControlPointPositionWorld(0, point)
            model = self.logic.core.load_position_model(pathText(p.positionCheckpoint) or None, p.recipe)
            table, chart, result = self.logic.core.predict_positions(p.inputVolume, point, model)
            slicer.modules.plots.logic().ShowChartInLayout(chart)
            self.ui.positionLabel.text = _("Predicted and true overlaps are in table '{name}'.").format(
                name=table.GetName())


class VoCoSlicerTest(ScriptedLoadableModuleTest):
    """Runs the logic end to end inside Slicer on real sample CT and a tiny model made on the spot."""

    def setUp(self) -> None:
        slicer.mrmlScene.Clear()

    def runTest(self) -> None:
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
