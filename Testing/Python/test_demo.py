"""The main job with its smallest settings: every output exists, is consistent and reloads.

One run of the pipeline (module-scoped) feeds all checks: the Slicer scene reloads with slicer-core, the PNGs are
real images of the expected size, and the Dice in the report equals ``vococore evaluate`` on the written files.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys

import numpy as np
import pytest

from vococore_demo import DemoSettings, run_demo
from vococore_demo.figures import SIZES


@pytest.fixture(scope="module")
def demo(tmp_path_factory):
    out = tmp_path_factory.mktemp("demo") / "out"
    return run_demo(DemoSettings.quick(out, device="cpu"))


def test_outputs_exist(demo):
    out = demo.output
    for name in ["report.md", "scene.mrb", "model/voco_demo_organs.vocomodel", "reference_dicom.nii.gz",
                 "segmentation_pretrained.seg.nrrd", "segmentation_scratch.seg.nrrd", "positions/positions.json",
                 "pretrain/metrics.jsonl", *SIZES]:
        assert (out / name).is_file(), name
    assert set(demo.seconds) == {"pretraining", "fine-tuning", "inference", "positions", "figures"}


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
        proc = subprocess.run(
            [sys.executable, "-m", "vococore", "evaluate", "--pred", str(demo.output / f"segmentation_{model}.seg.nrrd"),
             "--ref", str(demo.output / "reference_dicom.nii.gz"), "--labels", "1", "2", "3", "4", "--json"],
            capture_output=True, text=True, timeout=600)
        assert proc.returncode == 0, proc.stderr
        scores = {s["value"]: s for s in json.loads(proc.stdout)["labels"]}
        for value, organ in enumerate(organs, start=1):
            row = re.search(rf"^\| {organ} \| ([^|]+) \| ([^|]+) \|", report, re.M)
            assert row, organ
            shown, score = row.group(column).strip(), scores[value]
            if score["ref_voxels"] == 0:
                assert shown == f"absent ({score['pred_voxels']} voxels predicted)", (organ, model, shown)
            else:
                assert shown == f"{score['dice']:.3f}", (organ, model, shown, score)


def test_report_numbers_come_from_the_run(demo):
    """Stage times and loss means in the report are the run's own (not constants)."""
    report = (demo.output / "report.md").read_text()
    for stage, seconds in demo.seconds.items():
        assert re.search(rf"^\| {stage} \| [^|]+ \| {seconds:.0f} \|", report, re.M), stage
    records = [json.loads(line) for line in (demo.output / "pretrain" / "metrics.jsonl").read_text().splitlines()]
    n = max(1, min(10, len(records) // 2))
    first = np.mean([r["total"] for r in records[:n]])
    assert f"| total | {first:.4f} |" in report


def test_scene_reloads_with_slicer_core(demo, tmp_path):
    pytest.importorskip("slicer")
    from VoCoSlicerLib.headless import headless_scene
    from VoCoSlicerLib.position import table_values

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
