"""The module's parameters as plain dataclasses: each validates itself with a reason a person can act on, and
builds the ``vococore`` command line (and config file contents) for its background run."""

from __future__ import annotations

import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

DEVICES = ("auto", "cuda", "cpu")
RECIPES = ("v2", "v1", "small")
PRETRAIN_PRESETS = {"v2": "pretrain_v2_B", "v1": "pretrain_v1_B", "small": "pretrain_small"}  # vococore's configs
# Fine-tuning networks: SwinUNETR as VoCo's weights need it, or a small CNN at 6 mm that trains on a CPU in minutes.
NETWORKS = {
    "swin": {"backbone": {"arch": "swin", "feature_size": 48, "legacy_merging": True}, "roi_size": [96, 96, 96]},
    "cnn": {"backbone": {"arch": "cnn", "feature_size": 8, "legacy_merging": False, "use_checkpoint": False},
            "roi_size": [32, 32, 32], "preprocess": {"spacing": [6.0, 6.0, 6.0], "min_size": [32, 32, 32]}},
}


def vococore_command(python: str | None = None) -> list[str]:
    """How to start vococore with Slicer's Python (``PythonSlicer``) or this interpreter: ``python -m vococore``."""
    return [python or sys.executable, "-m", "vococore"]


def fitting_cache_gb(output_dir: Path, preset_gb: float) -> float:
    """The preset's cache limit, capped at a quarter of the free disk under ``output_dir`` (and 50 GB)."""
    import shutil

    probe = output_dir
    while not probe.exists() and probe != probe.parent:
        probe = probe.parent
    free_gb = shutil.disk_usage(probe).free / 2**30
    cap = min(50.0, free_gb / 4)
    return round(min(preset_gb, cap) if preset_gb > 0 else cap, 1)


def fitting_workers(preset: int) -> int:
    """DataLoader workers: the preset's, but no more than this machine's cores minus two (Slicer keeps one, the
    training process one) and never more than 4."""
    import os

    return max(0, min(preset, (os.cpu_count() or 1) - 2, 4))


@dataclass(frozen=True)
class Validity:
    """Outcome of a validation: ``ok``, and when not ok the ``reason`` to show next to the disabled button."""

    ok: bool
    reason: str = ""

    def __bool__(self) -> bool:
        return self.ok


def _first_problem(checks: list[tuple[bool, str]]) -> Validity:
    for ok, reason in checks:
        if not ok:
            return Validity(False, reason)
    return Validity(True)


@dataclass
class SegmentParameters:
    """Segment a CT with a packaged model (``vococore infer``)."""

    model: str = "VoComni_B"
    device: str = "auto"

    def validate(self, input_name: str | None, model_path: Path | None) -> Validity:
        """Input volume chosen, device known, and the model file present (downloaded or imported)."""
        return _first_problem([
            (bool(input_name), "Select an input CT volume."),
            (bool(self.model) or model_path is not None, "Select a model."),
            (self.device in DEVICES, f"Unknown device {self.device!r}; choose one of {', '.join(DEVICES)}."),
            (model_path is None or model_path.is_file(), f"Model file {model_path} is missing; download or import "
                                                         "it again."),
        ])

    def command(self, model_path: Path, input_path: Path, output_path: Path, python: str | None = None) -> list[str]:
        """``vococore infer`` writing a ``.seg.nrrd`` on the input's grid, with JSON progress lines."""
        return [*vococore_command(python), "infer", "--model", str(model_path), "--input", str(input_path),
                "--output", str(output_path), "--device", self.device, "--json-progress"]


@dataclass
class PretrainParameters:
    """Self-supervised VoCo pretraining on a folder of CT volumes or a datalist JSON (``vococore pretrain``)."""

    data: str = ""
    output_dir: str = ""
    recipe: str = "v2"
    steps: int = 1000
    device: str = "auto"
    resume: bool = False
    loaded_volumes: int = 0  # > 0: the data are this many volumes of the scene, exported under output_dir/data

    def validate(self) -> Validity:
        """Data exists, recipe and device are known, and the output folder is new unless resuming."""
        data, out = Path(self.data), Path(self.output_dir)
        last = out / "checkpoints" / "last.pt"
        loaded = self.loaded_volumes > 0
        return _first_problem([
            (loaded or (bool(self.data) and data.exists()), f"Training data {self.data!r} does not exist; choose "
                                                            "a folder of CT volumes or a datalist .json, or load "
                                                            "CT volumes into the scene."),
            (loaded or data.is_dir() or data.suffix == ".json", f"{self.data} is neither a folder nor a datalist "
                                                                ".json."),
            (not loaded or self.loaded_volumes >= 2, "Pretraining on the loaded volumes needs at least 2 of them "
                                                     "(VoCo's inter-volume loss compares volumes)."),
            (self.recipe in RECIPES, f"Unknown recipe {self.recipe!r}; choose one of {', '.join(RECIPES)}."),
            (self.device in DEVICES, f"Unknown device {self.device!r}; choose one of {', '.join(DEVICES)}."),
            (self.steps >= 1, "Steps must be at least 1."),
            (bool(self.output_dir), "Choose an output folder."),
            (not self.resume or last.is_file(), f"Nothing to resume: {last} does not exist."),
            (self.resume or not last.exists(), f"{out} already holds a run; tick 'Resume' or choose another folder."),
        ])

    def config(self) -> dict[str, Any]:
        """The YAML config contents of ``vococore pretrain`` (``vococore.pretraining.run.PretrainConfig``): vococore's
        packaged preset for the recipe (backbone, optimiser, batch), with this run's data, steps, device, output."""
        import yaml

        from vococore.utils.config import config_path

        base = yaml.safe_load(config_path(PRETRAIN_PRESETS[self.recipe]).read_text())
        out = Path(self.output_dir).expanduser().resolve()
        data = out / "data" if self.loaded_volumes else Path(self.data).expanduser().resolve()
        # the presets are sized for an 8-GPU server (200 GB cache, 8 workers) and use paths relative to the working
        # directory, which inside Slicer is wherever Slicer started: here everything lives under the output folder
        return {**base, "data": str(data), "steps": self.steps, "device": self.device, "output_dir": str(out),
                "cache_dir": str(out / "cache") if base.get("cache_dir") else None,
                "cache_limit_gb": fitting_cache_gb(out, float(base.get("cache_limit_gb") or 0.0)),
                "workers": fitting_workers(int(base.get("workers") or 0)),
                "checkpoint_every": max(1, min(int(base.get("checkpoint_every", 1000)), self.steps // 10))}

    def command(self, config_path: Path, python: str | None = None) -> list[str]:
        """``vococore pretrain`` with JSON progress (and ``--resume`` to continue from the last checkpoint)."""
        return [*vococore_command(python), "pretrain", "--config", str(config_path), "--json-progress",
                *(["--resume"] if self.resume else [])]


@dataclass
class FinetuneParameters:
    """Fine-tune a segmentation network from pretrained weights on image/label file pairs (``vococore finetune``).

    ``classes`` names the label values 1..N of the label files, in order; ``colors`` maps names to RGB 0..1.
    """

    pairs: list[tuple[str, str]] = field(default_factory=list)
    classes: list[str] = field(default_factory=list)
    colors: dict[str, tuple[float, float, float]] = field(default_factory=dict)
    weights: str = ""
    output_dir: str = ""
    network: str = "swin"
    steps: int = 500
    device: str = "auto"
    resume: bool = False

    def validate(self) -> Validity:
        """At least one pair of existing files, weights present if given, and a fresh output unless resuming."""
        last = Path(self.output_dir) / "checkpoints" / "last.pt"
        missing = [p for pair in self.pairs for p in pair if not Path(p).is_file()]
        return _first_problem([
            (bool(self.pairs), "Add at least one CT volume with its segmentation."),
            (not missing, f"Missing training file(s): {', '.join(missing[:3])}."),
            (bool(self.classes), "The segmentation has no segments to learn."),
            (not self.weights or Path(self.weights).is_file(), f"Pretrained weights {self.weights} not found."),
            (self.network in NETWORKS, f"Unknown network {self.network!r}; choose one of {', '.join(NETWORKS)}."),
            (self.device in DEVICES, f"Unknown device {self.device!r}; choose one of {', '.join(DEVICES)}."),
            (self.steps >= 1, "Steps must be at least 1."),
            (bool(self.output_dir), "Choose an output folder."),
            (not self.resume or last.is_file(), f"Nothing to resume: {last} does not exist."),
            (self.resume or not last.exists(), f"{self.output_dir} already holds a run; tick 'Resume' or choose "
                                               "another folder."),
        ])

    def label_table(self) -> dict[str, str]:
        """The ``{value: name}`` JSON contents that tell vococore what the label values mean."""
        return {str(value): name for value, name in enumerate(self.classes, start=1)}

    def config(self, label_table_path: Path) -> dict[str, Any]:
        """The YAML config contents of ``vococore finetune`` (``vococore.segmentation.finetune.FinetuneConfig``)."""
        return {"output_dir": self.output_dir, "pretrained": self.weights or None, "device": self.device,
                **NETWORKS[self.network],
                "data": {"images": [image for image, _ in self.pairs], "labels": [label for _, label in self.pairs],
                         "label_table": str(label_table_path), "classes": list(self.classes),
                         "colors": {name: list(rgb) for name, rgb in self.colors.items()}},
                "train": {"steps": self.steps, "val_every": max(1, min(100, self.steps)),
                          "checkpoint_every": max(1, min(100, self.steps))}}

    def command(self, config_path: Path, python: str | None = None) -> list[str]:
        """``vococore finetune`` with JSON progress."""
        return [*vococore_command(python), "finetune", "--config", str(config_path), "--json-progress",
                *(["--resume"] if self.resume else [])]
