"""Position prediction: where does a sub-volume sit in the base-crop grid, according to a pretrained VoCo model?

For each sub-volume (a target crop centred at a RAS point, or at a random centre drawn as in training) the model's
predicted overlap with every base crop (the ReLU-cosine logits of training, each in [0, 1], NOT normalised to sum
to 1) is reported beside the true overlap from the geometry (the position labels). The region is placed
deterministically (centred in crop mode, padded where the volume is smaller). Each sub-volume is predicted in its
own batch (it and the bases), so its numbers do not depend on the other requested points.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from vococore.utils.errors import VoCoError
from vococore.pretraining.pretext.grid import base_boxes, position_labels, sample_target_centers, target_box
from vococore.pretraining.pretext.recipe import Recipe, get_recipe
from vococore.pretraining.pretext.region import base_boxes_world, box_world, place_region, region_world_affine
from vococore.pretraining.pretext.sampler import crops_at
from vococore.io.volume import Volume


@dataclass
class SubVolumePosition:
    """One sub-volume: its centre (RAS mm and region voxels), region-voxel box, predicted and true overlaps."""

    center_ras: np.ndarray  # (3,) centre of the sub-volume box in RAS mm
    center_region: np.ndarray  # (3,) int, region voxels
    box_region: np.ndarray  # (2, 3) int [start, end) in region voxels
    predicted: np.ndarray  # (n²,) in [0, 1]
    true: np.ndarray  # (n²,) overlap proportions, sum 1
    point_ras: np.ndarray | None = None  # the requested point, None for random sub-volumes

    def as_dict(self) -> dict[str, Any]:
        return {"center_ras": self.center_ras.tolist(), "center_region": self.center_region.tolist(),
                "box_region": self.box_region.tolist(), "predicted": self.predicted.tolist(),
                "true": self.true.tolist(),
                "point_ras": None if self.point_ras is None else self.point_ras.tolist()}


@dataclass
class PositionResult:
    """Everything the position table and picture show, for one volume."""

    recipe: Recipe
    region_to_world: np.ndarray  # 4x4 region voxel -> RAS mm
    base_boxes_region: np.ndarray  # (n², 2, 3)
    base_boxes_world: list[tuple[np.ndarray, np.ndarray]]  # (centre RAS, size mm) per base
    subvolumes: list[SubVolumePosition]
    region_image: np.ndarray = field(repr=False)  # (X, Y, Z) region intensities 0..1, for the picture
    source: str | None = None

    def as_dict(self) -> dict[str, Any]:
        """Plain data for JSON (the region image is left out)."""
        return {"source": self.source, "recipe": self.recipe.name, "grid": self.recipe.grid,
                "region_size": list(self.recipe.region_size),
                "region_to_world": self.region_to_world.tolist(),
                "base_boxes_region": self.base_boxes_region.tolist(),
                "base_boxes_world": [{"center_ras": c.tolist(), "size_mm": s.tolist()}
                                     for c, s in self.base_boxes_world],
                "note": "predicted = ReLU-cosine logits in [0, 1], not normalised to sum to 1",
                "subvolumes": [s.as_dict() for s in self.subvolumes]}


def _centers_from_points(points_ras: np.ndarray, world: np.ndarray, recipe: Recipe) -> np.ndarray:
    """Region-voxel target centres (P, 2) for RAS points, with a clear error for points that cannot be one."""
    inv = np.linalg.inv(world)
    region = np.array(recipe.region_size)
    h, t = recipe.target_size // 2, recipe.target_size
    centers = []
    for point in points_ras:
        voxel = inv[:3, :3] @ point + inv[:3, 3]
        # The box [c - h, c - h + t) has its geometric centre at c - h + (t - 1) / 2: pick the nearest c.
        center = np.floor(voxel + h - (t - 1) / 2 + 0.5).astype(np.int64)
        if np.any(voxel < -0.5) or np.any(voxel >= region - 0.5):
            raise VoCoError(f"point RAS {np.round(point, 1).tolist()} mm lies outside the VoCo region "
                            f"(region voxel {np.round(voxel, 1).tolist()}, region size {region.tolist()})")
        if np.any(center[:2] < h) or np.any(center[:2] > region[:2] - (t - h)):
            valid = np.array([[h, h, 0], [region[0] - (t - h) + 1, region[1] - (t - h) + 1, region[2]]])
            mid, size = box_world(valid, world)
            raise VoCoError(f"a {t}-voxel sub-volume centred at RAS {np.round(point, 1).tolist()} mm would leave "
                            f"the region; x-y centres must lie in the box centred at {np.round(mid, 1).tolist()} "
                            f"mm of size {np.round(size, 1).tolist()} mm")
        centers.append(center[:2])
    return np.array(centers, dtype=np.int64).reshape(-1, 2)


def predict_positions(model: torch.nn.Module, volume: Volume, points_ras: np.ndarray | list | None = None,
                      n_random: int = 0, recipe: Recipe | str | None = None, seed: int = 0) -> PositionResult:
    """Predict the base-crop overlaps of sub-volumes centred at ``points_ras`` (P, 3) RAS mm and/or ``n_random``
    random centres (drawn with ``seed`` as in training) of ``volume`` with a :class:`VoCoModel`."""
    from vococore.preprocessing.preprocessor import Preprocessor

    recipe = model.recipe if recipe is None else get_recipe(recipe)
    if recipe.num_bases != model.recipe.num_bases or recipe.input_size != model.recipe.input_size:
        raise VoCoError(f"recipe {recipe.name!r} does not fit the model's recipe {model.recipe.name!r}")
    points = np.zeros((0, 3)) if points_ras is None else np.asarray(points_ras, dtype=np.float64).reshape(-1, 3)
    if len(points) == 0 and n_random <= 0:
        raise VoCoError("nothing to predict: give at least one point or a number of random sub-volumes")
    pre = Preprocessor(recipe.preprocess_config())(volume)
    placement = place_region(pre.shape, recipe, rng=None)
    world = region_world_affine(pre.affine, placement)
    region = placement.extract(pre.image)
    centers = _centers_from_points(points, world, recipe)
    if n_random > 0:
        centers = np.concatenate([centers, sample_target_centers(np.random.default_rng(seed), recipe, n_random)])
    device = next(model.parameters()).device
    bases = crops_at(region, base_boxes(recipe), recipe).to(device)
    true = position_labels(centers, recipe)
    subvolumes = []
    for k, center in enumerate(centers):
        box = target_box(center, recipe)
        target = crops_at(region, box[None], recipe).to(device)
        predicted = model.predict_overlaps(bases, target)[0].double().cpu().numpy()
        subvolumes.append(SubVolumePosition(
            center_ras=box_world(box, world)[0], center_region=np.array([*center, recipe.target_center_z]),
            box_region=box, predicted=predicted, true=true[k], point_ras=points[k] if k < len(points) else None))
    return PositionResult(recipe=recipe, region_to_world=world, base_boxes_region=base_boxes(recipe),
                          base_boxes_world=base_boxes_world(pre.affine, placement, recipe), subvolumes=subvolumes,
                          region_image=region[0].numpy(), source=volume.source)


def plot_subvolume(result: PositionResult, index: int, path: str | os.PathLike, size_px: tuple[int, int] = (1000, 500),
                   dpi: int = 100) -> None:
    """PNG of one sub-volume: an axial slice of the region with the grid (each base shaded by its predicted
    overlap, predicted/true printed in it), the true sub-volume outlined in red, and a bar chart of both."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.patches import Rectangle

    sub, recipe = result.subvolumes[index], result.recipe
    fig, (ax, bars) = plt.subplots(1, 2, figsize=(size_px[0] / dpi, size_px[1] / dpi), dpi=dpi)
    z = int(np.clip(sub.center_region[2], 0, recipe.region_size[2] - 1))
    ax.imshow(result.region_image[:, :, z].T, cmap="gray", origin="lower", vmin=0, vmax=1,
              extent=(-0.5, recipe.region_size[0] - 0.5, -0.5, recipe.region_size[1] - 0.5))
    cmap = plt.get_cmap("viridis")
    for k, box in enumerate(result.base_boxes_region):
        (x0, y0, _), (x1, y1, _) = box - 0.5
        ax.add_patch(Rectangle((x0, y0), x1 - x0, y1 - y0, facecolor=cmap(sub.predicted[k]), alpha=0.35,
                               edgecolor="white", linewidth=1))
        ax.text((x0 + x1) / 2, (y0 + y1) / 2, f"{k}\n{sub.predicted[k]:.2f} / {sub.true[k]:.2f}", color="white",
                ha="center", va="center", fontsize=7)
    (x0, y0, _), (x1, y1, _) = sub.box_region - 0.5
    ax.add_patch(Rectangle((x0, y0), x1 - x0, y1 - y0, fill=False, edgecolor="red", linewidth=2))
    ax.set_title(f"slice z={z}; base: predicted / true", fontsize=8)
    ax.invert_xaxis()  # radiological, as Slicer shows axial slices: patient right (RAS +x) on the image's left
    ax.set_xlabel("region x (voxels): patient right (R) on the left")
    ax.set_ylabel("region y (voxels): anterior (A) up")
    ks = np.arange(recipe.num_bases)
    bars.bar(ks - 0.2, sub.predicted, width=0.4, label="predicted")
    bars.bar(ks + 0.2, sub.true, width=0.4, label="true")
    bars.set_ylim(0, 1)
    bars.set_xticks(ks)
    bars.set_xlabel("base crop")
    bars.set_title("centre RAS " + ", ".join(f"{v:.1f}" for v in sub.center_ras) + " mm", fontsize=8)
    bars.legend(fontsize=7)
    fig.savefig(path, dpi=dpi, format="png")
    plt.close(fig)


def report_paths(output_dir: str | os.PathLike, count: int, overwrite: bool = False) -> list[Path]:
    """The files a report of ``count`` sub-volumes writes (``positions.json``, ``position_NNN.png``); raises
    VoCoError for any that exists unless ``overwrite``, so callers can refuse before any work."""
    from vococore.utils.atomic import check_writable

    out = Path(output_dir)
    paths = [out / "positions.json"] + [out / f"position_{k:03d}.png" for k in range(count)]
    for path in paths:
        check_writable(path, overwrite)
    return paths


def write_position_report(result: PositionResult, output_dir: str | os.PathLike, overwrite: bool = False,
                          extra: dict[str, Any] | None = None) -> list[Path]:
    """Write ``positions.json`` and one ``position_NNN.png`` per sub-volume into ``output_dir`` (atomically;
    existing files are only replaced with ``overwrite``). ``extra`` is merged into the JSON (e.g. the inputs)."""
    from vococore.utils.atomic import atomic_path

    paths = report_paths(output_dir, len(result.subvolumes), overwrite)  # refuse before writing anything
    with atomic_path(paths[0], overwrite=overwrite) as tmp:
        Path(tmp).write_text(json.dumps({**(extra or {}), **result.as_dict()}, indent=1))
    for k, path in enumerate(paths[1:]):
        with atomic_path(path, overwrite=overwrite) as tmp:
            plot_subvolume(result, k, tmp)
    return paths
