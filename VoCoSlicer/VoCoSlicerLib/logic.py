"""Everything the VoCoSlicer module does, without Qt: exports nodes to files, runs ``vococore`` in the background,
brings results back as nodes, draws the grid and the position table. The widget only calls this."""

from __future__ import annotations

import dataclasses
import json
import shutil
import tempfile
from collections.abc import Callable, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import Any

import sys

import numpy as np
import torch
import yaml

from vococore.utils.errors import VoCoError
from vococore.io import write_labelmap, write_volume
from vococore.io.volume import Volume
from vococore.pretraining.model import VoCoModel, load_voco_model
from vococore.segmentation.package import read_package_info
from vococore.pretraining.position import predict_positions
from vococore.pretraining.pretext import default_backbone, get_recipe

from VoCoSlicerLib import convert, device, grid, nodes, position
from VoCoSlicerLib.parameters import FinetuneParameters, PretrainParameters, SegmentParameters
from VoCoSlicerLib.registry import ModelRegistry
from VoCoSlicerLib.runner import BackgroundProcess, ProgressEvent, RunState


class VoCoLogic:
    """Segmentation, grid display, position prediction and training runs for one MRML scene.

    ``python`` is the interpreter that runs ``vococore`` (``PythonSlicer`` inside Slicer); ``on_progress`` and
    ``on_log`` receive the runs' progress events and log lines when the caller polls the runner.
    """

    def __init__(self, scene: Any, registry: ModelRegistry | None = None, python: str | None = None,
                 work_dir: str | Path | None = None, on_progress: Callable[[ProgressEvent], None] | None = None,
                 on_log: Callable[[str], None] | None = None) -> None:
        self.scene = scene
        self.registry = registry or ModelRegistry()
        self.python = python
        self.work_dir = Path(work_dir) if work_dir else Path(tempfile.mkdtemp(prefix="VoCoSlicer-"))
        self.work_dir.mkdir(parents=True, exist_ok=True)
        self.on_progress, self.on_log = on_progress, on_log
        self.process: BackgroundProcess | None = None
        self.result_node: Any = None
        self._grid_worker: ThreadPoolExecutor | None = None  # the one thread grids are computed on

    # --- segmentation -------------------------------------------------------------------------------------------
    def model_files(self, model_id: str) -> tuple[Path | None, Path | None]:
        """(model package, downloaded official weights) of ``model_id``: the package when it exists, else the
        weights it will be converted from in the background run; (None, None) when nothing is downloaded."""
        entry = self.registry.get(model_id)
        weights = self.registry.local_path(entry)
        if weights is None or weights.name.endswith(".vocomodel"):
            return weights, None
        package = convert.package_path(self.registry, entry)
        return (package, None) if package.is_file() else (None, weights)

    def model_path(self, model_id: str) -> Path | None:
        """The model package, converting a downloaded official checkpoint here when needed (scripts and tests; the
        module converts in the background run instead); None when the model still needs downloading."""
        package, weights = self.model_files(model_id)
        if package is not None or weights is None:
            return package
        entry = self.registry.get(model_id)
        return convert.package_official_model(entry, weights, convert.package_path(self.registry, entry))

    def model_settings(self, model_id: str | None = None, model_file: Path | None = None) -> dict[str, Any]:
        """Feature size, window, overlap, spacing and class count of a model, from its package or the model list
        (what the estimates and the GPU memory check need; the weights are not read)."""
        package = model_file
        if package is None and model_id:
            package, _ = self.model_files(model_id)
        if package is not None and package.name.endswith(".vocomodel"):
            info = read_package_info(package)
            return {"feature_size": int(info.backbone.feature_size), "roi": tuple(info.roi_size),
                    "overlap": float(info.overlap), "spacing": tuple(info.preprocess.spacing),
                    "classes": len(info.labels)}
        entry = self.registry.get(model_id)
        arch, pre = entry.extra.get("architecture", {}), entry.extra.get("preprocessing", {})
        return {"feature_size": int(arch.get("feature_size", 48)), "roi": tuple(pre.get("roi", (96, 96, 96))),
                "overlap": float(pre.get("overlap", 0.75)), "spacing": tuple(pre.get("spacing", (1.5, 1.5, 1.5))),
                "classes": len(entry.labels)}

    def start_segmentation(self, volume_node: Any, params: SegmentParameters,
                           on_finished: Callable[[RunState, Any], None] | None = None,
                           model_file: Path | None = None, gpu: dict | None = None) -> BackgroundProcess:
        """Export the CT and run ``vococore infer`` in the background; on success load the result beside the input.

        ``model_file`` overrides the registry (a model package on disk). ``gpu`` are the GPU facts probed in a
        child process (:func:`device.probe_gpu`); without them 'auto' is left to vococore. Only a copy of the
        voxels is made here: writing the file, converting an official checkpoint and the inference happen in the
        background. ``on_finished(state, segmentation)``.
        """
        name = volume_node.GetName() if volume_node is not None else None
        package, weights = (model_file, None) if model_file else \
            self.model_files(params.model) if params.model else (None, None)
        valid = params.validate(name, package or weights)
        if not valid:
            raise VoCoError(valid.reason)
        if package is None and weights is None:
            raise VoCoError(f"model {params.model!r} is not downloaded yet")
        chosen = params.device
        if gpu is not None:
            settings = self.model_settings(params.model, model_file)
            check = device.decide_device(params.device, device.inference_memory_gb(settings["feature_size"],
                                                                                   settings["roi"]), gpu)
            if not check.ok:
                raise VoCoError(check.reason)
            chosen = check.device  # run on the device that was checked, so the check and the run agree
        run_dir = Path(tempfile.mkdtemp(prefix="segment-", dir=self.work_dir))
        input_path, output = run_dir / "input.nii", run_dir / "segmentation.seg.nrrd"
        prepare = self._exporter(volume_node, input_path)

        def finished(state: RunState) -> None:
            self.result_node = None
            if state is RunState.SUCCEEDED:
                self.result_node = nodes.load_segmentation(output, self.scene, f"{name} VoCo", volume_node)
            if on_finished:
                on_finished(state, self.result_node)

        params = dataclasses.replace(params, device=chosen)
        if package is not None:
            command, env = params.command(package, input_path, output, python=self.python), None
        else:  # an official checkpoint not yet packaged: the background job converts it first
            entry = self.registry.get(params.model)
            target = convert.package_path(self.registry, entry)
            infer = params.command(target, input_path, output)[4:]  # after "python -m vococore infer"
            command = [self.python or sys.executable, str(Path(convert.__file__).with_name("segment_job.py")),
                       str(self.registry.models_json), str(self.registry.cache_dir), entry.id, str(target), "--",
                       *infer]
            env = None
        return self._start(command, [output], finished, prepare=prepare, temporary=[run_dir], env=env,
                           depends_on_scene=True)

    def _exporter(self, volume_node: Any, path: Path) -> Callable[[], None]:
        """Take hold of the node's voxel array and geometry now, on the GUI thread, and return the writer that
        copies and writes them on the worker thread.

        Holding the vtkDataArray (not copying it) keeps the GUI thread free: a copy of a 512x512x300 CT took
        0.23-0.50 s of it (benchmarks/bench_slicer_apply.py). Slicer replaces a volume's image data when it
        changes the voxels, so the held array stays the one the user applied to; the worker only reads it."""
        from vtk.util.numpy_support import vtk_to_numpy

        image = volume_node.GetImageData()
        if image is None or image.GetPointData().GetScalars() is None:
            raise VoCoError(f"volume '{volume_node.GetName()}' has no voxels")
        scalars, dims = image.GetPointData().GetScalars(), image.GetDimensions()
        if scalars.GetNumberOfComponents() != 1:
            raise VoCoError(f"volume '{volume_node.GetName()}' has {scalars.GetNumberOfComponents()} components "
                            "per voxel; a CT has one")
        affine = nodes.ijk_to_world(volume_node)
        source = volume_node.GetName()

        def write() -> None:
            voxels = vtk_to_numpy(scalars).reshape(dims[::-1]).transpose(2, 1, 0)  # VTK keeps i fastest
            write_volume(Volume(array=np.array(voxels, order="C"), affine=affine, source=source), path)
        return write

    def segmentation_estimate(self, volume_node: Any, settings: dict[str, Any] | None = None) -> str:
        """'about N min on this CPU' for segmenting ``volume_node`` with a model of ``settings``
        (:meth:`model_settings`: feature size, spacing, window, overlap), from measured per-voxel rates; reads
        only the grid size and spacing, not the voxels."""
        image = volume_node.GetImageData()
        if image is None:
            return ""
        settings = settings or {}
        seconds = device.estimate_inference_s(image.GetDimensions(), volume_node.GetSpacing(),
                                              feature_size=int(settings.get("feature_size", 48)),
                                              target_spacing=settings.get("spacing", (1.5, 1.5, 1.5)),
                                              roi=settings.get("roi", (96, 96, 96)),
                                              overlap=float(settings.get("overlap", 0.75)))
        return f"about {device.format_duration(seconds)} on this computer's CPU"

    # --- see what VoCo sees ---------------------------------------------------------------------------------------
    def show_grid(self, volume_node: Any, recipe: str) -> list[Any]:
        """Draw ``recipe``'s base-crop grid on ``volume_node`` as ROIs (replacing our previous grid)."""
        geometry = grid.grid_geometry(nodes.volume_from_node(volume_node), recipe)
        return grid.draw_grid(geometry, self.scene, volume_node)

    def start_grid(self, volume_node: Any, recipe: str) -> Future:
        """Compute ``recipe``'s grid on ``volume_node`` on a worker thread; the future gives the
        :class:`grid.GridGeometry` to draw with :meth:`draw_grid`. Only a copy of the voxels is made here (VTK is
        not thread-safe): the preprocessing that places the grid (resampling a whole CT: seconds) runs on the
        thread, so the GUI thread does not wait for it (benchmarks/bench_slicer_grid.py)."""
        import slicer

        raw = np.array(slicer.util.arrayFromVolume(volume_node), copy=True)
        affine, name = nodes.ijk_to_world(volume_node), volume_node.GetName()

        def compute() -> grid.GridGeometry:
            volume = Volume(array=np.ascontiguousarray(raw.transpose(2, 1, 0)), affine=affine, source=name)
            return grid.grid_geometry(volume, recipe)
        if self._grid_worker is None:
            self._grid_worker = ThreadPoolExecutor(max_workers=1, thread_name_prefix="VoCo-grid")
        return self._grid_worker.submit(compute)

    def draw_grid(self, geometry: grid.GridGeometry, volume_node: Any) -> list[Any]:
        """Draw a grid computed by :meth:`start_grid` (on the GUI thread: it makes nodes)."""
        return grid.draw_grid(geometry, self.scene, volume_node)

    def hide_grid(self, volume_node: Any) -> int:
        """Remove the grid drawn for ``volume_node``."""
        return grid.remove_grid(self.scene, volume_node)

    def load_position_model(self, checkpoint: str | Path | None, recipe: str) -> Any:
        """The VoCo model of a pretraining checkpoint, or an untrained one of ``recipe`` when none is given
        (its predictions are then meaningless: it shows the mechanics, not a trained model's knowledge)."""
        model = load_voco_model(checkpoint) if checkpoint else VoCoModel(default_backbone(recipe), recipe)
        return model.eval()

    def predict_positions(self, volume_node: Any, point_ras: Sequence[float], model: Any) -> tuple[Any, Any, Any]:
        """Centre a target crop at ``point_ras``, let VoCo ``model`` predict its overlap with each base crop, and
        show prediction and truth as a table and chart; returns (table, chart, vococore's sub-volume result)."""
        with torch.no_grad():
            result = predict_positions(model, nodes.volume_from_node(volume_node),
                                       points_ras=np.asarray(point_ras, dtype=np.float64).reshape(1, 3))
        sub = result.subvolumes[0]
        table, chart = position.show_positions(self.scene, volume_node, sub.predicted, sub.true, result.recipe.grid)
        return table, chart, sub

    # --- training -------------------------------------------------------------------------------------------------
    def start_pretraining(self, params: PretrainParameters, on_finished: Callable[[RunState], None] | None = None,
                          volume_nodes: Sequence[Any] = ()) -> BackgroundProcess:
        """Write the pretraining config and start ``vococore pretrain``; checkpoints let it resume later.

        With ``volume_nodes`` the data are those scene volumes, written (on a worker thread) to
        ``output_dir/data``. The run does not depend on the scene afterwards: closing it does not stop the run.
        """
        if volume_nodes:
            params = dataclasses.replace(params, loaded_volumes=len(volume_nodes))
        valid = params.validate()
        if not valid:
            raise VoCoError(valid.reason)
        config_data = params.config()
        writers = [self._exporter(node, Path(config_data["data"]) / f"volume{i:03d}.nii.gz")
                   for i, node in enumerate(volume_nodes)]
        if writers:
            Path(config_data["data"]).mkdir(parents=True, exist_ok=params.resume)

        def prepare() -> None:
            for write in writers:
                write()
        config = self._write_config(config_data, "pretrain")
        return self._start(params.command(config, python=self.python), [], on_finished,
                           prepare=prepare if writers else None, temporary=[config.parent])

    def start_finetuning(self, pairs: Sequence[tuple[Any, Any]], params: FinetuneParameters,
                         on_finished: Callable[[RunState], None] | None = None) -> BackgroundProcess:
        """Export each (volume node, segmentation node) pair to files and start ``vococore finetune``.

        Each segmentation is exported on its volume's grid. Segments are matched across pairs by name; their
        order in the first segmentation sets the label values. The exported files are removed when the run ends.
        """
        export_dir = Path(tempfile.mkdtemp(prefix="finetune-data-", dir=self.work_dir))
        try:
            files, classes, colors = [], [], {}
            for index, (volume_node, segmentation_node) in enumerate(pairs):
                volume = nodes.volume_from_node(volume_node)
                labels, info = nodes.labelmap_from_segmentation(segmentation_node, volume)
                for entry in info:
                    if entry.name not in classes:
                        classes.append(entry.name)
                        colors[entry.name] = entry.color
                relabelled = np.zeros_like(labels, dtype=np.uint8)
                for entry in info:
                    relabelled[labels == entry.value] = classes.index(entry.name) + 1
                image = write_volume(volume, export_dir / f"case{index:03d}_image.nii.gz")
                label = write_labelmap(relabelled, volume, export_dir / f"case{index:03d}_label.nii.gz")
                files.append((str(image), str(label)))
            params.pairs, params.classes, params.colors = files, classes, colors
            valid = params.validate()
            if not valid:
                raise VoCoError(valid.reason)
            table = export_dir / "labels.json"
            table.write_text(json.dumps(params.label_table()))
            config = self._write_config(params.config(table), "finetune", export_dir)
            return self._start(params.command(config, python=self.python), [], on_finished, temporary=[export_dir])
        except BaseException:
            shutil.rmtree(export_dir, ignore_errors=True)
            raise

    def training_estimate(self, steps: int, recipe: str) -> str:
        """CPU time of ``steps`` pretraining steps of ``recipe`` with the network its preset trains, from measured
        SwinUNETR rates; for other networks there is no measurement, and the run's own ETA is the estimate."""
        config = PretrainParameters(recipe=recipe, steps=steps).config()
        backbone, r = config["backbone"], get_recipe(recipe)
        if backbone["arch"] != "swin":
            return "no measured rate for this network: the progress line shows the ETA after the first steps"
        crops = int(config["batch_size"]) * (r.num_bases + r.num_targets)
        seconds = device.estimate_training_s(steps, crops, (r.input_size,) * 3, int(backbone["feature_size"]))
        return f"about {device.format_duration(seconds)} on this computer's CPU; a GPU is far faster"

    def finetune_estimate(self, steps: int, network: str) -> str:
        """CPU time of ``steps`` fine-tuning steps of ``network`` (crops per step x window, its feature size), from
        the measured SwinUNETR training rates; the CNN has no measurement."""
        from VoCoSlicerLib.parameters import NETWORKS

        spec = NETWORKS[network]
        if spec["backbone"]["arch"] != "swin":
            return "no measured rate for this network: the progress line shows the ETA after the first steps"
        from vococore.segmentation.finetune import FinetuneTrain

        crops = int(FinetuneTrain().samples_per_volume)
        seconds = device.estimate_training_s(steps, crops, tuple(spec["roi_size"]),
                                             int(spec["backbone"]["feature_size"]))
        return f"about {device.format_duration(seconds)} on this computer's CPU; a GPU is far faster"

    # --- runs -----------------------------------------------------------------------------------------------------
    def _write_config(self, data: dict[str, Any], kind: str, folder: Path | None = None) -> Path:
        folder = folder or Path(tempfile.mkdtemp(prefix=f"{kind}-", dir=self.work_dir))
        path = folder / f"{kind}.yaml"
        path.write_text(yaml.safe_dump(data, sort_keys=False))
        return path

    def _start(self, command: list[str], outputs: list[Path], on_finished: Callable[[RunState], None] | None,
               **options: Any) -> BackgroundProcess:
        if self.process is not None and self.process.state is RunState.RUNNING:
            for folder in options.get("temporary", ()):
                shutil.rmtree(folder, ignore_errors=True)
            raise VoCoError("another VoCo run is still going; cancel it or wait until it ends")
        self.process = BackgroundProcess(command, outputs, on_progress=self.on_progress, on_log=self.on_log,
                                         on_finished=on_finished, **options)
        return self.process.start()

    def cancel(self) -> None:
        """Stop the current run (the whole process tree) within 5 seconds."""
        if self.process is not None:
            self.process.cancel()
