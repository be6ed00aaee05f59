"""Time on the GUI thread from Apply to the first progress event of the segmentation run, for a 512x512x300 CT
and a B-size official model already downloaded (VoComni B layout: SwinUNETR v2, feature size 48, 21 outputs):
this code vs the module as it was before the presenter (commit 639eed6, its VoCoSlicerLib taken with
``git show``), in the same run, on the same CT node contents, the same model file and the same machine.

GUI-thread time = the Apply call itself plus every poll the widget's 200 ms timer makes until the first progress
event arrives (the idle time between polls is free for the GUI, so it is not counted), as wall time and as the
thread's CPU time (``time.thread_time``: what the GUI thread itself spent, whatever other load the machine has). Before the presenter, Apply
was ``ensureModel`` then ``start_segmentation``, as ``VoCoSlicerWidget.onApply`` called them. Each version runs in
its own process on a headless slicer-core scene; two Applys each: the first after the download (the old code
converts the checkpoint then), the second with everything cached.

    python benchmarks/bench_slicer_apply.py [--old-commit 639eed6]

Prints one JSON line per version.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
LIB_FILES = ["__init__.py", "convert.py", "device.py", "grid.py", "headless.py", "install.py", "logic.py", "nodes.py",
             "parameters.py", "position.py", "registry.py", "runner.py"]


def make_inputs(folder: Path) -> tuple[Path, Path]:
    """A 512x512x300 CT (the real TotalSegCT resampled by nearest neighbour) and a B-size checkpoint file."""
    import numpy as np
    import torch
    from monai.networks.nets import SwinUNETR
    from scipy.ndimage import zoom

    from vococore.io import read_volume, write_volume
    from vococore.io.sampledata import fetch
    from vococore.io.volume import Volume

    ct = read_volume(fetch("TotalSegCT"))
    factors = [t / n for t, n in zip((512, 512, 300), ct.shape)]
    array = zoom(ct.array.astype(np.int16), factors, order=0)
    affine = ct.affine.copy()
    affine[:3, :3] = affine[:3, :3] / np.asarray(factors)
    ct_path = write_volume(Volume(array=array, affine=affine, source="big"), folder / "ct512.nii.gz")
    net = SwinUNETR(in_channels=1, out_channels=21, feature_size=48, use_v2=True)
    weights = folder / "server" / "VoComni_B.pt"
    weights.parent.mkdir()
    torch.save({"state_dict": net.state_dict()}, weights)
    return ct_path, weights


def worker(version: str, lib_parent: Path, ct_path: Path, weights: Path, cache: Path) -> dict:
    """In a fresh process with ``lib_parent`` first on sys.path: download the model, load the CT, Apply twice."""
    sys.path.insert(0, str(lib_parent))
    sys.path.insert(1, str(ROOT / "VoCoCore"))
    from vococore.io import read_volume

    from VoCoSlicerLib import nodes
    from VoCoSlicerLib.headless import headless_scene, install_as_slicer_globals
    from VoCoSlicerLib.logic import VoCoLogic
    from VoCoSlicerLib.parameters import SegmentParameters
    from VoCoSlicerLib.registry import MODELS_JSON, ModelRegistry

    data = json.loads(MODELS_JSON.read_text())
    data["models"] = [dict(data["models"][0], url=weights.as_uri())]
    models_json = cache.parent / f"models-{version}.json"
    models_json.write_text(json.dumps(data))
    ctx = headless_scene(cache.parent / f"mrml-{version}")
    install_as_slicer_globals(ctx)
    registry = ModelRegistry(models_json, cache_dir=cache)
    registry.download(registry.get("VoComni_B"))
    node = nodes.node_from_volume(read_volume(ct_path), ctx.scene, "CT")
    logic = VoCoLogic(ctx.scene, registry=registry, work_dir=cache.parent / f"work-{version}")
    events = []
    logic.on_progress = events.append
    presenter = None
    if version == "new":
        from VoCoSlicerLib.presenter import ModuleState, Presenter

        presenter = Presenter(ModuleState(inputVolume=node, model="VoComni_B", device="auto"), logic)
        presenter.wait_for_gpu_check()  # runs while the user looks at the module, on its own thread
        presenter.logic.on_progress = lambda e: (presenter._on_progress(e), events.append(e))
    results = []
    for attempt in ("first Apply after download", "second Apply"):
        events.clear()
        start, start_cpu = time.perf_counter(), time.thread_time()
        if presenter is not None:
            presenter.apply()
        else:  # VoCoSlicerWidget.onApply before the presenter
            logic.model_path("VoComni_B")
            logic.start_segmentation(node, SegmentParameters(model="VoComni_B", device="auto"))
        apply_s, apply_cpu_s = time.perf_counter() - start, time.thread_time() - start_cpu
        poll_s, poll_cpu_s, polls = 0.0, 0.0, 0
        while not events:
            time.sleep(0.2)
            t0, c0 = time.perf_counter(), time.thread_time()
            running = logic.process.poll()
            poll_s, poll_cpu_s = poll_s + time.perf_counter() - t0, poll_cpu_s + time.thread_time() - c0
            polls += 1
            if not running:
                raise SystemExit(f"run ended before its first progress event: {logic.process.error_message()}")
        wall_s = time.perf_counter() - start
        logic.cancel()
        logic.process.wait_for_completion(timeout_s=30)
        results.append({"attempt": attempt, "apply_s": round(apply_s, 3), "polls_s": round(poll_s, 4),
                        "gui_thread_s": round(apply_s + poll_s, 3),
                        "gui_thread_cpu_s": round(apply_cpu_s + poll_cpu_s, 3), "polls": polls,
                        "wall_to_first_event_s": round(wall_s, 2), "first_event": events[0].stage})
    return {"version": version, "results": results}


def old_library(commit: str, folder: Path) -> Path:
    """The VoCoSlicerLib of ``commit`` written to ``folder`` (git show), for the baseline process."""
    lib = folder / "VoCoSlicerLib"
    (lib.parent / "Resources" / "Models").mkdir(parents=True)
    lib.mkdir()
    for name in LIB_FILES:
        text = subprocess.run(["git", "show", f"{commit}:VoCoSlicer/VoCoSlicerLib/{name}"], cwd=ROOT, check=True,
                              capture_output=True, text=True).stdout
        (lib / name).write_text(text)
    models = subprocess.run(["git", "show", f"{commit}:VoCoSlicer/Resources/Models/models.json"], cwd=ROOT,
                            check=True, capture_output=True, text=True).stdout
    (lib.parent / "Resources" / "Models" / "models.json").write_text(models)
    return folder


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--old-commit", default="639eed6")
    parser.add_argument("--versions", default="old,new", help="which to run, e.g. 'new' to repeat only this code")
    parser.add_argument("--worker", nargs=5, metavar=("VERSION", "LIB", "CT", "WEIGHTS", "CACHE"))
    args = parser.parse_args()
    if args.worker:
        version, lib, ct, weights, cache = args.worker
        print(json.dumps(worker(version, Path(lib), Path(ct), Path(weights), Path(cache))))
        return
    sys.path.insert(0, str(ROOT / "VoCoCore"))
    with tempfile.TemporaryDirectory(prefix="bench-apply-") as tmp:
        tmp = Path(tmp)
        ct, weights = make_inputs(tmp)
        libs = {"old": lambda: old_library(args.old_commit, tmp / "old"), "new": lambda: ROOT / "VoCoSlicer"}
        for version in args.versions.split(","):
            lib = libs[version]()
            done = subprocess.run([sys.executable, __file__, "--worker", version, str(lib), str(ct), str(weights),
                                   str(tmp / f"cache-{version}")], capture_output=True, text=True,
                                  env={**os.environ, "PYTHONPATH": ""})
            if done.returncode != 0:
                raise SystemExit(f"{version}: {done.stderr[-3000:]}")
            print(done.stdout.strip().splitlines()[-1], flush=True)


if __name__ == "__main__":
    main()
