"""CLI start-up: ``vococore --version``, ``--help`` and ``info`` on a small real CT, this checkout against a
baseline checkout (e.g. the code before lazy imports), timed as whole processes by ``farm-bench`` (A/B pairs).

    git worktree add /tmp/base <commit>
    python benchmarks/bench_startup.py --baseline /tmp/base [--runs 5]

Each command is ``env PYTHONPATH=<checkout>/VoCoCore python -m vococore ...``, the same interpreter and the same
input for both; farm-bench's median wall, CPU and peak-memory figures and the A/B ratios are printed per command.
"""

from __future__ import annotations

import argparse
import os
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parents[1]


def command(checkout: Path, args: list[str]) -> list[str]:
    """The vococore command line run from ``checkout``'s sources."""
    return ["env", f"PYTHONPATH={checkout / 'VoCoCore'}", "OMP_WAIT_POLICY=PASSIVE", "OMP_NUM_THREADS=1",
            sys.executable, "-m", "vococore", *args]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--baseline", required=True, type=Path, help="a checkout of the code to compare against")
    parser.add_argument("--runs", type=int, default=5)
    args = parser.parse_args()
    if shutil.which("farm-bench") is None:
        sys.exit("farm-bench is not on PATH")
    sys.path.insert(0, str(HERE / "VoCoCore"))
    from vococore.io.sampledata import fetch

    small = str(fetch("TotalSegCTSmall"))  # 122 x 101 x 30 voxels, 0.5 MB
    for cmd in (["--version"], ["--help"], ["info", small]):
        a, b = command(HERE, cmd), command(args.baseline.resolve(), cmd)
        print(f"## vococore {' '.join(cmd)}\nA = {HERE}, B = {args.baseline}", flush=True)
        subprocess.run(["farm-bench", "-n", str(args.runs), "--timeout", "600", "--vs", shlex.join(b), "--", *a],
                       check=True, env={**os.environ})


if __name__ == "__main__":
    main()
