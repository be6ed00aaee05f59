"""Shared by the segmentation tests: one small model fine-tuned once per test session on the TotalSegmentator
example CT and its 30-slice slab (BasicUNet, 6 mm, 32³ crops, 120 steps), reused by the inference tests."""

from __future__ import annotations

import functools
import os
import subprocess
import tempfile
from pathlib import Path

from cli_zygote import warm_cli

SMALL_CONFIG = "finetune_small"  # the packaged CPU config
# The test recipe: the small config shortened to 120 steps (about 40 s on 2 free cores).
TEST_OVERRIDES = {"train.steps": 120, "train.val_every": 40, "train.checkpoint_every": 40}
TOTALSEG = {"liver": 5, "spleen": 1, "kidney_right": 2, "kidney_left": 3}


def small_config(output_dir: Path, **more):
    from vococore.segmentation.finetune import load_finetune_config

    return load_finetune_config(SMALL_CONFIG, {**TEST_OVERRIDES, "output_dir": str(output_dir), **more})


@functools.lru_cache(maxsize=1)
def trained_run() -> Path:
    """Output folder of the session's fine-tuning run, trained on first use. Under pytest-xdist the workers of one
    run share it (a folder named by the run's id, a file lock): the first worker trains, the others wait and read."""
    from filelock import FileLock

    from vococore.segmentation.finetune import run_finetune

    run_id = os.environ.get("PYTEST_XDIST_TESTRUNUID")
    if run_id is None:
        folder = Path(tempfile.mkdtemp(prefix="vococore-seg-"))
    else:
        folder = Path(tempfile.gettempdir()) / f"vococore-seg-{run_id}"
        folder.mkdir(exist_ok=True)
    out, done = folder / "run", folder / "trained"
    with FileLock(str(folder / "lock")):
        if not done.exists():
            run_finetune(small_config(out))
            done.touch()
    return out


def run_cli(*args: str, check: bool = True) -> subprocess.CompletedProcess:
    """Run ``vococore ARGS`` in a real child process of this test process's warm server (cli_zygote.py)."""
    proc = warm_cli().run(list(args))
    if check and proc.returncode != 0:
        raise AssertionError(f"vococore {' '.join(args)} failed ({proc.returncode}):\n{proc.stderr[-3000:]}")
    return proc
