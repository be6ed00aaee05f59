"""The Train section's logic with a real ``vococore pretrain`` subprocess: the config the module writes runs, loss
progress reaches the callback, a checkpoint is written, and Resume continues from it."""

from __future__ import annotations

import shutil
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "VoCoSlicer"))

from vococore.errors import VoCoError  # noqa: E402
from VoCoSlicerLib.logic import VoCoLogic  # noqa: E402
from VoCoSlicerLib.parameters import PretrainParameters  # noqa: E402
from VoCoSlicerLib.runner import RunState  # noqa: E402


def _has_command(name: str) -> bool:
    from vococore.cli import COMMANDS

    return name in COMMANDS


@pytest.mark.skipif(not _has_command("pretrain"), reason="vococore pretrain is not registered in the CLI yet")
def test_pretrain_runs_reports_loss_and_resumes(tmp_path, sample):
    data = tmp_path / "ct"
    data.mkdir()
    shutil.copy(sample("TotalSegCTSmall"), data / "case0.nii.gz")
    out = tmp_path / "run"
    events, finished = [], []
    logic = VoCoLogic(scene=None, work_dir=tmp_path / "work", on_progress=events.append)
    params = PretrainParameters(data=str(data), output_dir=str(out), recipe="small", steps=2, device="cpu")
    process = logic.start_pretraining(params, on_finished=finished.append)
    try:
        assert process.wait_for_completion(timeout_s=240) is RunState.SUCCEEDED, process.error_message()
    finally:
        process.cancel()
    assert finished == [RunState.SUCCEEDED]
    trained = [e for e in events if e.stage == "pretrain" and e.event == "progress"]
    assert [e.step for e in trained][-1] == 2 and all(e.total == 2 for e in trained)
    assert trained[-1].metric_text("loss", "total") != "-"
    assert (out / "checkpoints" / "last.pt").is_file()

    # the same folder again is refused with a reason, unless resuming
    with pytest.raises(VoCoError, match="already holds a run"):
        logic.start_pretraining(params)
    events.clear()
    more = PretrainParameters(data=str(data), output_dir=str(out), recipe="small", steps=3, device="cpu",
                              resume=True)
    process = logic.start_pretraining(more)
    try:
        assert process.wait_for_completion(timeout_s=240) is RunState.SUCCEEDED, process.error_message()
    finally:
        process.cancel()
    steps = [e.step for e in events if e.stage == "pretrain" and e.event == "progress"]
    assert steps == [3]  # continued after step 2, did not start over
