"""Everything the VoCoSlicer module does, without Qt: exports nodes to files, runs ``vococore`` in the background,
brings results back as nodes, draws the grid and the position table. The widget only calls this."""

from __future__ import annotations

import dataclasses
import json
import tempfile
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
import yaml

from vococore.utils.errors import VoCoError
from vococore.io import write_labelmap, write_volume
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

    # --- segmentation -------------------------------------------------------------------------------------------
    def model_path(self, model_id: str) -> Path | None:
        """The model package to run, converting a downloaded official checkpoint on first use; None when the
        model still needs downloading."""
        entry = self.registry.get(model_id)
        weights = self.registry.local_path(entry)
        if weights is None or weights.name.endswith(".vocomodel"):
            return weights
        package = convert.package_path(self.registry, entry)
        return package if package.is_file() else convert.package_official_model(entry, weights, package)

    def start_segmentation(self, volume_node: Any, params: SegmentParameters,
                           on_finished: Callable[[RunState, Any], None] | None = None,
                           model_file: Path | None = None) -> BackgroundProcess:
        """Export the CT, run ``vococore infer`` in the background; on success load the result beside the input.

        ``model_file`` overrides the registry (a model package on disk). ``on_finished(state, segmentation)``.
        """
        name = volume_node.GetName() if volume_node is not None else None
        model_path = model_file or (self.model_path(params.model) if params.model else None)
        valid = params.validate(name, model_path)
        if not valid:
            raise VoCoError(valid.reason)
        if model_path is None:
            raise VoCoError(f"model {params.model!r} is not downloaded yet")
        volume = nodes.volume_from_node(volume_node)
        package = read_package_info(model_path)
        check = device.check_device(params.device, device.inference_memory_gb(int(package.backbone.feature_size),
                                                                              package.roi_size))
        if not check.ok:
            raise VoCoError(check.reason)
        run_dir = Path(tempfile.mkdtemp(prefix="segment-", dir=self.work_dir))
        input_path = write_volume(volume, run_dir / "input.nii.gz")
        output = run_dir / "segmentation.seg.nrrd"

        def finished(state: RunState) -> None:
            self.result_node = None
            if state is RunState.SUCCEEDED:
                self.result_node = nodes.load_segmentation(output, self.scene, f"{name} VoCo", volume_node)
            if on_finished:
                on_finished(state, self.result_node)

        # run on the device that was checked ('auto' resolved), so the check and the run agree
        command = dataclasses.replace(params, device=check.device).command(model_path, input_path, output,
                                                                           python=self.python)
        return self._start(command, [output], finished)

    def segmentation_estimate(self, volume_node: Any, feature_size: int = 48) -> str:
        """'about N min on this CPU' for segmenting ``volume_node`` (from measured per-voxel rates; reads only the
        grid size and spacing, not the voxels)."""
        image = volume_node.GetImageData()
        if image is None:
            return ""
        seconds = device.estimate_inference_s(image.GetDimensions(), volume_node.GetSpacing(),
                                              feature_size=feature_size)
        return f"about {device.format_duration(seconds)} on this computer's CPU (rough; GPU: seconds)"

    # --- see what VoCo sees ---------------------------------------------------------------------------------------
    def show_grid(self, volume_node: Any, recipe: str) -> list[Any]:
        """Draw ``recipe``'s base-crop grid on ``volume_node`` as ROIs (replacing our previous grid)."""
        geometry = grid.grid_geometry(nodes.volume_from_node(volume_node), recipe)
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
    def start_pretraining(self, params: PretrainParameters,
                          on_finished: Callable[[RunState], None] | None = None) -> BackgroundProcess:
        """Write the pretraining config and start ``vococore pretrain``; checkpoints let it resume later."""
        valid = params.validate()
        if not valid:
            raise VoCoError(valid.reason)
        config = self._write_config(params.config(), "pretrain")
        return self._start(params.command(config, python=self.python), [], on_finished)

    def start_finetuning(self, pairs: Sequence[tuple[Any, Any]], params: FinetuneParameters,
                         on_finished: Callable[[RunState], None] | None = None) -> BackgroundProcess:
        """Export each (volume node, segmentation node) pair to files and start ``vococore finetune``.

        Segments are matched across pairs by name; their order in the first segmentation sets the label values.
        """
        export_dir = Path(tempfile.mkdtemp(prefix="finetune-data-", dir=self.work_dir))
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
        config = self._write_config(params.config(table), "finetune")
        return self._start(params.command(config, python=self.python), [], on_finished)

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

    # --- runs -----------------------------------------------------------------------------------------------------
    def _write_config(self, data: dict[str, Any], kind: str) -> Path:
        path = Path(tempfile.mkdtemp(prefix=f"{kind}-", dir=self.work_dir)) / f"{kind}.yaml"
        path.write_text(yaml.safe_dump(data, sort_keys=False))
        return path

    def _start(self, command: list[str], outputs: list[Path],
               on_finished: Callable[[RunState], None] | None) -> BackgroundProcess:
        if self.process is not None and self.process.state is RunState.RUNNING:
            raise VoCoError("another VoCo run is still going; cancel it or wait until it ends")
        self.process = BackgroundProcess(command, outputs, on_progress=self.on_progress, on_log=self.on_log,
                                         on_finished=on_finished)
        return self.process.start()

    def cancel(self) -> None:
        """Stop the current run (the whole process tree) within 5 seconds."""
        if self.process is not None:
            self.process.cancel()
