"""Cache build throughput: volumes/s of ``vococore pretrain --build-cache`` with 1 process vs torchrun with 2
processes sharing the build, on copies of the real TotalSegCT sample, with the v2 preprocessing (1.5 mm, float16).
Also reports the stored bytes per volume, the figure the multi-node estimate in BENCHMARKS.md scales.

    python benchmarks/bench_cache_build.py [--volumes 16] [--rounds 2]

Prints one JSON line. Times come from the rank-0 ``cache`` progress events (the end event is emitted after all
ranks finished their shares), so interpreter start-up is left out; 1- and 2-process runs alternate per round.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "VoCoCore"))


def build(data: Path, cache: Path, procs: int) -> float:
    """Seconds the cache stage took (fresh cache folder) with ``procs`` processes."""
    shutil.rmtree(cache, ignore_errors=True)
    args = ["-m", "vococore", "pretrain", "--config", "pretrain_v2_B", "--build-cache", "--json-progress",
            "--set", f"data={data}", f"cache_dir={cache}", "device=cpu", "cache_limit_gb=0"]
    launcher = [sys.executable] if procs == 1 else [str(Path(sys.executable).parent / "torchrun"), "--standalone",
                                                    f"--nproc_per_node={procs}"]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": f"{ROOT / 'VoCoCore'}"}
    out = subprocess.run(launcher + args, capture_output=True, text=True, env=env, check=True).stdout
    (end,) = [e for e in map(json.loads, filter(lambda s: s.startswith("{"), out.splitlines()))
              if e["event"] == "end" and e["stage"] == "cache"]
    return float(end["elapsed_s"])


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--volumes", type=int, default=16)
    parser.add_argument("--rounds", type=int, default=2)
    args = parser.parse_args()
    from vococore.io.sampledata import fetch

    with tempfile.TemporaryDirectory() as tmp:
        data = Path(tmp) / "ct"
        data.mkdir()
        for i in range(args.volumes):
            shutil.copy(fetch("TotalSegCT"), data / f"ct{i:03d}.nii.gz")
        times: dict[int, list[float]] = {1: [], 2: []}
        for _ in range(args.rounds):
            for procs in (1, 2):
                times[procs].append(build(data, Path(tmp) / "cache", procs))
                print(f"{procs} process(es): {times[procs][-1]:.1f} s", file=sys.stderr, flush=True)
        stored = sum(p.stat().st_size for p in (Path(tmp) / "cache").glob("*.npy")) / args.volumes
    best = {p: min(t) for p, t in times.items()}
    print(json.dumps({"volumes": args.volumes, "seconds": times, "volumes_per_s_1": args.volumes / best[1],
                      "volumes_per_s_2": args.volumes / best[2], "speedup_2_vs_1": best[1] / best[2],
                      "stored_mb_per_volume": stored / 2**20, "cpus": os.cpu_count()}))


if __name__ == "__main__":
    main()
