"""VoCoSlicerLib.runner with real ``vococore`` subprocesses: a failed run reports vococore's message, and cancel
ends the whole process tree within 5 s leaving no output behind. (Progress streaming from ``vococore infer`` into
the logic is checked end to end in test_slicer_training.py, after fine-tuning the model it runs.)"""

from __future__ import annotations

import contextlib
import time

import numpy as np
import psutil
import pytest

from vococore.utils.errors import VoCoError
from VoCoSlicerLib.parameters import vococore_command
from VoCoSlicerLib.runner import BackgroundProcess, ProgressEvent, RunState, partial_files


@contextlib.contextmanager
def _cancelled_on_failure(process: BackgroundProcess):
    """Never leave a test's subprocess running when an assertion fails."""
    try:
        yield
    except BaseException:
        process.cancel()
        raise


def _wait_for(condition, process: BackgroundProcess, timeout_s: float = 120.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        assert process.poll(), f"the run ended early: {process.error_message()}"
        assert time.monotonic() < deadline, "timed out waiting for the run"
        time.sleep(0.05)


def test_progress_line_parsing():
    line = ('{"event": "progress", "stage": "infer", "step": 30, "total": 120, "elapsed_s": 12.0, "eta_s": 30.0, '
            '"metrics": {"loss": 0.25}}')
    event = ProgressEvent.parse(line)
    assert event.fraction == 0.25 and event.metrics == {"loss": 0.25}
    assert event.describe() == "infer 30/120, about 30 s left"
    assert event.metric_text("dice", "loss") == "0.25" and event.metric_text("dice") == "-"
    assert ProgressEvent.parse("INFO vococore: reading CT") is None
    assert ProgressEvent.parse('{"kind": "info"}') is None  # JSON, but not a progress record


def test_failed_run_reports_vococore_error(tmp_path):
    logs = []
    process = BackgroundProcess([*vococore_command(), "info", str(tmp_path / "missing.nii.gz")], on_log=logs.append)
    assert process.start().wait_for_completion(timeout_s=120) is RunState.FAILED
    assert process.returncode == 2
    assert "missing.nii.gz" in process.error_message()
    assert any("missing.nii.gz" in line for line in logs)


def test_refuses_to_overwrite_an_output(tmp_path):
    existing = tmp_path / "result.seg.nrrd"
    existing.write_text("the user's file")
    with pytest.raises(VoCoError, match="output already exists"):
        BackgroundProcess([*vococore_command(), "--version"], outputs=[existing]).start()
    assert existing.read_text() == "the user's file"


@pytest.fixture
def voco_checkpoint(tmp_path):
    """An untrained 'small' VoCo pretraining checkpoint, the model `vococore position` needs."""
    import torch

    from vococore.pretraining.model import VoCoModel
    from vococore.pretraining.pretext import default_backbone
    from vococore.training.checkpoint import build_checkpoint, save_checkpoint

    torch.manual_seed(0)
    model = VoCoModel(default_backbone("small"), "small")
    return save_checkpoint(tmp_path / "voco.pt", build_checkpoint(0, model, backbone=default_backbone("small"),
                                                                  recipe=model.recipe))


def test_cancel_kills_the_process_tree_within_5_s_and_leaves_no_output(tmp_path, sample, voco_checkpoint):
    out = tmp_path / "report"
    inner = " ".join([*vococore_command(), "position", "--model", str(voco_checkpoint), "--input",
                      str(sample("TotalSegCTSmall")), "--random", "20", "--output", str(out)])
    # a shell in front, as Slicer's PythonSlicer launcher is: the real work happens in a child process
    process = BackgroundProcess(["/bin/sh", "-c", f"{inner}; echo finished"], outputs=[out]).start()
    with _cancelled_on_failure(process):
        _wait_for(lambda: (out / "positions.json").exists(), process)  # it is writing its outputs now
    tree = psutil.Process(process.pid).children(recursive=True) + [psutil.Process(process.pid)]
    assert len(tree) >= 2
    start = time.monotonic()
    process.cancel()
    assert time.monotonic() - start < 5.0
    assert not any(p.is_running() and p.status() != psutil.STATUS_ZOMBIE for p in tree)
    assert process.wait_for_completion(timeout_s=10) is RunState.CANCELLED
    assert not out.exists() and partial_files(out / "positions.json") == []


@pytest.fixture
def slow_package(tmp_path):
    """A real model package (untrained MONAI BasicUNet, two labels) whose 1.5 mm grid and 0.75 window overlap make
    inference on TotalSegCT take minutes, so a cancel always lands mid-run, however loaded the machine is."""
    import torch

    from vococore.io import LabelInfo
    from vococore.networks.backbones import BackboneSpec, build_segmenter
    from vococore.segmentation.package import ModelPackage, save_package
    from vococore.preprocessing.preprocessor import PreprocessConfig

    torch.manual_seed(0)
    spec = BackboneSpec(arch="cnn", feature_size=8)
    package = ModelPackage(backbone=spec, labels=[LabelInfo(1, "organ", (1.0, 0.5, 0.0)),
                                                  LabelInfo(2, "bone", (0.9, 0.9, 0.8))],
                           preprocess=PreprocessConfig(spacing=(1.5, 1.5, 1.5), min_size=(32, 32, 32)),
                           roi_size=(32, 32, 32), overlap=0.75)
    return save_package(build_segmenter(spec, out_channels=3), package, tmp_path / "tiny.vocomodel")


def test_cancel_segmentation_leaves_no_file(mrml, sample, tmp_path, slow_package):
    from vococore.io import read_volume
    from VoCoSlicerLib import nodes
    from VoCoSlicerLib.logic import VoCoLogic
    from VoCoSlicerLib.parameters import SegmentParameters

    events = []
    logic = VoCoLogic(mrml.scene, work_dir=tmp_path, on_progress=events.append)
    ct_node = nodes.node_from_volume(read_volume(sample("TotalSegCT")), mrml.scene, "CT")
    process = logic.start_segmentation(ct_node, SegmentParameters(model="", device="cpu"), model_file=slow_package)
    with _cancelled_on_failure(process):
        _wait_for(lambda: bool(events), process)
    start = time.monotonic()
    logic.cancel()
    assert time.monotonic() - start < 5.0
    assert process.wait_for_completion(timeout_s=10) is RunState.CANCELLED
    output = process.outputs[0]
    assert not output.exists() and partial_files(output) == [] and logic.result_node is None


def test_tqdm_bars_are_not_log_lines(tmp_path):
    """vococore's human progress bar (stderr) is dropped; its JSON twin on stdout is the progress."""
    import sys

    script = ("import sys, json; sys.stderr.write('infer:  50%|#####     | 1/2 [00:01<00:01, 1.0s/it]\\r'); "
              "print(json.dumps({'event': 'progress', 'stage': 'infer', 'step': 1, 'total': 2})); "
              "sys.stderr.write('a real warning\\n')")
    logs, events = [], []
    process = BackgroundProcess([sys.executable, "-c", script], on_log=logs.append, on_progress=events.append)
    assert process.start().wait_for_completion(timeout_s=60) is RunState.SUCCEEDED
    assert logs == ["a real warning"] and [e.step for e in events] == [1]
