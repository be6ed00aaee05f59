"""One VoCo training sample from a region: base crops, target crops and their position labels.

Labels come from the crop geometry in the un-augmented region frame; each crop is then resized to the network input
(when the recipe says so) and augmented independently (voco-spec 1.2-1.4).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import torch

from vococore.utils.errors import VoCoError
from vococore.pretraining.pretext.augment import CropAugmentation, draw_augmentation
from vococore.pretraining.pretext.grid import base_boxes, position_labels, sample_target_centers, target_box
from vococore.pretraining.pretext.recipe import Recipe


@dataclass
class PretextSample:
    """Crops of one volume: ``bases`` (n², C, s, s, s), ``targets`` (T, C, s, s, s), ``labels`` (T, n²) float64,
    plus the target centres (T, 2) in region voxels and the augmentation each crop received."""

    bases: torch.Tensor
    targets: torch.Tensor
    labels: torch.Tensor
    centers: np.ndarray
    augmentations: list[CropAugmentation] = field(default_factory=list, repr=False)  # bases first, then targets


def cut_box(region: torch.Tensor, box: np.ndarray) -> torch.Tensor:
    """The (C, ...) sub-array of ``region`` inside voxel box [start, end) (2, 3)."""
    (x0, y0, z0), (x1, y1, z1) = np.asarray(box, dtype=np.int64).tolist()
    return region[:, x0:x1, y0:y1, z0:z1]


def resize_crop(crop: torch.Tensor, size: int) -> torch.Tensor:
    """Trilinear resize of a (C, x, y, z) crop to ``size``³ (MONAI Resize "bilinear", corners not aligned)."""
    if tuple(crop.shape[1:]) == (size, size, size):
        return crop
    return torch.nn.functional.interpolate(crop[None].float(), size=(size,) * 3, mode="trilinear",
                                           align_corners=False)[0]


def as_region(region: torch.Tensor | np.ndarray, recipe: Recipe) -> torch.Tensor:
    """A float (C, X, Y, Z) tensor of the recipe's region size (plain tensor, no MONAI metadata)."""
    tensor = torch.as_tensor(region.as_tensor() if hasattr(region, "as_tensor") else region).float()
    if tensor.ndim != 4 or tuple(tensor.shape[1:]) != tuple(recipe.region_size):
        raise VoCoError(f"region must have shape (C, {', '.join(map(str, recipe.region_size))}) for recipe "
                        f"{recipe.name!r}, got {tuple(tensor.shape)}")
    return tensor


def crops_at(region: torch.Tensor, boxes: np.ndarray, recipe: Recipe) -> torch.Tensor:
    """Un-augmented crops (N, C, s, s, s) of ``region`` for voxel boxes (N, 2, 3), resized to the input size."""
    return torch.stack([resize_crop(cut_box(region, box), recipe.input_size) for box in boxes])


class PretextSampler:
    """Builds :class:`PretextSample` s for a recipe: ``PretextSampler(recipe)(region, rng)``."""

    def __init__(self, recipe: Recipe, augment: bool = True) -> None:
        self.recipe = recipe
        self.augment = augment
        self._base_boxes = base_boxes(recipe)

    def __call__(self, region: torch.Tensor | np.ndarray, rng: np.random.Generator,
                 centers: np.ndarray | None = None) -> PretextSample:
        """Sample target centres (or use ``centers`` (T, 2)), cut all crops, label and augment them."""
        recipe = self.recipe
        region = as_region(region, recipe)
        centers = sample_target_centers(rng, recipe) if centers is None else np.asarray(centers, np.int64)
        labels = torch.from_numpy(position_labels(centers, recipe))
        target_boxes = np.stack([target_box(c, recipe) for c in centers])
        bases = crops_at(region, self._base_boxes, recipe)
        targets = crops_at(region, target_boxes, recipe)
        augmentations: list[CropAugmentation] = []
        if self.augment:
            augmentations = [draw_augmentation(rng, recipe) for _ in range(len(bases) + len(targets))]
            bases = torch.stack([a.apply(c) for a, c in zip(augmentations, bases)])
            targets = torch.stack([a.apply(c) for a, c in zip(augmentations[len(bases):], targets)])
        return PretextSample(bases=bases, targets=targets, labels=labels, centers=centers,
                             augmentations=augmentations)


def collate(samples: list[PretextSample]) -> dict[str, torch.Tensor]:
    """Stack samples into the batch :meth:`VoCoModel.forward` takes: ``bases`` (B, n², C, s, s, s), ``targets``
    (B, T, C, s, s, s), ``labels`` (B, T, n²) float64."""
    return {"bases": torch.stack([s.bases for s in samples]),
            "targets": torch.stack([s.targets for s in samples]),
            "labels": torch.stack([s.labels for s in samples])}
