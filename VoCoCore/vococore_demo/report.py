"""The demo's one-page Markdown report: every number comes from the run that writes it."""

from __future__ import annotations

import datetime
import os
import platform
from pathlib import Path
from typing import Any

import numpy as np

from vococore.utils.atomic import atomic_path


def machine_summary(device: str) -> str:
    """CPU model, cores, memory, device and library versions of this machine, in one line."""
    import monai
    import torch

    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    memory = ""
    try:
        import psutil

        memory = f", {psutil.virtual_memory().total / 2**30:.0f} GiB RAM"
    except ImportError:
        pass
    gpu = f" ({torch.cuda.get_device_name(0)})" if device.startswith("cuda") else ""
    return (f"{cpu}, {os.cpu_count()} logical cores{memory}; device {device}{gpu}; Python "
            f"{platform.python_version()}, torch {torch.__version__}, MONAI {monai.__version__}")


def _fmt(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.3f}"


def _dice_cell(result: Any, model: str, organ: str) -> str:
    """Dice as ``vococore evaluate`` reports it (0 when the reference has the organ and the prediction not, "absent"
    when only the prediction has it, n/a when neither), with the voxel counts whenever one side is empty."""
    predicted, reference = result.voxels[model][organ]
    if predicted > 0 and reference == 0:
        return f"absent ({predicted} predicted / 0 reference voxels)"
    if predicted == 0 or reference == 0:
        return f"{_fmt(result.dice[model][organ])} ({predicted} predicted / {reference} reference voxels)"
    return _fmt(result.dice[model][organ])


PREDICTORS = {"pretrained": "VoCo-pretrained encoder", "untrained": "same architecture, untrained",
              "constant": "best constant guess (geometric prior)"}


def _mean_spread(values: list[float]) -> str:
    v = np.array(values)
    return f"{v.mean():.3f} ± {v.std():.3f}"


def pretext_lines(scores: dict[str, list[dict[str, float]]], crops: int, heldout: str) -> list[str]:
    """The report's lead: one sentence with the held-out pretext result, the table per predictor, the figure."""
    acc = {n: np.array([s["accuracy"] for s in v]) for n, v in scores.items()}
    seeds = len(acc["pretrained"])
    beats = all(acc["pretrained"].min() > acc[n].max() for n in ("untrained", "constant"))
    verdict = ("beats both baselines in every seed" if beats else
               "does NOT clearly beat both baselines (the seeds overlap)")
    mae = {n: np.mean([s["mae"] for s in v]) for n, v in scores.items()}
    calibrated = ("lower than" if mae["pretrained"] < min(mae["untrained"], mae["constant"]) else
                  "not lower than both baselines")
    lines = [f"**On {crops} random sub-volumes per seed of `{heldout}`, a CT pretraining never saw, the pretrained "
             f"encoder ranks the right base highest in {100 * acc['pretrained'].mean():.0f} % of them (untrained: "
             f"{100 * acc['untrained'].mean():.0f} %, best constant guess: {100 * acc['constant'].mean():.0f} %; "
             f"mean of {seeds} seeds), so in ranking it {verdict}.** Its mean absolute overlap error, "
             f"{mae['pretrained']:.3f}, is {calibrated} (untrained {mae['untrained']:.3f}, constant "
             f"{mae['constant']:.3f}): the raw ReLU-cosine logits are scored as overlaps, as the training loss "
             "scores them; where the ranking is right but the error is not lower, the values are not yet calibrated.",
             "",
             "![held-out pretext](pretext_heldout.png)", "",
             f"| predictor | right base ranked highest (mean ± sd over {seeds} seeds) | per seed | "
             "mean abs. overlap error (mean ± sd) |", "|---|---|---|---|"]
    for name, values in scores.items():
        per_seed = " / ".join(f"{s['accuracy']:.3f}" for s in values)
        lines.append(f"| {name}: {PREDICTORS[name]} | {_mean_spread([s['accuracy'] for s in values])} | {per_seed} | "
                     f"{_mean_spread([s['mae'] for s in values])} |")
    lines += ["", "Each seed draws new region placements and target centres on the held-out CT (as pretraining "
              "draws them, without augmentation) and initialises the untrained model; all three predictors are "
              "scored on exactly those crops (`pretext/heldout.npz`). \"right base\": the base predicted highest "
              "has the most true overlap with the sub-volume. The constant guess is, per base, the median true "
              "overlap over every centre the recipe can draw, known without any image. The spread is over "
              "evaluation seeds of one pretraining run, not over pretraining runs.", ""]
    return lines


def _loss_summary(records: list[dict], parts: list[str]) -> list[str]:
    n = max(1, min(10, len(records) // 2))
    rows = ["| loss part | mean of first %d steps | mean of last %d steps |" % (n, n), "|---|---|---|"]
    for part in parts:
        values = np.array([r[part] for r in records])
        rows.append(f"| {part} | {values[:n].mean():.4f} | {values[-n:].mean():.4f} |")
    return rows


def _loss_trend(records: list[dict], parts: list[str]) -> str:
    """One sentence saying which loss parts fell and which rose in this run, with the known caveat if inter rose."""
    n = max(1, min(10, len(records) // 2))
    change = {p: np.mean([r[p] for r in records[-n:]]) - np.mean([r[p] for r in records[:n]]) for p in parts}
    fell = [p for p, d in change.items() if d < 0]
    rose = [p for p, d in change.items() if d >= 0]
    text = f"In this run {', '.join(fell) or 'no part'} fell and {', '.join(rose) or 'no part'} rose."
    if change.get("inter", -1.0) >= 0:
        text += (" The inter-volume term is measured against pseudo-labels from the EMA teacher, which start near "
                 "zero and grow more informative as the teacher catches up with the student, so early on it rises "
                 "by construction and is not comparable across steps (users of the official code report flat or rising "
                 "losses early on, VoCo issue #24).")
    return text


def write_report(path: Path, result: Any, info: dict[str, Any]) -> Path:
    """Write ``report.md`` from the run's ``result`` (DemoResult) and ``info`` (settings, records, positions)."""
    s = info["settings"]
    lines = [
        "# VoCo end to end on real CT: demo report",
        "",
        f"Run {datetime.datetime.now().strftime('%Y-%m-%d %H:%M')} on {info['machine']}. "
        f"Total time {result.wall_s / 60:.1f} min (this run, start-up included; building the environment not).",
        "",
        "## What VoCo learned: the pretext task on an unseen CT",
        "",
        *pretext_lines(result.pretext, s.heldout_crops, info["heldout"]),
        "## Time per stage",
        "",
        "| stage | what it did | seconds |",
        "|---|---|---|",
    ]
    for name, what in info["stages"].items():
        lines.append(f"| {name} | {what} | {result.seconds.get(name, 0.0):.0f} |")
    lines += ["", "## 1. VoCo pretraining (small CPU preset)", "",
              f"{s.pretrain_steps} steps of the VoCo v2 code path (intra-volume + inter-volume + regularization "
              f"losses, EMA teacher projector) on {info['pretrain_volumes']} real CT volumes of one patient (the "
              "TotalSegmentator example CT and its 30-slice slab; the DICOM series is held out), with the `small` "
              "recipe (96×96×32 region at 3 mm, 3×3 grid of 32³ base crops, a small BasicUNet encoder). Unlike "
              "v2 it drops no embedding rows (on so small an encoder that kept the intra-volume loss at the level "
              "of a constant guess), so student and teacher see the same embeddings and the inter-volume term "
              "only measures how far the EMA teacher lags: it goes to about zero.", ""]
    lines += _loss_summary(info["pretrain_records"], info["loss_parts"])
    lines += ["", _loss_trend(info["pretrain_records"], info["loss_parts"]), "",
              "![pretraining loss](pretrain_loss.png)", "",
              "## 2. Where does a sub-volume belong? (position prediction)", "",
              "The base-crop grid as the preprocessing places it on the CT (world coordinates, mm):", "",
              "![grid, axial](grid_axial.png) ![grid, coronal](grid_coronal.png)", "",
              "For random sub-volumes, the overlap the pretrained encoder predicts with each base crop (ReLU-cosine "
              "logits, not normalised) next to the true overlap from the geometry:", "",
              "| sub-volume | base with most true overlap | base predicted highest | mean abs. error |",
              "|---|---|---|---|"]
    for i, (pred, true) in enumerate(zip(info["predicted"], info["true"])):
        lines.append(f"| {i} | {int(np.argmax(true))} ({np.max(true):.2f}) | {int(np.argmax(pred))} "
                     f"({np.max(pred):.2f}) | {np.abs(pred - true).mean():.3f} |")
    lines += ["", "![positions](positions.png)", "",
              "## 3. Segmentation: VoCo-pretrained vs from scratch", "",
              f"Both models (same BasicUNet, {s.finetune_steps} steps each, same seed and crops, 6 mm, 32³ crops) "
              "were fine-tuned on `example_ct` (TotalSegmentator example) and its 30-slice slab `example_ct_sm`, "
              "then segmented the DICOM series "
              "`example_ct_dicom`, which neither saw. Dice against that series' reference labels "
              "(TotalSegmentator predictions, not manual ground truth), computed with `vococore evaluate` on the "
              "written files:", "",
              "| organ | pretrained | scratch | best Dice on the training case (pretrained / scratch) |",
              "|---|---|---|---|"]
    for organ in s.organs:
        train = info["train_dice"]
        cells = [_dice_cell(result, model, organ) for model in ("pretrained", "scratch")]
        lines.append(f"| {organ} | {cells[0]} | {cells[1]} | {_fmt(train['pretrained'].get(organ))} / "
                     f"{_fmt(train['scratch'].get(organ))} |")
    lines += ["", "An organ the reference has and the prediction misses scores Dice 0; one only the prediction has is "
              "\"absent\" from the reference and left out of any mean; one in neither is n/a, as "
              "`vococore evaluate` reports them; the voxel counts of both are shown then (the series covers only "
              "38 mm of the upper abdomen).", "", "![segmentation](segmentation.png)", "",
              "![fine-tuning](finetune_curves.png)",
              "", "## What this run can and cannot show", "",
              "- It shows the whole pipeline working on real CT: the pretext task and its loss parts, the grid "
              "exactly where the preprocessing puts it, position predictions next to the geometry, fine-tuning, "
              "inference on exactly the input's grid, evaluation in world coordinates, and a Slicer scene.",
              f"- It cannot show that VoCo pretraining helps segmentation: {s.pretrain_steps} pretraining steps on "
              f"{info['pretrain_volumes']} volumes with a tiny CNN is about a millionth of the published budget "
              "(VoCo-B: 160k volumes, about a week on 8 GPUs), and to fit the CPU budget the encoder was "
              "pretrained at 3 mm but fine-tuned at 6 mm. Any Dice gap between the two columns here is within "
              "run-to-run noise; the reference labels are model predictions.",
              "- What it can show about pretraining is the pretext result at the top: measured on crops of a CT "
              "pretraining never saw, against the untrained encoder and the best constant guess on the same crops. "
              "The few sub-volumes in section 2 are illustrations, not evidence.", "",
              "## Files", "",
              "| file | what |", "|---|---|"]
    for name, what in info["files"].items():
        lines.append(f"| `{name}` | {what} |")
    with atomic_path(path, overwrite=True) as tmp:
        Path(tmp).write_text("\n".join(lines) + "\n")
    return path
