"""Exact resume after a real SIGTERM (the 2-process torchrun case, where only rank 0 writes, is in
test_pretrain_torchrun.py)."""

from __future__ import annotations

import json
import os
import signal
from pathlib import Path

from cli_zygote import warm_cli
from vococore.training.checkpoint import load_checkpoint

STEPS = 6


def _cmd(out: Path, *extra: str) -> list[str]:
    return ["pretrain", "--config", "pretrain_small", "--json-progress",
            "--set", "data=[sample:TotalSegCTSmall]", "--set", f"steps={STEPS}", "--set", "checkpoint_every=100",
            "--set", f"output_dir={out}", "--set", "tensorboard=false", *extra]


def _env() -> dict[str, str]:
    return {**os.environ, "OMP_NUM_THREADS": "2"}


def _losses(stdout: str) -> dict[int, dict[str, float]]:
    events = [json.loads(line) for line in stdout.splitlines() if line.startswith("{")]
    return {e["step"]: e["metrics"] for e in events if e["event"] == "progress" and e["stage"] == "pretrain"}


def test_sigterm_then_resume_repeats_the_uninterrupted_losses(tmp_path):
    """Three ``vococore pretrain`` processes (forked from the warm CLI server, cli_zygote.py): an uninterrupted
    reference, one stopped by a real SIGTERM after step 2, and its ``--resume``."""
    reference = warm_cli().run(_cmd(tmp_path / "ref"), env=_env(), timeout=300)
    assert reference.returncode == 0, reference.stderr[-2000:]
    ref = _losses(reference.stdout)
    assert sorted(ref) == list(range(1, STEPS + 1))

    run = tmp_path / "killed"
    proc = warm_cli().start(_cmd(run), env=_env())
    first = {}
    for line in proc.stdout:  # wait until two training steps are done, then send a real SIGTERM
        if line.startswith("{"):
            event = json.loads(line)
            if event["event"] == "progress" and event["stage"] == "pretrain":
                first[event["step"]] = event["metrics"]
                if event["step"] == 2:
                    proc.send_signal(signal.SIGTERM)
    rest_out, err = proc.communicate(timeout=300)
    first.update(_losses(rest_out))
    assert proc.returncode == 0, err[-2000:]
    k = load_checkpoint(run / "checkpoints" / "last.pt")["step"]
    assert k == max(first) and 2 <= k <= STEPS - 2, (k, sorted(first))  # at least two steps left to compare
    assert "stopped at step" in err and "--resume" in err

    resumed = warm_cli().run(_cmd(run, "--resume"), env=_env(), timeout=300)
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    after = _losses(resumed.stdout)
    assert min(after) == k + 1
    assert sorted(after) == list(range(k + 1, STEPS + 1))
    for step in after:  # CPU, deterministic, same thread count: bit-identical losses
        for part in ("total", "intra", "inter", "reg", "lr"):
            assert after[step][part] == ref[step][part], (step, part, after[step][part], ref[step][part])
    for step in range(1, k + 1):
        assert first[step]["total"] == ref[step]["total"]
