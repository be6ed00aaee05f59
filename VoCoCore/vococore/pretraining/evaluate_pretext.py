"""Held-out pretext evaluation: how well does an encoder tell where a sub-volume sits, on a CT it never saw?

Crops are cut once (:func:`heldout_crops`) and every predictor is scored on exactly those crops: a pretrained
:class:`VoCoModel`, the same architecture untrained, and the best constant guess (:func:`constant_guess`, the
geometric prior of the recipe, known without looking at any image). Scores (:func:`pretext_scores`):

- accuracy: the base predicted highest is a base with most true overlap (ties in the truth all count);
- mean absolute overlap error over all bases.

The untrained baseline matters: its student and teacher projectors are independent random maps, so its
ReLU-cosine logits carry no position signal; what pretraining adds shows as the gap to it and to the prior.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from vococore.io.volume import Volume
from vococore.pretraining.pretext.grid import base_boxes, position_labels, sample_target_centers, target_box
from vococore.pretraining.pretext.recipe import Recipe
from vococore.pretraining.pretext.region import place_region
from vococore.pretraining.pretext.sampler import crops_at

TIE = 1e-9  # true overlaps closer than this to the row maximum count as "most true overlap"


@dataclass
class HeldOutCrops:
    """Un-augmented crops of one volume: ``bases`` (R, K, C, s, s, s) for R random region placements, ``targets``
    (N, C, s, s, s) with the placement each belongs to (``region`` (N,)), their centres (N, 2) and true overlaps
    (N, K) from the geometry."""

    bases: torch.Tensor
    targets: torch.Tensor
    region: np.ndarray
    centers: np.ndarray
    true: np.ndarray


def heldout_crops(volume: Volume, recipe: Recipe, count: int, seed: int, per_region: int = 8) -> HeldOutCrops:
    """``count`` random sub-volumes of ``volume``, ``per_region`` per random region placement, drawn with
    ``seed`` exactly as pretraining draws them (region crop, then target centres), without augmentation."""
    from vococore.preprocessing.preprocessor import Preprocessor

    rng = np.random.default_rng(seed)
    pre = Preprocessor(recipe.preprocess_config())(volume)
    bases, targets, region_of, centers = [], [], [], []
    for r in range((count + per_region - 1) // per_region):
        region = place_region(pre.shape, recipe, rng=rng).extract(pre.image)
        n = min(per_region, count - r * per_region)
        c = sample_target_centers(rng, recipe, n)
        bases.append(crops_at(region, base_boxes(recipe), recipe))
        targets.append(crops_at(region, np.stack([target_box(x, recipe) for x in c]), recipe))
        region_of += [r] * n
        centers.append(c)
    centers_all = np.concatenate(centers)
    return HeldOutCrops(bases=torch.stack(bases), targets=torch.cat(targets), region=np.array(region_of),
                        centers=centers_all, true=position_labels(centers_all, recipe))


@torch.no_grad()
def predict_crops(model: torch.nn.Module, crops: HeldOutCrops, chunk: int = 64) -> np.ndarray:
    """Predicted overlaps (N, K) of every target with its region's bases, each target in its own projector batch
    with the bases (what ``VoCoModel.predict_overlaps`` computes, as position prediction does), so no crop's
    number depends on another target.

    For the shared layout (one backbone, per-crop normalisation) each crop goes through the backbone once and only
    the projectors, whose BatchNorm uses batch statistics, run per target: measured 5x faster on 200 crops on a
    2-core CPU than calling ``predict_overlaps`` per target, which the twin layout still does."""
    from vococore.pretraining.losses import relu_cosine

    device = next(model.parameters()).device
    if model.recipe.layout != "shared":
        out = [model.predict_overlaps(crops.bases[r].to(device), crops.targets[i:i + 1].to(device))[0]
               for i, r in enumerate(crops.region)]
        return torch.stack(out).double().cpu().numpy()
    every = torch.cat([crops.targets, crops.bases.flatten(0, 1)])
    features = torch.cat([model.backbone(every[i:i + chunk].to(device)) for i in range(0, len(every), chunk)])
    n, k = len(crops.targets), crops.bases.shape[1]
    out = []
    for i, r in enumerate(crops.region):
        batch = torch.cat([features[i:i + 1], features[n + r * k:n + (r + 1) * k]])
        student, teacher = model.student(batch).float(), model.teacher(batch).float()
        out.append(relu_cosine(student[None, :1], teacher[None, 1:])[0, 0].clamp(0.0, 1.0))
    return torch.stack(out).double().cpu().numpy()


def constant_guess(recipe: Recipe) -> np.ndarray:
    """The best image-free guess (K,): per base, the median true overlap over every target centre the recipe can
    draw (the median minimises the mean absolute error; its highest base is the one most often nearest)."""
    low, high = recipe.target_center_range
    axis = np.arange(low, high)
    every = np.stack(np.meshgrid(axis, axis, indexing="ij"), axis=-1).reshape(-1, 2)
    return np.median(position_labels(every, recipe), axis=0)


def pretext_scores(predicted: np.ndarray, true: np.ndarray) -> dict[str, float]:
    """Accuracy (highest predicted base has most true overlap) and mean absolute overlap error of (N, K) arrays;
    a (K,) ``predicted`` is a constant guess for every row."""
    true = np.asarray(true, dtype=np.float64)
    predicted = np.broadcast_to(np.asarray(predicted, dtype=np.float64), true.shape)
    picked = true[np.arange(len(true)), np.argmax(predicted, axis=1)]
    return {"accuracy": float(np.mean(picked >= true.max(axis=1) - TIE)),
            "mae": float(np.mean(np.abs(predicted - true)))}


def untrained_like(model: torch.nn.Module, seed: int) -> torch.nn.Module:
    """The same architecture and recipe as ``model``, freshly initialised from ``seed`` (eval mode, same device)."""
    from vococore.pretraining.model import VoCoModel

    torch.manual_seed(seed)
    return VoCoModel(model.spec, model.recipe).to(next(model.parameters()).device).eval()
