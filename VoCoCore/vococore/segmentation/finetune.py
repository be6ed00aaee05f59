"""Segmentation fine-tuning: SwinUNETR (or the CPU-sized BasicUNet) initialised from VoCo weights or from scratch,
trained with DiceCE on positive/negative-balanced crops through the shared training loop, validated with a
sliding window and MONAI DiceMetric, keeping the best model as a ready-to-use package.

Pretrained weights decide the Swin patch merging: files that record it (ours) keep theirs, unrecorded ones are
official releases and get MONAI 1.3.0's; the choice is written to config.yaml, checkpoints and the package.
Outputs in ``output_dir``: ``config.yaml`` (resolved), ``checkpoints/last.pt`` and ``checkpoints/best.pt``,
``best.vocomodel``, ``metrics.jsonl``, ``validation.jsonl``, ``tensorboard/``, ``load_report.txt`` (if pretrained).
"""

from __future__ import annotations

import json
import logging
import os
from dataclasses import dataclass, field
from pathlib import Path

import torch

from vococore.utils.config import config_path, load_config, save_config
from vococore.utils.errors import VoCoError
from vococore.segmentation.data import (batch_for_step, crop_transform, label_table, pairs_from_datalist,
                                    pairs_from_lists, prepare_cases, select_classes)
from vococore.networks.backbones import BackboneSpec, build_segmenter
from vococore.preprocessing.preprocessor import PreprocessConfig
from vococore.utils.progress import Progress
from vococore.training.distributed import DistInfo
from vococore.training.loop import LoopConfig

log = logging.getLogger(__name__)


@dataclass
class FinetuneData:
    """Training pairs (a datalist or explicit lists, or "sample:NAME" entries) and the labels to learn."""

    datalist: str | None = None  # MSD-style JSON: "training"/"validation" lists of {"image", "label"}
    images: list[str] = field(default_factory=list)
    labels: list[str] = field(default_factory=list)
    val_images: list[str] = field(default_factory=list)  # none given: validate on the training cases
    val_labels: list[str] = field(default_factory=list)
    label_table: str = "totalseg"  # "totalseg" or a JSON file {id: name}
    classes: list[str] = field(default_factory=list)  # names or ids, in output-channel order 1..N
    colors: dict[str, list[float]] = field(default_factory=dict)  # optional RGB 0..1 by name


@dataclass
class FinetuneTrain:
    """Optimisation (VoCo BTCV recipe defaults: AdamW 3e-4, wd 1e-5, 4 crops/volume, pos 9 : neg 1)."""

    steps: int = 1000
    lr: float = 3e-4
    weight_decay: float = 1e-5
    warmup_steps: int = 50
    samples_per_volume: int = 4
    pos: float = 9.0
    neg: float = 1.0
    augment: bool = True
    val_every: int = 100
    val_overlap: float = 0.5
    amp: str = "auto"
    grad_clip: float | None = None
    checkpoint_every: int = 100
    seed: int = 0


@dataclass
class FinetuneConfig:
    """One fine-tuning run (``vococore finetune --config FILE.yaml``)."""

    output_dir: str = "runs/finetune"
    backbone: BackboneSpec = field(default_factory=BackboneSpec)
    pretrained: str | None = None  # VoCo encoder/checkpoint/package in any layout models.weights accepts
    pretrained_min_fraction: float = 0.5
    preprocess: PreprocessConfig = field(default_factory=PreprocessConfig)
    roi_size: tuple[int, int, int] = (96, 96, 96)
    data: FinetuneData = field(default_factory=FinetuneData)
    train: FinetuneTrain = field(default_factory=FinetuneTrain)
    description: str = ""
    device: str = "auto"
    dist_timeout_s: float = 1800.0  # torchrun: the longest any rank waits for the others


def load_finetune_config(path: str | os.PathLike, overrides: dict | None = None) -> FinetuneConfig:
    """Read the YAML config (a file or a packaged name); ``sample:NAME`` data entries become the registered
    sample dataset NAME (e.g. ``sample:TotalSegCT``); other relative paths stay relative to the current folder."""
    from vococore.io.sampledata import fetch

    where = config_path(path, "finetune")
    config = load_config(FinetuneConfig, where, overrides)
    unit = config.backbone.min_input
    if len(config.roi_size) != 3 or any(int(r) % unit or int(r) < 2 * unit for r in config.roi_size):
        # at one unit the deepest stage is 1 voxel and InstanceNorm fails in training, deep inside torch
        raise VoCoError(f"roi_size {list(config.roi_size)}: the {config.backbone.arch} backbone needs 3 sizes, each "
                        f"a multiple of {unit} of at least {2 * unit}", where)
    data = config.data
    for name in ("images", "labels", "val_images", "val_labels"):
        setattr(data, name, [str(fetch(p.removeprefix("sample:"))) if p.startswith("sample:") else p
                             for p in getattr(data, name)])
    return config


@dataclass
class FinetuneResult:
    """Where a run ended: step, best mean Dice and its step, and the files written."""

    step: int
    best_dice: float
    best_step: int
    last_checkpoint: Path
    package: Path | None
    history: list[dict] = field(default_factory=list)  # validation records
    stopped: bool = False  # a stop signal ended the run early (resume to continue)


def run_finetune(config: FinetuneConfig, resume: bool = False, json_progress: bool = False,
                 stop_after: int | None = None) -> FinetuneResult:
    """Train as configured (continuing ``checkpoints/last.pt`` when ``resume``), for at most ``stop_after``
    steps in this call (None: to the end); returns the outcome. Resuming repeats exactly the crops, RNG states
    and schedule of an uninterrupted run. Under torchrun each rank trains on its own crops (DDP), validation is
    split between the ranks, and only rank 0 writes files. SIGTERM/SIGINT stop after the current step (or the
    current validation) with a checkpoint (``stopped`` in the result); a validation due at the step a run
    stopped at is done first on resume."""
    from vococore.training.checkpoint import load_checkpoint
    from vococore.training.distributed import any_rank, barrier, cleanup, init_distributed, wrap_model
    from vococore.training.loop import StopRequest, Trainer, seed_everything

    out = Path(config.output_dir)
    if not resume and (out / "checkpoints" / "last.pt").exists():
        raise VoCoError("holds a previous run; pass --resume to continue it or choose another output_dir", out)
    previous = load_checkpoint(out / "checkpoints" / "last.pt") if resume else None
    if previous is not None:  # keep the patch merging the run started with (it may come from the weights file)
        config.backbone.legacy_merging = bool(previous["backbone"].get("legacy_merging"))
    info = init_distributed(config.device, config.dist_timeout_s)
    try:
        if info.is_main:
            out.mkdir(parents=True, exist_ok=True)
        seed_everything(config.train.seed)
        mapping, labels = select_classes(config.data.classes, label_table(config.data.label_table),
                                         config.data.colors)
        train_cases, val_cases = _cases(config, mapping)
        model = build_segmenter(config.backbone, len(labels) + 1)
        if config.pretrained and not resume:
            _load_pretrained(model, config, out if info.is_main else None)
        if info.is_main:
            save_config(config, out / "config.yaml")
        barrier(info)
        model.to(info.device)
        t = config.train
        loop = LoopConfig(steps=t.steps, lr=t.lr, weight_decay=t.weight_decay, warmup_steps=t.warmup_steps,
                          amp=t.amp, grad_clip=t.grad_clip, checkpoint_every=t.checkpoint_every)
        trainer = Trainer(wrap_model(model, info), _dice_ce_step(), loop, out, info, backbone=config.backbone,
                          run_config=config, kind="finetune", stage="finetune", json_progress=json_progress)
        best_dice, best_step, validated = -1.0, 0, 0
        if previous is not None:
            trainer.resume()
            state = previous.get("data_state") or {}
            best_dice, best_step = float(state.get("best_dice", -1.0)), int(state.get("best_step", 0))
            validated = int(state.get("validated", trainer.step))  # older checkpoints: validated when due
        crops = crop_transform(config.roi_size, t.samples_per_volume, t.pos, t.neg, t.augment)
        history, stopped = [], False
        end = t.steps if stop_after is None else min(t.steps, trainer.step + stop_after)

        def data_state(step: int) -> dict:
            return {"next_step": step, "best_dice": best_dice, "best_step": best_step, "validated": validated}

        # one StopRequest over training and validation: a signal during validation lets it finish, then stops
        with StopRequest() as stop:
            while True:
                # a validation is due at every val_every-th step and the last one; a run stopped right after such
                # a step has not done it yet (``validated`` in the checkpoint), so the resumed run does it first
                if trainer.step > validated and (trainer.step % t.val_every == 0 or trainer.step == t.steps):
                    record = validate(model, val_cases, config.roi_size, t.val_overlap, labels, trainer.step,
                                      json_progress, info)
                    history.append(record)
                    validated = trainer.step
                    if record["mean_dice"] > best_dice:
                        best_dice, best_step = record["mean_dice"], trainer.step
                        if info.is_main:
                            _save_best(trainer, config, labels, out)
                    if info.is_main:
                        with open(out / "validation.jsonl", "a") as fh:
                            fh.write(json.dumps(record) + "\n")
                    stopped = any_rank(stop.requested, info)
                    trainer.save(data_state(trainer.step))
                if stopped or trainer.step >= end:
                    break
                chunk = min(t.val_every - trainer.step % t.val_every, end - trainer.step)
                # step s on rank r draws the crops a single process would draw at step s * world_size + r
                batches = (batch_for_step(train_cases, crops, s * info.world_size + info.rank, t.seed)
                           for s in range(trainer.step, t.steps))
                stopped = trainer.fit(batches, stop_after=chunk, data_state=data_state, stop=stop).stopped
                if stopped:
                    break
        barrier(info)  # leave the process group together (see cleanup)
        package = out / "best.vocomodel"
        return FinetuneResult(trainer.step, best_dice, best_step, out / "checkpoints" / "last.pt",
                              package if package.exists() else None, history, stopped)
    finally:
        cleanup(info)


def _load_pretrained(model: torch.nn.Module, config: FinetuneConfig, out: Path | None) -> None:
    """Copy the pretrained weights in; the patch merging follows the file. ``out`` (rank 0) gets the report."""
    from vococore.networks.weights import load_weights

    report = load_weights(model, config.pretrained, config.pretrained_min_fraction)
    if out is not None:
        (out / "load_report.txt").write_text(report.summary(max_keys=50) + "\n")
        log.info("%s", report.summary())
    if report.legacy_merging is not None and report.legacy_merging != config.backbone.legacy_merging:
        log.warning("patch merging set to %s to match the pretrained weights (config said %s)",
                    "MONAI 1.3.0" if report.legacy_merging else "MONAI >= 1.4", config.backbone.legacy_merging)
        config.backbone.legacy_merging = report.legacy_merging


def _cases(config: FinetuneConfig, mapping: dict[int, int]):
    data = config.data
    if data.datalist:
        train = pairs_from_datalist(data.datalist, "training")
        val = pairs_from_datalist(data.datalist, "validation") if _has_split(data.datalist) else []
    else:
        train = pairs_from_lists(data.images, data.labels)
        val = pairs_from_lists(data.val_images, data.val_labels)
    if not train:
        raise VoCoError("no training pairs: set data.datalist or data.images/data.labels")
    train_cases = prepare_cases(train, config.preprocess, mapping)
    return train_cases, (prepare_cases(val, config.preprocess, mapping) if val else train_cases)


def _has_split(datalist: str, split: str = "validation") -> bool:
    return bool(json.loads(Path(datalist).read_text()).get(split))


def _dice_ce_step():
    from monai.losses import DiceCELoss

    loss_fn = DiceCELoss(to_onehot_y=True, softmax=True)

    def step(model: torch.nn.Module, batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        return {"total": loss_fn(model(batch["image"]), batch["label"])}

    return step


def validate(model: torch.nn.Module, cases, roi_size, overlap: float, labels, step: int,
             json_progress: bool = False, info: DistInfo | None = None) -> dict:
    """Sliding-window argmax on each case and per-class Dice (MONAI DiceMetric, background excluded), averaged
    over the cases where the class is present. Under torchrun rank r scores cases r, r + N, ...; the per-case
    Dice is gathered and averaged in case order, so every world size gives the same numbers."""
    from monai.metrics import DiceMetric
    from monai.networks.utils import one_hot

    from vococore.segmentation.sliding_window import argmax_in_slabs, sliding_window_scores
    from vococore.training.distributed import gather_objects, unwrap_model

    info = info or DistInfo()
    net = unwrap_model(model)
    n = len(labels) + 1
    metric = DiceMetric(include_background=False, reduction="none", ignore_empty=True)
    device = next(net.parameters()).device
    net.eval()
    mine = range(info.rank, len(cases), info.world_size)
    bar = Progress("validate", len(mine), json_lines=json_progress and info.is_main, enabled=info.is_main)
    scores = {}
    with torch.no_grad():
        for i in mine:
            case = cases[i]
            pred = argmax_in_slabs(sliding_window_scores(net, case.image[None].to(device), roi_size,
                                                         overlap=overlap, accumulate_dtype=torch.float32))
            scores[i] = metric(one_hot(pred[None, None].long(), n),
                               one_hot(case.label[None].long().to(device), n))[0].cpu()
            bar.update()
    for part in gather_objects(scores, info):
        scores.update(part)
    per_case = torch.stack([scores[i] for i in range(len(cases))])  # (cases, classes), NaN where absent
    present = ~per_case.isnan()
    per_class = (torch.where(present, per_case, 0).sum(0) / present.sum(0)).tolist()
    dice = {li.name: round(float(d), 4) for li, d in zip(labels, per_class)}
    finite = [d for d in dice.values() if d == d]
    mean = sum(finite) / len(finite) if finite else 0.0
    bar.close(mean_dice=mean, **{f"dice_{k}": v for k, v in dice.items() if v == v})
    net.train()
    return {"step": step, "mean_dice": round(mean, 4), "dice": dice}


def _save_best(trainer, config: FinetuneConfig, labels, out: Path) -> None:
    from vococore.segmentation.package import ModelPackage, save_package
    from vococore.training.checkpoint import build_checkpoint, save_checkpoint
    from vococore.training.distributed import unwrap_model

    model = unwrap_model(trainer.model)
    save_checkpoint(out / "checkpoints" / "best.pt",
                    build_checkpoint(trainer.step, model, kind="finetune", backbone=config.backbone,
                                     config=config))
    package = ModelPackage(backbone=config.backbone, labels=labels, preprocess=config.preprocess,
                           roi_size=tuple(config.roi_size), overlap=0.5, description=config.description,
                           extra={"trained_steps": trainer.step, "pretrained": config.pretrained})
    save_package(model, package, out / "best.vocomodel", overwrite=True)
