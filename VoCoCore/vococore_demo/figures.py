"""The demo's pictures: loss curves, the base-crop grid over CT, predicted vs true overlaps, segmentation over CT.

Every figure has a fixed pixel size (``SIZES``) so a test can check that a real image of that size was written.
Slices are shown in radiological convention, as Slicer and radiology viewers show them: patient right on the
image's left (axial and coronal), anterior up in axial, superior up in coronal, letters R/L, A/P, S/I on the edges.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from vococore.utils.atomic import atomic_path

DPI = 100
SIZES = {  # name -> (width, height) in pixels
    "pretext_heldout.png": (1000, 450),
    "pretrain_loss.png": (1200, 500),
    "finetune_curves.png": (1200, 500),
    "grid_axial.png": (700, 700),
    "grid_coronal.png": (700, 700),
    "positions.png": (1200, 500),
    "segmentation.png": (1200, 600),
}


def _figure(name: str):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    w, h = SIZES[name]
    return plt, plt.figure(figsize=(w / DPI, h / DPI), dpi=DPI)


def _save(plt, fig, folder: Path, name: str) -> Path:
    with atomic_path(folder / name, overwrite=True) as tmp:
        fig.savefig(tmp, dpi=DPI, format="png")
    plt.close(fig)
    return folder / name


# Letters at the (left, right, bottom, top) edges of a RAS slice shown radiologically, per view.
EDGES = {"axial": ("R", "L", "P", "A"), "coronal": ("R", "L", "I", "S")}


def radiological(ax, view: str) -> None:
    """Flip the x axis of a RAS slice drawn with x increasing rightwards (patient right to the image's left) and
    write the patient directions on the four edges."""
    ax.invert_xaxis()
    style = {"transform": ax.transAxes, "color": "orange", "fontsize": 13, "fontweight": "bold"}
    left, right, bottom, top = EDGES[view]
    ax.text(0.01, 0.5, left, ha="left", va="center", **style)
    ax.text(0.99, 0.5, right, ha="right", va="center", **style)
    ax.text(0.5, 0.01, bottom, ha="center", va="bottom", **style)
    ax.text(0.5, 0.99, top, ha="center", va="top", **style)


def read_metrics(path: Path) -> list[dict]:
    """Records of a run's ``metrics.jsonl`` (one JSON object per training step)."""
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def _smooth(values: np.ndarray, window: int) -> np.ndarray:
    window = max(1, min(window, len(values)))
    return np.convolve(values, np.ones(window) / window, mode="valid")


def plot_pretrain_loss(records: list[dict], parts: Sequence[str], folder: Path) -> Path:
    """Each VoCo loss part against the step (raw and a moving average), one panel per part."""
    plt, fig = _figure("pretrain_loss.png")
    steps = np.array([r["step"] for r in records])
    axes = fig.subplots(1, len(parts))
    for ax, part in zip(np.atleast_1d(axes), parts):
        values = np.array([r[part] for r in records])
        window = max(1, len(values) // 10)
        ax.plot(steps, values, color="0.75", lw=0.8, label="per step")
        ax.plot(steps[window - 1:], _smooth(values, window), color="C0", lw=2, label=f"mean of {window}")
        ax.set_title(part)
        ax.set_xlabel("step")
    np.atleast_1d(axes)[0].legend(fontsize=8)
    fig.suptitle("VoCo pretraining loss parts")
    fig.tight_layout()
    return _save(plt, fig, folder, "pretrain_loss.png")


def plot_pretext(scores: dict[str, list[dict[str, float]]], folder: Path, subtitle: str) -> Path:
    """Held-out pretext accuracy and mean absolute overlap error per predictor: mean over seeds as a bar, the
    spread (min to max) as an error bar, each seed as a dot."""
    plt, fig = _figure("pretext_heldout.png")
    names = list(scores)
    for ax, metric, title in zip(fig.subplots(1, 2), ("accuracy", "mae"),
                                 ("right base ranked highest (higher is better)",
                                  "mean abs. overlap error (lower is better)")):
        values = [np.array([s[metric] for s in scores[n]]) for n in names]
        means = np.array([v.mean() for v in values])
        spread = np.array([[m - v.min() for m, v in zip(means, values)], [v.max() - m for m, v in zip(means, values)]])
        ax.bar(names, means, yerr=spread, capsize=6, color=["C0", "0.6", "0.85"][:len(names)])
        for i, v in enumerate(values):
            ax.plot(np.full(len(v), i), v, "k.", ms=6)
        ax.set_title(title, fontsize=10)
        ax.set_ylim(0, 1 if metric == "accuracy" else None)
    fig.suptitle(f"VoCo pretext on a CT pretraining never saw ({subtitle}; {len(values[0])} seeds)", fontsize=11)
    fig.tight_layout()
    return _save(plt, fig, folder, "pretext_heldout.png")


def plot_finetune(runs: dict[str, list[dict]], validations: dict[str, list[dict]], folder: Path) -> Path:
    """Training loss and validation mean Dice of each fine-tuning run (pretrained vs scratch)."""
    plt, fig = _figure("finetune_curves.png")
    loss_ax, dice_ax = fig.subplots(1, 2)
    for i, (name, records) in enumerate(runs.items()):
        steps = np.array([r["step"] for r in records])
        loss = np.array([r["total"] for r in records])
        window = max(1, len(loss) // 10)
        loss_ax.plot(steps[window - 1:], _smooth(loss, window), color=f"C{i}", label=name)
        val = validations.get(name, [])
        dice_ax.plot([v["step"] for v in val], [v["mean_dice"] for v in val], "o-", color=f"C{i}", label=name)
    loss_ax.set(title="training loss (DiceCE, moving mean)", xlabel="step")
    dice_ax.set(title="validation mean Dice", xlabel="step", ylim=(0, 1))
    loss_ax.legend()
    dice_ax.legend()
    fig.tight_layout()
    return _save(plt, fig, folder, "finetune_curves.png")


def plot_grid(image: np.ndarray, affine: np.ndarray, boxes: list[tuple[np.ndarray, np.ndarray]], view: str,
              folder: Path, title: str) -> Path:
    """A slice of a RAS-oriented image (``affine`` axis-aligned) in world mm with the base-crop boxes drawn.

    ``view`` is ``axial`` (x–y plane at the boxes' centre z) or ``coronal`` (x–z plane at their centre y).
    """
    from matplotlib.patches import Rectangle

    name = f"grid_{view}.png"
    plt, fig = _figure(name)
    ax = fig.add_subplot()
    centres = np.array([c for c, _ in boxes])
    spacing, origin = np.diag(affine)[:3], affine[:3, 3]
    if not np.allclose(affine[:3, :3], np.diag(spacing), atol=1e-4):
        raise ValueError("plot_grid needs an axis-aligned RAS image")
    across = 2 if view == "axial" else 1  # the axis we cut across
    index = int(round((centres[:, across].mean() - origin[across]) / spacing[across]))
    index = min(max(index, 0), image.shape[across] - 1)
    plane = np.take(image, index, axis=across)  # (x, y) or (x, z)
    shown = 1 if view == "axial" else 2
    extent = [origin[0], origin[0] + spacing[0] * (image.shape[0] - 1),
              origin[shown], origin[shown] + spacing[shown] * (image.shape[shown] - 1)]
    ax.imshow(plane.T, cmap="gray", origin="lower", extent=extent, aspect="equal")
    cut = origin[across] + spacing[across] * index
    for k, (centre, size) in enumerate(boxes):
        if abs(cut - centre[across]) > size[across] / 2:
            continue  # this base crop does not meet the cut plane
        corner = (centre[0] - size[0] / 2, centre[shown] - size[shown] / 2)
        ax.add_patch(Rectangle(corner, size[0], size[shown], fill=False, ec="yellow", lw=1.5))
        ax.text(centre[0], centre[shown], str(k), color="yellow", ha="center", va="center", fontsize=12)
    radiological(ax, view)
    ax.set_xlabel("RAS x (mm): patient right (R) on the left")
    ax.set_ylabel("RAS y (mm): anterior (A) up" if view == "axial" else "RAS z (mm): superior (S) up")
    ax.set_title(f"{title}: {view} slice")
    fig.tight_layout()
    return _save(plt, fig, folder, name)


def plot_positions(predicted: np.ndarray, true: np.ndarray, folder: Path) -> Path:
    """Grouped bars of predicted vs true overlap per base, one panel per sub-volume."""
    plt, fig = _figure("positions.png")
    count, bases = predicted.shape
    axes = np.atleast_1d(fig.subplots(1, count, sharey=True))
    x = np.arange(bases)
    for i, ax in enumerate(axes):
        ax.bar(x - 0.2, true[i], 0.4, label="true", color="0.6")
        ax.bar(x + 0.2, predicted[i], 0.4, label="predicted", color="C1")
        ax.set(title=f"sub-volume {i}", xlabel="base", xticks=x, ylim=(0, 1.05))
    axes[0].set_ylabel("overlap")
    axes[0].legend(fontsize=8)
    fig.suptitle("Position prediction: overlap of each sub-volume with each base crop")
    fig.tight_layout()
    return _save(plt, fig, folder, "positions.png")


def plot_segmentation(ct: np.ndarray, affine: np.ndarray, predicted: np.ndarray, reference: np.ndarray,
                      colors: dict[int, tuple], folder: Path, title: str) -> Path:
    """The axial slice with most labelled voxels, prediction (left) and reference (right) over the CT, shown
    radiologically like the grid figures (patient right on the image's left, anterior up) whatever the file
    orientation."""
    import nibabel.orientations as nio
    from matplotlib.colors import ListedColormap

    to_ras = nio.io_orientation(affine)
    ct, predicted, reference = (nio.apply_orientation(a, to_ras) for a in (ct, predicted, reference))
    plt, fig = _figure("segmentation.png")
    k = int(np.argmax((reference > 0).sum(axis=(0, 1)) + (predicted > 0).sum(axis=(0, 1))))
    top = max(colors) if colors else 1
    table = np.zeros((top + 1, 4))
    for value, rgb in colors.items():
        table[value] = (*rgb, 0.55)
    cmap = ListedColormap(table)
    window = np.clip((ct[:, :, k].T + 175) / 425, 0, 1)
    for i, (labels, name) in enumerate(((predicted, "prediction"), (reference, "reference"))):
        ax = fig.add_subplot(1, 2, i + 1)
        ax.imshow(window, cmap="gray", origin="lower")
        ax.imshow(np.where(labels[:, :, k].T <= top, labels[:, :, k].T, 0), cmap=cmap, vmin=0, vmax=top,
                  origin="lower", interpolation="nearest")
        radiological(ax, "axial")
        ax.set_title(f"{name} (axial slice k={k})")
        ax.set_xticks([])
        ax.set_yticks([])
    fig.suptitle(title)
    fig.tight_layout()
    return _save(plt, fig, folder, "segmentation.png")
