"""The Train section's logic with a real ``vococore pretrain`` subprocess: the config the module writes runs, loss
progress reaches the callback, a checkpoint is written, and Resume continues from it."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from vococore.utils.errors import VoCoError
from mrml_readers import segment_voxels
from VoCoSlicerLib.logic import VoCoLogic
from VoCoSlicerLib.parameters import PretrainParameters
from VoCoSlicerLib.runner import RunState


def test_pretrain_runs_reports_loss_and_resumes(tmp_path, sample):
    data = tmp_path / "ct"
    data.mkdir()
    shutil.copy(sample("TotalSegCTSmall"), data / "case0.nii.gz")
    out = tmp_path / "run"
    events, finished = [], []
    logic = VoCoLogic(scene=None, work_dir=tmp_path / "work", on_progress=events.append)
    params = PretrainParameters(data=str(data), output_dir=str(out), recipe="small", steps=1, device="cpu")
    process = logic.start_pretraining(params, on_finished=finished.append)
    try:
        assert process.wait_for_completion(timeout_s=240) is RunState.SUCCEEDED, process.error_message()
    finally:
        process.cancel()
    assert finished == [RunState.SUCCEEDED]
    trained = [e for e in events if e.stage == "pretrain" and e.event == "progress"]
    assert [e.step for e in trained] == [1] and all(e.total == 1 for e in trained)
    assert trained[-1].metric_text("loss", "total") != "-"
    assert (out / "checkpoints" / "last.pt").is_file()

    # the same folder again is refused with a reason, unless resuming
    with pytest.raises(VoCoError, match="already holds a run"):
        logic.start_pretraining(params)
    events.clear()
    more = PretrainParameters(data=str(data), output_dir=str(out), recipe="small", steps=2, device="cpu",
                              resume=True)
    process = logic.start_pretraining(more)
    try:
        assert process.wait_for_completion(timeout_s=240) is RunState.SUCCEEDED, process.error_message()
    finally:
        process.cancel()
    steps = [e.step for e in events if e.stage == "pretrain" and e.event == "progress"]
    assert steps == [2]  # continued after step 1, did not start over


def test_finetune_exports_pairs_with_consistent_label_values(mrml, sample, tmp_path):
    """Segments are matched by name across cases; the exported label files and the config say the same."""
    import json

    import numpy as np
    import yaml

    from vococore.io import LabelInfo, read_volume
    from VoCoSlicerLib import nodes
    from VoCoSlicerLib.parameters import FinetuneParameters

    ct = read_volume(sample("TotalSegCTSmall"))
    first, second = np.zeros(ct.shape, np.uint8), np.zeros(ct.shape, np.uint8)
    first[10:30, 10:30, 2:10], first[50:70, 50:70, 5:20] = 1, 2
    second[20:40, 20:40, 2:10] = 1
    pairs = []
    for labels, info in ((first, [LabelInfo(1, "liver", (0.8, 0.4, 0.2)), LabelInfo(2, "spleen", (0.2, 0.4, 0.8))]),
                         (second, [LabelInfo(1, "spleen", (0.2, 0.4, 0.8))])):
        node = nodes.node_from_volume(ct, mrml.scene, "CT")
        pairs.append((node, nodes.segmentation_from_labelmap(labels, ct, info, mrml.scene, "truth", node)))
    logic = VoCoLogic(mrml.scene, work_dir=tmp_path)
    params = FinetuneParameters(output_dir=str(tmp_path / "ft"), steps=1, device="cpu")
    process = logic.start_finetuning(pairs, params)
    try:  # only the export is checked here, while the run goes (its exported files go when it ends)
        assert params.classes == ["liver", "spleen"]
        config_path = Path(process.args[process.args.index("--config") + 1])
        config = yaml.safe_load(config_path.read_text())
        assert config["data"]["classes"] == ["liver", "spleen"]
        assert json.loads(Path(config["data"]["label_table"]).read_text()) == {"1": "liver", "2": "spleen"}
        exported = [read_volume(p) for p in config["data"]["labels"]]
        assert all(e.same_grid(ct) for e in exported)
        np.testing.assert_array_equal(exported[0].array, first)
        np.testing.assert_array_equal(exported[1].array, np.where(second == 1, 2, 0))  # spleen is 2 in every case
        np.testing.assert_array_equal(read_volume(config["data"]["images"][1]).array, ct.array)
    finally:
        process.cancel()
    process.wait_for_completion(timeout_s=30)
    assert not config_path.parent.exists()  # the run's CT and label copies are removed


def test_finetune_from_loaded_nodes_then_segment_with_the_result(mrml, sample, tmp_path):
    """Volume + segmentation nodes -> vococore finetune (small CNN, 2 steps) -> best.vocomodel with the segment
    names -> vococore infer with it -> a segmentation node with those names. Loss and Dice reach the callback."""
    import numpy as np

    from vococore.io import LabelInfo, read_volume
    from VoCoSlicerLib import nodes
    from VoCoSlicerLib.parameters import FinetuneParameters, SegmentParameters

    ct = read_volume(sample("TotalSegCTSmall"))
    truth = read_volume(sample("TotalSegCTSmallLabels")).array
    ct_node = nodes.node_from_volume(ct, mrml.scene, "CT")
    seg = nodes.segmentation_from_labelmap(np.where(np.isin(truth, [1, 5]), truth, 0), ct,
                                           [LabelInfo(5, "liver", (0.8, 0.4, 0.2)),
                                            LabelInfo(1, "spleen", (0.6, 0.2, 0.6))], mrml.scene, "truth", ct_node)
    events = []
    logic = VoCoLogic(mrml.scene, work_dir=tmp_path / "work", on_progress=events.append)
    params = FinetuneParameters(output_dir=str(tmp_path / "ft"), network="cnn", steps=2, device="cpu")
    process = logic.start_finetuning([(ct_node, seg)], params)
    try:
        assert process.wait_for_completion(timeout_s=300) is RunState.SUCCEEDED, process.error_message()
    finally:
        process.cancel()
    training = [e for e in events if e.event == "progress" and "total" in e.metrics]
    assert training and training[-1].step == 2
    validation = [e for e in events if e.stage == "validate" and e.event == "end"]
    assert validation and 0.0 <= float(validation[-1].metric_text("mean_dice")) <= 1.0
    package = tmp_path / "ft" / "best.vocomodel"
    assert package.is_file()

    events.clear()
    finished = []

    def keep(state, node):  # what vococore wrote, read before the run's temporary folder is removed
        finished.append((node, read_volume(logic.process.outputs[0]) if node is not None else None))
    run = logic.start_segmentation(ct_node, SegmentParameters(model="", device="cpu"), model_file=package,
                                   on_finished=keep)
    try:
        assert run.wait_for_completion(timeout_s=300) is RunState.SUCCEEDED, run.error_message()
    finally:
        run.cancel()
    # progress streamed in order from start to end
    assert events[0].event == "start" and events[-1].event == "end" and {e.stage for e in events} == {"infer"}
    steps = [e.step for e in events]
    assert steps == sorted(steps) and steps[-1] == events[-1].total
    # the node holds the model's segment names and colours, voxel for voxel what vococore wrote on the CT grid
    result, written = finished[0]
    assert not run.outputs[0].parent.exists()  # the CT copy and the output went with the run's folder
    assert result is logic.result_node and result.GetName() == "CT VoCo"
    segmentation = result.GetSegmentation()
    found = {segmentation.GetNthSegment(i).GetName(): segmentation.GetNthSegment(i)
             for i in range(segmentation.GetNumberOfSegments())}
    assert written.array.any(), "the model labelled no voxel: the segment check below would prove nothing"
    assert written.same_grid(ct)
    from vococore.segmentation.package import read_package_info

    colors = {"liver": (0.8, 0.4, 0.2), "spleen": (0.6, 0.2, 0.6)}
    labels = {li.name: li.value for li in read_package_info(package).labels}  # the model's channel per name
    assert sorted(labels) == ["liver", "spleen"]
    # a briefly trained model may miss one name, but every label it wrote is a segment and no name is invented
    assert found and set(found) == {name for name, value in labels.items() if np.any(written.array == value)}
    for name, value in labels.items():
        if name in found:
            np.testing.assert_allclose(found[name].GetColor(), colors[name], atol=1e-5)
            np.testing.assert_array_equal(segment_voxels(result, name, ct), written.array == value)
        else:
            assert not np.any(written.array == value)
