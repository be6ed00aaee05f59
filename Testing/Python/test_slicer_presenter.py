"""The module's presenter played as a Slicer user meets it, on real MRML (slicer-core), real CT, real model
packages and real ``vococore`` subprocesses: load a CT, pick a model, Apply, progress, Cancel; a fresh scene, place a
point, predict; the grid following volume and recipe; device and estimates following the model."""

from __future__ import annotations

import json
import time
from pathlib import Path

import numpy as np
import pytest

from vococore.utils.errors import VoCoError
from VoCoSlicerLib import device, nodes
from VoCoSlicerLib.presenter import TAB_FINETUNE, TAB_PRETRAIN, ModuleState, Presenter, path_text
from VoCoSlicerLib.registry import ModelRegistry
from VoCoSlicerLib.runner import RunState


def _package(path: Path, spacing: float, overlap: float = 0.5) -> Path:
    """A real model package: untrained MONAI BasicUNet with two named labels."""
    import torch

    from vococore.io import LabelInfo
    from vococore.networks.backbones import BackboneSpec, build_segmenter
    from vococore.preprocessing.preprocessor import PreprocessConfig
    from vococore.segmentation.package import ModelPackage, save_package

    torch.manual_seed(0)
    spec = BackboneSpec(arch="cnn", feature_size=8)
    package = ModelPackage(backbone=spec, labels=[LabelInfo(1, "organ", (1.0, 0.5, 0.0)),
                                                  LabelInfo(2, "bone", (0.9, 0.9, 0.8))],
                           preprocess=PreprocessConfig(spacing=(spacing,) * 3, min_size=(32, 32, 32)),
                           roi_size=(32, 32, 32), overlap=overlap, description="tiny test model")
    return save_package(build_segmenter(spec, out_channels=3), package, path)


@pytest.fixture
def presenter(mrml, tmp_path):
    from VoCoSlicerLib.logic import VoCoLogic

    logic = VoCoLogic(mrml.scene, registry=ModelRegistry(cache_dir=tmp_path / "models"), work_dir=tmp_path / "work")
    errors = []
    p = Presenter(ModuleState(), logic, on_error=lambda title, detail: errors.append((title, detail)),
                  probe_gpu=device.gpu_facts, runs_dir=tmp_path / "runs")
    p.errors = errors
    p.wait_for_gpu_check()
    yield p
    logic.cancel()


def _load(mrml, sample, name="TotalSegCTSmall", node_name="CT"):
    from vococore.io import read_volume

    return nodes.node_from_volume(read_volume(sample(name)), mrml.scene, node_name)


def _run_until(presenter, condition, timeout_s=180.0):
    deadline = time.monotonic() + timeout_s
    while not condition():
        running = presenter.poll()
        assert running or condition(), f"the run ended early: {presenter.texts} {presenter.errors}"
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.05)


def test_load_ct_pick_model_apply_progress_result_and_no_leftovers(presenter, mrml, sample, tmp_path):
    view = presenter.view()
    assert not view.actions["apply"].enabled and view.actions["apply"].reason == "Select an input CT volume."
    presenter.state.inputVolume = _load(mrml, sample)
    with pytest.raises(VoCoError, match=r"only VoCo model packages \(\.vocomodel\)"):
        presenter.import_model(tmp_path / "weights.pt")
    model_id = presenter.import_model(_package(tmp_path / "tiny.vocomodel", spacing=6.0))
    assert presenter.state.model == model_id == "tiny"
    view = presenter.view()
    assert ("tiny", "tiny test model") in view.models
    card = view.labels["model_card"]
    assert card.startswith("tiny test model: 2 classes,") and "license user-supplied" in card
    assert view.actions["apply"].enabled and view.actions["apply"].text == "Apply"
    presenter.state.device = "cpu"
    presenter.apply()
    view = presenter.view()
    assert view.running == "segment" and view.actions["apply"].text == "Cancel" and view.actions["apply"].enabled
    assert not view.actions["start_training"].enabled and "segment run is going" in \
        view.actions["start_training"].reason
    _run_until(presenter, lambda: presenter.progress not in (None, 0.0) or presenter.running is None)
    _run_until(presenter, lambda: presenter.running is None)
    assert presenter.texts["status"] == "segment succeeded", presenter.errors
    seg = presenter.logic.result_node
    assert seg is not None and seg.GetName() == "CT VoCo" and seg.GetDisplayNode() is not None
    assert presenter.view().actions["apply"].text == "Apply"
    assert list((tmp_path / "work").iterdir()) == []  # the run's CT copy and output folder are gone
    export = presenter.view().actions["export_dicom_seg"]  # a NIfTI-loaded input: no DICOM images to reference
    assert not export.enabled and export.reason.startswith("The input volume 'CT' was not loaded from DICOM")
    with pytest.raises(VoCoError, match="not loaded from DICOM"):
        presenter.export_dicom_seg()


def test_cancel_while_segmenting_leaves_nothing(presenter, mrml, sample, tmp_path):
    presenter.state.inputVolume = _load(mrml, sample, "TotalSegCT")
    presenter.import_model(_package(tmp_path / "slow.vocomodel", spacing=1.5, overlap=0.75))
    presenter.state.device = "cpu"
    presenter.apply()
    _run_until(presenter, lambda: presenter.texts["progress"].startswith("infer"))
    start = time.monotonic()
    presenter.apply()  # Apply is Cancel now
    assert time.monotonic() - start < 5.0
    _run_until(presenter, lambda: presenter.running is None, timeout_s=10)
    assert presenter.texts["status"] == "segment cancelled" and presenter.errors == []
    assert mrml.scene.GetNodesByClass("vtkMRMLSegmentationNode").GetNumberOfItems() == 0
    assert list((tmp_path / "work").iterdir()) == []


def test_fresh_scene_place_point_predict_table_and_chart(presenter, mrml, sample):
    presenter.state.inputVolume = ct = _load(mrml, sample)
    presenter.state.recipe = "small"
    view = presenter.view()
    assert view.actions["place_point"].enabled and not view.actions["predict"].enabled
    assert view.actions["predict"].reason == "Place the target point first."
    assert "untrained small encoder" in view.labels["position_model"]
    points = presenter.target_point_list()  # a fresh scene has no point list: one is made
    assert points.IsA("vtkMRMLMarkupsFiducialNode") and presenter.state.targetPoint is points
    assert points.GetMaximumNumberOfControlPoints() == 1 and presenter.target_point_list() is points
    bounds = [0.0] * 6
    ct.GetRASBounds(bounds)
    points.AddControlPointWorld(*[(bounds[2 * a] + bounds[2 * a + 1]) / 2 for a in range(3)])
    assert presenter.view().actions["predict"].enabled
    table, chart = presenter.predict()
    assert table.GetNumberOfRows() == 9 and chart.GetNumberOfPlotSeriesNodes() == 2
    assert presenter.view().labels["position"] == f"Predicted and true overlaps are in table '{table.GetName()}'."
    presenter.state.positionCheckpoint = Path("/runs/pretrain/checkpoints/last.pt")
    assert presenter.view().labels["position_model"].startswith("Predictions from the pretraining checkpoint last.pt")


def test_grid_follows_the_input_volume_and_the_recipe(presenter, mrml, sample):
    from test_slicer_grid import _expected_boxes
    from VoCoSlicerLib import grid

    first, second = _load(mrml, sample, node_name="A"), _load(mrml, sample, node_name="B")
    presenter.state.inputVolume, presenter.state.recipe = first, "small"
    assert presenter.view().labels["grid"] == ""
    presenter.show_grid(True)  # the preprocessing that places the grid runs on a worker thread, not here
    assert grid.grid_nodes(mrml.scene, first) == [] and presenter.running is None
    assert presenter.view().labels["grid"] == "Preprocessing 'A' as the small recipe does, to place its grid..."
    presenter.wait_for_grid()
    rois = grid.grid_nodes(mrml.scene, first)
    assert len(rois) == 9 and presenter.view().labels["grid"] == "9 base crops of the small recipe on 'A'."
    _, expected = _expected_boxes(nodes.volume_from_node(first), "small")  # where the preprocessing puts them
    for roi, (center, size) in zip(rois, expected):
        np.testing.assert_allclose(roi.GetCenterWorld(), center, atol=1e-3)
        np.testing.assert_allclose(roi.GetSize(), size, atol=1e-3)
    presenter.state.recipe = "v1"
    presenter.state_changed()
    assert grid.grid_nodes(mrml.scene, first) == []  # the old grid goes at once
    presenter.wait_for_grid()
    assert len(grid.grid_nodes(mrml.scene, first)) == 16  # v1: 4x4 bases
    presenter.state.recipe = "small"
    presenter.state_changed()
    presenter.state.inputVolume = second  # changed before the grid on 'A' came: that one is never drawn
    presenter.state_changed()
    _run_until(presenter, lambda: presenter._grid_job is None)  # the module's timer draws the grid
    assert grid.grid_nodes(mrml.scene, first) == [] and len(grid.grid_nodes(mrml.scene, second)) == 9
    assert presenter.view().labels["grid"] == "9 base crops of the small recipe on 'B'."
    presenter.show_grid(False)
    assert mrml.scene.GetNodesByClass("vtkMRMLMarkupsROINode").GetNumberOfItems() == 0
    assert presenter.view().labels["grid"] == ""


def test_device_auto_says_why_the_gpu_is_refused_and_gives_the_cpu_estimate(presenter, mrml, sample):
    import os

    import torch

    presenter.state.inputVolume = _load(mrml, sample)
    presenter.state.model = "VoComni_B"
    real = device.probe_gpu()  # the real check, in a child process: this process keeps no CUDA context
    assert real["pid"] != os.getpid() and not torch.cuda.is_initialized()
    facts = {"torch": "2.13.0", "cuda_build": "12.8", "available": True, "name": "GeForce GTX 1050",
             "capability": [6, 1], "arch_list": ["sm_61"], "free_gb": 1.5, "total_gb": 2.0}
    cases = [(real, "no CUDA GPU is usable" if not real["available"] else None),
             (facts, "GeForce GTX 1050 has 1.5 GiB free of 2.0 GiB"),
             ({**facts, "capability": [5, 0], "free_gb": 8.0, "total_gb": 8.0}, "is sm_50, but PyTorch 2.13.0")]
    for gpu, reason in cases:
        if reason is None:
            continue
        presenter.gpu = gpu
        view = presenter.view()
        assert view.labels["device"].startswith(f"GPU not used: ") and reason in view.labels["device"]
        assert "The run falls back to the CPU: about " in view.labels["device"]
        assert view.actions["apply"].enabled
    presenter.state.device = "cuda"
    view = presenter.view()
    assert not view.actions["apply"].enabled and "sm_50" in view.actions["apply"].reason


def test_estimates_follow_the_model_and_the_tab(presenter, mrml, sample):
    presenter.state.inputVolume = _load(mrml, sample, "TotalSegCT")
    presenter.state.device = "cpu"
    texts = {}
    for model in ("VoComni_B", "VoComni_L"):
        presenter.state.model = model
        texts[model] = presenter.view().labels["segment_estimate"]
    assert texts["VoComni_B"] != texts["VoComni_L"]  # feature size 48 vs 96
    view = presenter.view()
    assert "20 classes, 1.17 GB (downloaded on first use), license Apache-2.0" in view.labels["model_card"]
    presenter.set_tab(TAB_PRETRAIN)
    assert presenter.view().labels["train_estimate"].startswith("Pretraining: about ")
    presenter.set_tab(TAB_FINETUNE)
    swin = presenter.view().labels["train_estimate"]
    assert swin.startswith("Fine-tuning: about ") and swin != presenter.view().labels["segment_estimate"]
    presenter.state.finetuneNetwork = "cnn"
    assert presenter.view().labels["train_estimate"].startswith("Fine-tuning: no measured rate")


def test_pretraining_on_loaded_volumes_under_a_per_user_folder_survives_scene_close(presenter, mrml, sample, tmp_path):
    import yaml

    presenter.state.recipe, presenter.state.pretrainSteps, presenter.state.device = "small", 1, "cpu"
    presenter.state.pretrainOutput = Path("")  # an empty path field reads back as '.'
    view = presenter.view()
    assert not view.actions["start_training"].enabled and "load CT volumes" in view.actions["start_training"].reason
    _load(mrml, sample, node_name="A")
    _load(mrml, sample, "TotalSegCT", node_name="B")
    view = presenter.view()
    assert view.labels["train_data"] == "Data: 2 loaded volume(s)"
    out = Path(view.labels["train_output"].removeprefix("Output and cache: "))
    assert out.parent == tmp_path / "runs" and out.name.startswith("pretrain-") and "." not in str(out.name)
    presenter.start_training()
    assert presenter.view().actions["start_training"].text == "Cancel"
    config = yaml.safe_load(next((tmp_path / "work").glob("pretrain-*/pretrain.yaml")).read_text())
    assert config["output_dir"] == str(out) and config["data"] == str(out / "data")
    assert config["workers"] <= 4 and config["cache_limit_gb"] <= 50
    presenter.scene_about_to_close()
    mrml.scene.Clear(0)
    presenter.scene_closed(ModuleState())
    _run_until(presenter, lambda: presenter.running is None, timeout_s=300)
    assert presenter.texts["status"] == "pretrain succeeded", presenter.errors
    assert (out / "checkpoints" / "last.pt").is_file() and len(list((out / "data").glob("*.nii.gz"))) == 2
    # the loss curve: the run's one step, the value its metrics.jsonl records and the loss label shows
    logged = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert presenter.view().curves == {"loss": [(1, logged[-1]["total"])], "dice": []}
    assert presenter.texts["loss"] == f"{logged[-1]['total']:.4g}"
    assert list((tmp_path / "work").iterdir()) == []
    # resuming is offered only with the folder chosen and a checkpoint in it
    presenter.state.recipe, presenter.state.pretrainData = "small", Path(out / "data")
    presenter.state.pretrainOutput = out
    assert "already holds a run" in presenter.view().actions["start_training"].reason
    presenter.state.resume = True
    assert presenter.view().actions["start_training"].enabled


def test_scene_close_cancels_a_segmentation_and_finetune_tab_start_cancel(presenter, mrml, sample, tmp_path):
    from vococore.io import LabelInfo

    ct = _load(mrml, sample)
    labels = np.zeros(nodes.volume_from_node(ct).shape, np.uint8)
    labels[20:60, 20:60, 5:20] = 1
    seg = nodes.segmentation_from_labelmap(labels, nodes.volume_from_node(ct), [LabelInfo(1, "organ", (1, 0, 0))],
                                           mrml.scene, "truth", ct)
    presenter.set_tab(TAB_FINETUNE)
    assert presenter.view().actions["start_training"].reason == "Select the training CT volume and its segmentation."
    s = presenter.state
    s.finetuneVolume, s.finetuneSegmentation, s.finetuneNetwork = ct, seg, "cnn"
    s.finetuneSteps, s.device = 100000, "cpu"
    presenter.start_training()
    _run_until(presenter, lambda: presenter.texts["progress"].startswith("finetune "))
    assert presenter.view().actions["start_training"].text == "Cancel"
    presenter.scene_about_to_close()  # fine-tuning reads its exported files only: it keeps going
    assert presenter.poll() and presenter.running == "finetune"
    presenter.start_training()  # Start is Cancel now
    _run_until(presenter, lambda: presenter.running is None, timeout_s=10)
    assert presenter.texts["status"] == "finetune cancelled"
    assert list((tmp_path / "work").iterdir()) == []
    # a segmentation puts its result into the scene: closing the scene cancels it
    s.inputVolume = _load(mrml, sample, "TotalSegCT")
    presenter.import_model(_package(tmp_path / "slow.vocomodel", spacing=1.5, overlap=0.75))
    presenter.apply()
    presenter.scene_about_to_close()
    _run_until(presenter, lambda: presenter.running is None, timeout_s=10)
    assert presenter.texts["status"] == "segment cancelled"


def test_empty_path_fields_show_nothing():
    assert path_text(Path("")) == "" and path_text(None) == "" and path_text(".") == ""
    assert path_text(Path("/data/ct")) == "/data/ct"


def test_widget_binds_every_button_and_label_to_what_the_presenter_shows(presenter, mrml, sample):
    """VoCoSlicer.py's BUTTONS and LABELS tables name widgets of the .ui and actions/labels of the view."""
    import ast
    import xml.etree.ElementTree as ET

    module = Path(__file__).resolve().parents[2] / "VoCoSlicer"
    tables = {}
    for node in ast.parse((module / "VoCoSlicer.py").read_text()).body:
        if isinstance(node, ast.Assign) and getattr(node.targets[0], "id", "") in ("BUTTONS", "LABELS"):
            tables[node.targets[0].id] = ast.literal_eval(node.value)
    widgets = {w.get("name") for w in ET.parse(module / "Resources" / "UI" / "VoCoSlicer.ui").iter("widget")}
    assert set(tables["BUTTONS"]) | set(tables["LABELS"]) <= widgets
    presenter.state.inputVolume = _load(mrml, sample)
    for tab in (TAB_PRETRAIN, TAB_FINETUNE):
        presenter.set_tab(tab)
        view = presenter.view()
        assert set(tables["BUTTONS"].values()) <= set(view.actions)
        shown = {key for keys in tables["LABELS"].values() for key in keys}
        assert shown - set(view.labels) <= {"position"}  # the prediction's table name, after the first prediction
        assert set(view.labels) <= shown  # nothing the presenter says goes unshown
