"""The GPU benchmark script (benchmarks/gpu_bench.py) runs its CPU smoke mode end to end in a subprocess and prints
one JSON line with both settings of the step (FLOPs counted) and the inference timings."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

SCRIPT = Path(__file__).resolve().parents[2] / "benchmarks" / "gpu_bench.py"


def test_gpu_bench_smoke_prints_one_json_line(tmp_path):
    env = {**os.environ, "TORCHINDUCTOR_CACHE_DIR": str(tmp_path / "inductor"), "OMP_NUM_THREADS": "1"}
    proc = subprocess.run([sys.executable, str(SCRIPT), "--smoke"], capture_output=True, text=True, env=env,
                          timeout=900)
    assert proc.returncode == 0, proc.stderr[-3000:]
    lines = [line for line in proc.stdout.splitlines() if line.startswith("{")]
    assert len(lines) == 1
    result = json.loads(lines[0])
    step = result["step"]
    assert step["gflop_per_crop_fwd_bwd"] > 0 and step["device"] == "cpu"
    for key in ("official", "ours"):
        row = step[key]
        assert row["steps_timed"] == 1 and row["s_per_step"] > 0 and row["crops_per_s"] > 0
        assert row["mfu"] is None  # no peak for a CPU: not guessed
    assert step["official"]["checkpointing"] and not step["ours"]["checkpointing"]
    assert step["crops_per_s_ratio"] > 0
    infer = result["infer"]
    assert infer["read_s"] > 0 and infer["write_s"] > 0 and infer["best_s"] > infer["read_s"]
