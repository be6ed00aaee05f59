#!/usr/bin/env bash
# Wall time of the main job from a clean clone of this checkout's HEAD, building the environment included: the one
# measurement the README, the Makefile and BENCHMARKS.md quote for `make demo`.
# Usage: benchmarks/demo_clean_clone.sh [WORK_DIR]   (the mirror of the sample CT is passed through unchanged)
set -euo pipefail
src=$(git -C "$(dirname "$0")/.." rev-parse --show-toplevel)
work=${1:-$(mktemp -d)}
export VOCOCORE_SAMPLE_DATA_MIRROR=${VOCOCORE_SAMPLE_DATA_MIRROR:-$src/../shared/data/ct}
git clone --quiet "$src" "$work/clone"
cd "$work/clone"
t0=$(date +%s.%N)
make demo-venv > "$work/venv.log" 2>&1
t1=$(date +%s.%N)
make demo 2>&1 | tee "$work/demo.log"
t2=$(date +%s.%N)
python3 - "$t0" "$t1" "$t2" "$(git rev-parse --short HEAD)" <<'PY'
import os, sys
t0, t1, t2 = map(float, sys.argv[1:4])
print(f"\nmain job from a clean clone ({sys.argv[4]}, {os.cpu_count()} logical cores): environment {t1 - t0:.0f} s, "
      f"demo {t2 - t1:.0f} s, total {(t2 - t0) / 60:.1f} min; load average before the end "
      f"{os.getloadavg()[0]:.1f}")
PY
