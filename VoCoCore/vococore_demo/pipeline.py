"""The main job: VoCo end to end on the bundled real CT, from pretraining to a report and a Slicer scene.

Stages: (1) VoCo pretraining with the small preset on the TotalSegmentator example CT (and its slab); (2) the
pretext task on a CT pretraining never saw (the DICOM series): pretrained vs untrained encoder vs the best constant
guess on the same random sub-volumes, over several seeds; (3) fine-tuning a few organs on the example CT from that
encoder, and from scratch with the same budget; (4) inference on the DICOM series (not used for fine-tuning) and
evaluation against its reference labels; (5) position prediction for a few sub-volumes; then figures, the report
and the scene.
"""

from __future__ import annotations

import contextlib
import shutil
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from vococore.utils.errors import VoCoError

ORGANS = ("liver", "spleen", "kidney_right", "kidney_left")
FEATURE_SIZE = 8  # BasicUNet width shared by the pretrained encoder and both fine-tuned models
PRETRAIN_DATA = ("sample:TotalSegCT", "sample:TotalSegCTSmall")  # one patient: the example CT and its slab
HELDOUT = "TotalSegDICOM"  # another patient, scanner and contrast phase; pretraining never sees it


@dataclass
class DemoSettings:
    """How much work each stage does; ``quick()`` gives the smallest settings (tests)."""

    output: Path = Path("output/demo")
    # Budgets sized so the main job, building its environment included, stays under 10 minutes on 2 cores
    # (BENCHMARKS.md, "Main job from a clean clone"): 200 pretraining steps gave the same held-out pretext accuracy
    # as 300 (3 seeds); fine-tuning, whose comparison the report calls within noise, got the deepest cut.
    pretrain_steps: int = 200
    finetune_steps: int = 120
    validations: int = 3  # validation passes per fine-tuning run
    positions: int = 4
    heldout_crops: int = 200  # random sub-volumes of the held-out CT per seed
    heldout_seeds: int = 3
    organs: tuple[str, ...] = ORGANS
    device: str = "auto"
    seed: int = 0
    overwrite: bool = False

    @classmethod
    def quick(cls, output: Path, **changes) -> "DemoSettings":
        """The smallest run that still exercises every stage (a few steps each)."""
        return cls(output=output, pretrain_steps=8, finetune_steps=8, validations=1, positions=2,
                   heldout_crops=16, **changes)


@dataclass
class DemoResult:
    """What the run produced: per-stage seconds, per-organ Dice of both models, and the files written."""

    output: Path
    seconds: dict[str, float] = field(default_factory=dict)
    wall_s: float = 0.0  # the whole run, imports included (the environment build is not)
    dice: dict[str, dict[str, float | None]] = field(default_factory=dict)  # model -> organ -> Dice
    voxels: dict[str, dict[str, tuple[int, int]]] = field(default_factory=dict)  # model -> organ -> (pred, ref)
    pretext: dict[str, list[dict[str, float]]] = field(default_factory=dict)  # predictor -> per-seed scores
    files: dict[str, Path] = field(default_factory=dict)


def _prepare(settings: DemoSettings) -> Path:
    out = Path(settings.output)
    if out.exists() and any(out.iterdir()):
        if not settings.overwrite:
            raise VoCoError("already holds results; pass --overwrite to replace them or choose another folder", out)
        shutil.rmtree(out)
    out.mkdir(parents=True, exist_ok=True)
    return out


@contextlib.contextmanager
def _stage(result: DemoResult, name: str, number: int, total: int) -> Iterator[None]:
    """Print the stage header and record its wall time in ``result.seconds``."""
    print(f"\n[{number}/{total}] {name}", flush=True)
    start = time.perf_counter()
    yield
    result.seconds[name] = time.perf_counter() - start
    print(f"[{number}/{total}] {name}: {result.seconds[name]:.0f} s", flush=True)


def pretrain_config(settings: DemoSettings, out: Path):
    """The packaged small preset, with the demo's encoder width, step budget and folder."""
    from vococore.utils.config import config_path
    from vococore.utils.config import load_config
    from vococore.pretraining.run import PretrainConfig

    overrides = {"data": list(PRETRAIN_DATA), "steps": settings.pretrain_steps,
                 "output_dir": str(out / "pretrain"), "seed": settings.seed, "device": settings.device,
                 "checkpoint_every": max(settings.pretrain_steps, 1),
                 "warmup_steps": max(1, settings.pretrain_steps // 10), "backbone.feature_size": FEATURE_SIZE}
    return load_config(PretrainConfig, config_path("pretrain_small"), overrides)


def finetune_config(settings: DemoSettings, out: Path, name: str, pretrained: Path | None):
    """The packaged CPU fine-tuning preset (6 mm, 32³ crops, the CT and its slab); both runs differ only in
    ``pretrained``. The encoder was pretrained at the small recipe's 3 mm: the demo shows the mechanics."""
    from vococore.segmentation.finetune import load_finetune_config

    steps = settings.finetune_steps
    overrides = {"output_dir": str(out / name), "pretrained": None if pretrained is None else str(pretrained),
                 "pretrained_min_fraction": 0.3,  # the CNN encoder is 40 of the segmenter's 82 tensors
                 "backbone.feature_size": FEATURE_SIZE, "data.classes": list(settings.organs),
                 "train.steps": steps, "train.val_every": max(1, steps // settings.validations),
                 "train.checkpoint_every": steps, "train.seed": settings.seed, "device": settings.device,
                 "description": f"VoCo demo ({name})"}
    return load_finetune_config("finetune_small", overrides)


def reference_on_grid(ct, organs: tuple[str, ...]) -> np.ndarray:
    """The DICOM series' reference labels on its own grid (through world coordinates), remapped to class ids
    1..N in ``organs`` order (TotalSegmentator names); organs absent from the reference stay absent."""
    from vococore.segmentation.data import label_table
    from vococore.io import read_volume
    from vococore.preprocessing.resample import resample_to_grid
    from vococore.io.sampledata import fetch

    ids = {name: value for value, name in label_table("totalseg").items()}
    source = resample_to_grid(read_volume(fetch("TotalSegDICOMLabels")), ct).array
    out = np.zeros(ct.shape, dtype=np.uint8)
    for cls, organ in enumerate(organs, start=1):
        out[source == ids[organ]] = cls
    return out


def heldout_pretext(checkpoint: Path, settings: DemoSettings, folder: Path) -> dict[str, list[dict[str, float]]]:
    """Score the pretrained encoder, the same architecture untrained (initialised from the seed) and the best
    constant guess on the same random sub-volumes of the held-out CT, once per seed; saves every prediction to
    ``folder/heldout.npz`` (arrays ``<name>_<seed>``) and returns predictor -> per-seed scores."""
    from vococore.io import read_volume
    from vococore.io.sampledata import fetch
    from vococore.pretraining.evaluate_pretext import (constant_guess, heldout_crops, predict_crops, pretext_scores,
                                                       untrained_like)
    from vococore.pretraining.model import load_voco_model
    from vococore.utils.atomic import atomic_path

    model = load_voco_model(checkpoint).eval()
    volume = read_volume(fetch(HELDOUT))
    constant = constant_guess(model.recipe)
    arrays: dict[str, np.ndarray] = {"constant": constant}
    scores: dict[str, list[dict[str, float]]] = {"pretrained": [], "untrained": [], "constant": []}
    for seed in range(settings.heldout_seeds):
        crops = heldout_crops(volume, model.recipe, settings.heldout_crops, seed)
        untrained = untrained_like(model, seed)
        predicted = {"pretrained": predict_crops(model, crops), "untrained": predict_crops(untrained, crops)}
        arrays.update({f"true_{seed}": crops.true, f"centers_{seed}": crops.centers, f"region_{seed}": crops.region,
                       **{f"{name}_{seed}": p for name, p in predicted.items()}})
        for name, p in (*predicted.items(), ("constant", constant)):
            scores[name].append(pretext_scores(p, crops.true))
        print(f"  seed {seed}: " + ", ".join(f"{n} {v[-1]['accuracy']:.2f}" for n, v in scores.items()), flush=True)
    folder.mkdir(parents=True, exist_ok=True)
    with atomic_path(folder / "heldout.npz", overwrite=True) as tmp:
        with open(tmp, "wb") as f:
            np.savez(f, **arrays)
    return scores


def run_demo(settings: DemoSettings) -> DemoResult:
    """Run every stage into ``settings.output`` and return what it measured; prints where the output is."""
    started = time.perf_counter()  # before the heavy imports: the run's wall time includes them
    import torch

    from vococore.segmentation.evaluate import evaluate_files, only_in_prediction
    from vococore.segmentation.finetune import run_finetune
    from vococore.segmentation.inference import InferenceOptions, segment
    from vococore.utils.device import pick_device
    from vococore.io import LabelInfo, read_volume, write_labelmap
    from vococore.pretraining.model import load_voco_model
    from vococore.pretraining.position import predict_positions, write_position_report
    from vococore.preprocessing.preprocessor import Preprocessor
    from vococore.pretraining.pretext import get_recipe
    from vococore.pretraining.run import run_pretraining
    from vococore.io.sampledata import fetch

    from vococore_demo import figures
    from vococore_demo.report import machine_summary, write_report
    from vococore_demo.scene import write_demo_scene

    out = _prepare(settings)
    device = str(pick_device(settings.device))
    result = DemoResult(output=out)
    stages = {"pretraining": "VoCo pretraining, small preset",
              "held-out pretext": "pretrained vs untrained vs constant on a CT pretraining never saw",
              "fine-tuning": "pretrained and scratch runs",
              "inference": "both models on the DICOM series + evaluation", "positions": "position prediction",
              "figures": "figures, model package, Slicer scene"}
    total = len(stages)

    with _stage(result, "pretraining", 1, total):
        config = pretrain_config(settings, out)
        run_pretraining(config)
        checkpoint = out / "pretrain" / "checkpoints" / "last.pt"
    preprocess = get_recipe(config.recipe).preprocess_config()

    with _stage(result, "held-out pretext", 2, total):
        result.pretext = heldout_pretext(checkpoint, settings, out / "pretext")

    with _stage(result, "fine-tuning", 3, total):
        runs = {}
        for name, init in (("pretrained", checkpoint), ("scratch", None)):
            print(f"  fine-tuning from {'the VoCo encoder' if init else 'scratch'}", flush=True)
            runs[name] = run_finetune(finetune_config(settings, out, f"finetune_{name}", init))

    with _stage(result, "inference", 4, total):
        ct = read_volume(fetch("TotalSegDICOM"))
        reference = reference_on_grid(ct, settings.organs)
        reference_path = write_labelmap(reference, ct, out / "reference_dicom.nii.gz")
        names = dict(enumerate(settings.organs, start=1))
        predictions = {}
        for name, run in runs.items():
            labels = segment(run.package, ct, InferenceOptions(device=device))
            info = labels.meta["labels"]
            predictions[name] = labels.array
            path = write_labelmap(labels.array, ct, out / f"segmentation_{name}.seg.nrrd", info)
            scores = evaluate_files(path, reference_path, labels=list(names), names=names)
            result.dice[name] = {s.name: (None if np.isnan(s.dice) or only_in_prediction(s) else s.dice)
                                 for s in scores}
            result.voxels[name] = {s.name: (s.pred_voxels, s.ref_voxels) for s in scores}
        label_info: list[LabelInfo] = info

    with _stage(result, "positions", 5, total):
        model = load_voco_model(checkpoint).eval()
        grid_ct = read_volume(fetch("TotalSegCT"))
        with torch.no_grad():
            positions = predict_positions(model, grid_ct, n_random=settings.positions, seed=settings.seed)
        write_position_report(positions, out / "positions")

    with _stage(result, "figures", 6, total):
        records = figures.read_metrics(out / "pretrain" / "metrics.jsonl")
        parts = [k for k in ("intra", "inter", "reg", "pos", "neg", "total") if k in records[0]]
        figures.plot_pretrain_loss(records, parts, out)
        figures.plot_pretext(result.pretext, out, f"{settings.heldout_crops} sub-volumes of the held-out CT per seed")
        figures.plot_finetune({n: figures.read_metrics(out / f"finetune_{n}" / "metrics.jsonl") for n in runs},
                              {n: r.history for n, r in runs.items()}, out)
        pre = Preprocessor(preprocess)(grid_ct)
        for view in ("axial", "coronal"):
            figures.plot_grid(pre.image[0].numpy(), pre.affine, positions.base_boxes_world, view, out,
                              "TotalSegmentator example CT, small recipe")
        predicted = np.array([s.predicted for s in positions.subvolumes])
        true = np.array([s.true for s in positions.subvolumes])
        figures.plot_positions(predicted, true, out)
        figures.plot_segmentation(ct.array, ct.affine, predictions["pretrained"], reference,
                                  {li.value: li.color for li in label_info}, out,
                                  "DICOM series (not used for fine-tuning): VoCo-pretrained model vs reference")
        scene = write_demo_scene(out / "scene.mrb", grid_ct, config.recipe, predicted[0], true[0], ct,
                                 predictions["pretrained"], label_info)
        package = out / "model" / "voco_demo_organs.vocomodel"
        package.parent.mkdir(exist_ok=True)
        shutil.copy2(runs["pretrained"].package, package)
    result.files = {"report": out / "report.md", "scene": scene, "package": package}
    train_dice = {n: _best_train_dice(r.history) for n, r in runs.items()}
    result.wall_s = time.perf_counter() - started
    write_report(out / "report.md", result, {
        "settings": settings, "machine": machine_summary(device), "stages": stages,
        "pretrain_records": records, "loss_parts": parts,
        "pretrain_volumes": len(config.data) if isinstance(config.data, list) else "the",
        "predicted": predicted, "true": true, "train_dice": train_dice, "heldout": HELDOUT,
        "files": {
            "report.md": "this report", "scene.mrb": "Slicer scene: both CTs, the segmentation, the grid "
            "ROIs, the position table and chart (File > Load Scene)",
            "model/voco_demo_organs.vocomodel": "the VoCo-pretrained organ model package (`vococore infer`)",
            "segmentation_pretrained.seg.nrrd, segmentation_scratch.seg.nrrd": "segmentations of the DICOM "
            "series", "reference_dicom.nii.gz": "its reference labels, remapped to the model's classes",
            "pretext/heldout.npz": "held-out pretext: true overlaps, crop centres and every predictor's "
            "overlaps per seed (`true_0`, `pretrained_0`, `untrained_0`, ..., `constant`)",
            "positions/": "position prediction JSON and one picture per sub-volume",
            "pretrain/, finetune_pretrained/, finetune_scratch/": "run folders: config, metrics, checkpoints",
            **{name: "figure" for name in figures.SIZES}}})
    print(f"\nDone in {result.wall_s / 60:.1f} min. Output: {out.resolve()}\n"
          f"Report: {(out / 'report.md').resolve()}", flush=True)
    return result


def _best_train_dice(history: list[dict]) -> dict[str, float]:
    """Per-organ Dice of the best validation pass (validation is on the training case)."""
    if not history:
        return {}
    best = max(history, key=lambda r: r["mean_dice"])
    return {k: float(v) for k, v in best.get("dice", {}).items()}
