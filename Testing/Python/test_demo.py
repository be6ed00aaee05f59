"""The main job with its smallest settings: every output exists, is consistent and reloads, and its terminal
output carries no alarming noise.

One run of ``python -m vococore_demo --quick`` (module-scoped, a real subprocess, as a user starts it) feeds all
checks: the Slicer scene reloads with slicer-core, the PNGs are real images of the expected size, the Dice in the
report equals ``vococore evaluate`` on the written files, the held-out pretext accuracies in the report are what
the saved predictions give, all predictors on the same crops, and stdout/stderr hold no VTK or MONAI chatter.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import types
from pathlib import Path

import numpy as np
import pytest
import torch

from seg_model import run_cli
from vococore_demo import DemoSettings, run_demo
from vococore_demo.figures import SIZES

REPO = Path(__file__).resolve().parents[2]
# Lines a newcomer takes for a failure, or that only a developer needs: VTK's red ERR and "Info: In <file>, line"
# messages (slicer-core 5.11's vtkArchive prints two per zipped file), MONAI's weight-copy INFO line, warnings of
# any kind (Python's FutureWarning, logging's WARNING, VTK's Warning) and tracebacks.
NOISE = re.compile(r"ERR|Warning|WARNING|Traceback|Info: In|vtkArchive|Zip: adding|model updated| - INFO - ")


@pytest.fixture(scope="module")
def demo(tmp_path_factory):
    """The quick main job run as ``python -m vococore_demo``: its output folder, printed stage seconds and log."""
    out = tmp_path_factory.mktemp("demo") / "out"
    path = os.pathsep.join([str(REPO / "VoCoCore"), str(REPO / "VoCoSlicer"), os.environ.get("PYTHONPATH", "")])
    # the thread count of this process: the checks below recompute the run's numbers here, to 1e-6
    env = {**os.environ, "PYTHONPATH": path.rstrip(os.pathsep), "OMP_NUM_THREADS": str(torch.get_num_threads())}
    command = [sys.executable, "-m", "vococore_demo", "--quick", "--device", "cpu", "--output", str(out)]
    proc = subprocess.run(command, capture_output=True, text=True, env=env, timeout=1500)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-4000:]
    seconds = {m.group(1): int(m.group(2)) for m in re.finditer(r"^\[\d/\d\] ([^:\n]+): (\d+) s$", proc.stdout, re.M)}
    return types.SimpleNamespace(output=out, seconds=seconds, stdout=proc.stdout, stderr=proc.stderr)


def test_output_carries_no_alarming_noise(demo):
    """Every stage printed its header and time, and nothing on stdout or stderr looks like an error or chatter."""
    noisy = [line for line in (demo.stdout + demo.stderr).splitlines() if NOISE.search(line)]
    assert not noisy, "\n".join(noisy[:10])
    assert "Done in" in demo.stdout and len(demo.seconds) == 6


def test_outputs_exist(demo):
    out = demo.output
    for name in ["report.md", "scene.mrb", "model/voco_demo_organs.vocomodel", "reference_dicom.nii.gz",
                 "segmentation_pretrained.seg.nrrd", "segmentation_scratch.seg.nrrd", "positions/positions.json",
                 "pretrain/metrics.jsonl", "pretext/heldout.npz", *SIZES]:
        assert (out / name).is_file(), name
    assert set(demo.seconds) == {"pretraining", "held-out pretext", "fine-tuning", "inference", "positions",
                                 "figures"}


def test_figures_are_real_images_of_the_expected_size(demo):
    import matplotlib.image as mpimg

    for name, (width, height) in SIZES.items():
        image = mpimg.imread(demo.output / name)
        assert image.shape[:2] == (height, width), name
        assert image[..., :3].std() > 0.01, f"{name} is blank"


def test_report_dice_equals_vococore_evaluate(demo):
    """Each Dice in the report's table is what the CLI computes from the written prediction and reference."""
    report = (demo.output / "report.md").read_text()
    organs = DemoSettings().organs
    for column, model in ((1, "pretrained"), (2, "scratch")):
        proc = run_cli("evaluate", "--pred", str(demo.output / f"segmentation_{model}.seg.nrrd"),
                       "--ref", str(demo.output / "reference_dicom.nii.gz"), "--labels", "1", "2", "3", "4", "--json")
        scores = {s["value"]: s for s in json.loads(proc.stdout)["labels"]}
        for value, organ in enumerate(organs, start=1):
            row = re.search(rf"^\| {organ} \| ([^|]+) \| ([^|]+) \|", report, re.M)
            assert row, organ
            shown, score = row.group(column).strip(), scores[value]
            if score["ref_voxels"] == 0 or score["pred_voxels"] == 0:  # Dice 0, or None when in neither
                dice = ("absent" if score.get("absent_from_reference") else
                        "n/a" if score["dice"] is None else f"{score['dice']:.3f}")
                expected = f"{dice} ({score['pred_voxels']} predicted / {score['ref_voxels']} reference voxels)"
                assert shown == expected, (organ, model, shown)
            else:
                assert shown == f"{score['dice']:.3f}", (organ, model, shown, score)


def _accuracy(predicted: np.ndarray, true: np.ndarray) -> float:
    """Share of rows whose highest predicted base is one with most true overlap (written here, not imported)."""
    hits = [true[i, int(np.argmax(row))] >= true[i].max() - 1e-9 for i, row in enumerate(predicted)]
    return float(np.mean(hits))


def test_report_pretext_accuracy_equals_saved_predictions(demo):
    """Each per-seed accuracy in the report's lead table is what the saved predictions give on the saved truth."""
    report = (demo.output / "report.md").read_text()
    saved = np.load(demo.output / "pretext" / "heldout.npz")
    seeds = DemoSettings.quick(demo.output).heldout_seeds
    assert seeds >= 3
    for name in ("pretrained", "untrained", "constant"):
        row = re.search(rf"^\| {name}: [^|]+ \| [^|]+ \| ([^|]+) \|", report, re.M)
        assert row, name
        shown = [float(v) for v in row.group(1).split(" / ")]
        expected, exact = [], []
        for seed in range(seeds):
            true = saved[f"true_{seed}"]
            predicted = saved[f"{name}_{seed}"] if name != "constant" else np.tile(saved["constant"], (len(true), 1))
            exact.append(_accuracy(predicted, true))
            expected.append(round(exact[-1], 3))
        assert shown == expected, (name, shown, expected)
        assert f"| {np.mean(exact):.3f} ± {np.std(exact):.3f} |" in row.group(0), (name, row.group(0))


def test_pretext_baselines_scored_on_the_same_crops(demo, sample):
    """Redraw each seed's crops: the saved truth is theirs, and the saved pretrained and untrained overlaps are what
    each model predicts for those very crops (checked for a few targets, one target per batch)."""
    from vococore.io import read_volume
    from vococore.pretraining.evaluate_pretext import heldout_crops, untrained_like
    from vococore.pretraining.model import load_voco_model

    saved = np.load(demo.output / "pretext" / "heldout.npz")
    model = load_voco_model(demo.output / "pretrain" / "checkpoints" / "last.pt")
    volume = read_volume(sample("TotalSegDICOM"))
    settings = DemoSettings.quick(demo.output)
    for seed in range(settings.heldout_seeds):
        crops = heldout_crops(volume, model.recipe, settings.heldout_crops, seed)
        np.testing.assert_array_equal(saved[f"centers_{seed}"], crops.centers)
        np.testing.assert_array_equal(saved[f"true_{seed}"], crops.true)
        untrained = untrained_like(model, seed)
        for i in (0, len(crops.targets) - 1):
            bases, target = crops.bases[crops.region[i]], crops.targets[i:i + 1]
            for name, net in (("pretrained", model), ("untrained", untrained)):
                np.testing.assert_allclose(saved[f"{name}_{seed}"][i],
                                           net.predict_overlaps(bases, target)[0].double().numpy(), atol=1e-6)


def test_axial_figure_is_radiological(sample, tmp_path):
    """The liver (on the patient's right) appears on the image's left in the axial segmentation figure."""
    import matplotlib.image as mpimg

    from vococore.io import read_volume
    from vococore_demo.figures import plot_segmentation

    ct, labels = read_volume(sample("TotalSegCT")), read_volume(sample("TotalSegCTLabels"))
    liver = (np.asarray(labels.array) == 5).astype(np.uint8)  # TotalSegmentator v2: 5 = liver
    plot_segmentation(ct.array, ct.affine, liver, liver, {1: (0.0, 0.0, 1.0)}, tmp_path, "liver")
    image = mpimg.imread(tmp_path / "segmentation.png")[..., :3]
    blue = (image[..., 2] - image[..., 0]) > 0.3  # the blue overlay; the orange direction letters have no blue
    width = image.shape[1]
    for lo, hi in ((0, width // 2), (width // 2, width)):  # prediction panel, reference panel
        columns = np.nonzero(blue[:, lo:hi])[1]
        assert columns.size > 500
        assert columns.mean() < (hi - lo) / 2, "liver drawn on the image's right: not radiological"


def test_report_numbers_come_from_the_run(demo):
    """Stage times and loss means in the report are the run's own (not constants)."""
    report = (demo.output / "report.md").read_text()
    for stage, seconds in demo.seconds.items():  # as printed on the terminal, whole seconds
        assert re.search(rf"^\| {stage} \| [^|]+ \| {seconds} \|", report, re.M), stage
    records = [json.loads(line) for line in (demo.output / "pretrain" / "metrics.jsonl").read_text().splitlines()]
    n = max(1, min(10, len(records) // 2))
    first = np.mean([r["total"] for r in records[:n]])
    assert f"| total | {first:.4f} |" in report


def test_scene_reloads_with_slicer_core(demo, tmp_path):
    from VoCoSlicerLib.headless import headless_scene
    from mrml_readers import table_values

    ctx = headless_scene(tmp_path / "cache")
    assert ctx.scene.ReadFromMRB(str(demo.output / "scene.mrb"))
    scene = ctx.scene

    def nodes(cls):
        found = scene.GetNodesByClass(cls)
        return [found.GetItemAsObject(i) for i in range(found.GetNumberOfItems())]

    volumes = nodes("vtkMRMLScalarVolumeNode")
    assert len(volumes) == 2 and all(v.GetImageData() is not None for v in volumes)
    rois = nodes("vtkMRMLMarkupsROINode")
    assert len(rois) == 9
    segmentations = nodes("vtkMRMLSegmentationNode")
    assert len(segmentations) == 1
    names = {segmentations[0].GetSegmentation().GetNthSegment(i).GetName()
             for i in range(segmentations[0].GetSegmentation().GetNumberOfSegments())}
    assert names <= set(DemoSettings().organs) and names
    tables = nodes("vtkMRMLTableNode")
    assert len(tables) == 1
    predicted, true = table_values(tables[0])
    positions = json.loads((demo.output / "positions" / "positions.json").read_text())
    # the scene stores tables as text with 6 significant digits
    np.testing.assert_allclose(predicted, positions["subvolumes"][0]["predicted"], rtol=1e-5)
    np.testing.assert_allclose(true, positions["subvolumes"][0]["true"], rtol=1e-12)


def test_refuses_to_overwrite_without_flag(demo):
    from vococore.utils.errors import VoCoError

    with pytest.raises(VoCoError, match="--overwrite"):
        run_demo(DemoSettings.quick(demo.output))


def test_vtk_messages_reach_the_log_not_the_terminal(tmp_path, caplog, capfd):
    """Writing a real .mrb makes slicer-core print vtkArchive "Info:" lines and reading a missing file makes VTK
    print an error: inside ``vtk_messages_to_log`` neither reaches the terminal, the info goes to DEBUG and the
    error to WARNING (not lost)."""
    import logging

    import vtk
    from VoCoSlicerLib.headless import headless_scene, vtk_messages_to_log

    ctx = headless_scene(tmp_path / "cache")
    ctx.scene.AddNewNodeByClass("vtkMRMLScalarVolumeNode")
    reader = vtk.vtkXMLImageDataReader()
    reader.SetFileName(str(tmp_path / "missing.vti"))
    capfd.readouterr()
    with caplog.at_level(logging.DEBUG, logger="VoCoSlicerLib.headless"), vtk_messages_to_log():
        assert ctx.scene.WriteToMRB(str(tmp_path / "scene.mrb"))
        reader.Update()
    terminal = "".join(capfd.readouterr())
    assert "Info:" not in terminal and "ERROR" not in terminal, terminal
    levels = {r.levelno for r in caplog.records if "Zip: adding" in r.getMessage()}
    assert levels == {logging.DEBUG}
    errors = [r for r in caplog.records if "missing.vti" in r.getMessage()]
    assert errors and all(r.levelno == logging.WARNING for r in errors)
    ctx.scene.Clear(1)
