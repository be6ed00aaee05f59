"""Time on the GUI thread to draw VoCo's base-crop grid on a 512x512x300 CT (recipe v2: the whole CT is
preprocessed, resampled to 1.5 mm and cropped to its foreground, to place the grid), before and after the
preprocessing moved to a worker thread, in the same process on the same CT node and the same machine.

Before (the presenter as it was, and still ``VoCoLogic.show_grid``): the preprocessing and drawing ran in the
call. Now: ``Presenter.show_grid(True)`` copies the voxels and starts the worker; the widget's 200 ms timer calls
``poll()``, which draws the ROIs once the worker is done. GUI-thread time = the call plus every poll until the grid
is drawn (the idle time between polls is free for the GUI), as wall time and as ``time.thread_time`` (what the
GUI thread itself spent). *Until drawn* is how long the user waits for the grid (the GUI stays usable now).
Three rounds each, alternating; headless slicer-core scene.

    python benchmarks/bench_slicer_grid.py [--recipe v2] [--rounds 3]

Prints one JSON line per round and a summary line (medians).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT / "VoCoCore"), str(ROOT / "VoCoSlicer")]


def big_ct():
    """A 512x512x300 int16 CT: the real TotalSegCT resampled by nearest neighbour (as bench_slicer_apply)."""
    import numpy as np
    from scipy.ndimage import zoom

    from vococore.io import read_volume
    from vococore.io.sampledata import fetch
    from vococore.io.volume import Volume

    ct = read_volume(fetch("TotalSegCT"))
    factors = [t / n for t, n in zip((512, 512, 300), ct.shape)]
    affine = ct.affine.copy()
    affine[:3, :3] = affine[:3, :3] / np.asarray(factors)
    return Volume(array=zoom(ct.array.astype(np.int16), factors, order=0), affine=affine, source="big")


def before(logic, node, recipe: str) -> dict:
    """The old path: everything in the call."""
    start, cpu = time.perf_counter(), time.thread_time()
    rois = logic.show_grid(node, recipe)
    wall, cpu = time.perf_counter() - start, time.thread_time() - cpu
    assert len(rois) == 9
    logic.hide_grid(node)
    return {"gui_thread_s": round(wall, 3), "gui_thread_cpu_s": round(cpu, 3), "until_drawn_s": round(wall, 3)}


def after(presenter, node, recipe: str) -> dict:
    """The new path: the call, then the 200 ms timer's polls until the grid is drawn."""
    from VoCoSlicerLib import grid

    presenter.state.inputVolume, presenter.state.recipe = node, recipe
    start, cpu0 = time.perf_counter(), time.thread_time()
    presenter.show_grid(True)
    call_s, cpu = time.perf_counter() - start, time.thread_time() - cpu0
    polls_s, polls = 0.0, 0
    while presenter._grid_job is not None:
        time.sleep(0.2)
        t0, c0 = time.perf_counter(), time.thread_time()
        presenter.poll()
        polls_s, cpu = polls_s + time.perf_counter() - t0, cpu + time.thread_time() - c0
        polls += 1
    until = time.perf_counter() - start
    assert len(grid.grid_nodes(presenter.logic.scene, node)) == 9
    presenter.show_grid(False)
    return {"gui_thread_s": round(call_s + polls_s, 3), "gui_thread_cpu_s": round(cpu, 3),
            "call_s": round(call_s, 3), "polls": polls, "until_drawn_s": round(until, 2)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--recipe", default="v2")
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    from VoCoSlicerLib import device, nodes
    from VoCoSlicerLib.headless import headless_scene, install_as_slicer_globals
    from VoCoSlicerLib.logic import VoCoLogic
    from VoCoSlicerLib.presenter import ModuleState, Presenter
    from VoCoSlicerLib.registry import ModelRegistry

    with tempfile.TemporaryDirectory(prefix="bench-grid-") as tmp:
        ctx = headless_scene(Path(tmp) / "mrml")
        install_as_slicer_globals(ctx)
        node = nodes.node_from_volume(big_ct(), ctx.scene, "CT")
        logic = VoCoLogic(ctx.scene, registry=ModelRegistry(cache_dir=Path(tmp) / "models"), work_dir=Path(tmp) / "w")
        presenter = Presenter(ModuleState(), logic, probe_gpu=device.gpu_facts)
        presenter.wait_for_gpu_check()
        before(logic, node, args.recipe)  # warm-up: imports and first-call costs, for both paths
        rows = {"before": [], "after": []}
        for round_ in range(args.rounds):
            rows["before"].append(before(logic, node, args.recipe))
            rows["after"].append(after(presenter, node, args.recipe))
            print(json.dumps({"round": round_, **{k: v[-1] for k, v in rows.items()}}), flush=True)
        summary = {version: {key: statistics.median(r[key] for r in results)
                             for key in ("gui_thread_s", "gui_thread_cpu_s", "until_drawn_s")}
                   for version, results in rows.items()}
        summary["wall_ratio"] = round(summary["before"]["gui_thread_s"] / summary["after"]["gui_thread_s"], 1)
        machine = {"cpus": os.cpu_count(), "load_1min": round(os.getloadavg()[0], 1), "cpu": platform.processor()}
        print(json.dumps({"recipe": args.recipe, "shape": [512, 512, 300], "machine": machine, "median": summary}),
              flush=True)


if __name__ == "__main__":
    main()
