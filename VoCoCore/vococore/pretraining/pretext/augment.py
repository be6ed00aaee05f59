"""Per-crop augmentation of VoCo (voco-spec 1.4), drawn from a numpy Generator so samples are reproducible.

Each crop gets its own draw: flip along each spatial axis with ``flip_prob``; rotate by k*90 degrees (k uniform in
1..``rotate_max_k``) in the plane of the first two spatial axes with ``rotate_prob``; add an offset uniform in
[-``shift_offset``, ``shift_offset``) with ``shift_prob`` (MONAI RandFlip, RandRotate90, RandShiftIntensity).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from vococore.pretraining.pretext.recipe import Recipe


@dataclass(frozen=True)
class CropAugmentation:
    """The random choices for one crop, kept so tests and debugging can see what was applied."""

    flips: tuple[bool, bool, bool]
    rotate_k: int  # 0 = no rotation
    shift: float  # 0.0 = no intensity shift

    def apply(self, crop: torch.Tensor) -> torch.Tensor:
        """Apply to a (C, x, y, z) crop; returns a new tensor."""
        dims = [d + 1 for d, flip in enumerate(self.flips) if flip]
        out = torch.flip(crop, dims) if dims else crop.clone()
        if self.rotate_k:
            out = torch.rot90(out, self.rotate_k, dims=(1, 2))
        if self.shift:
            out = out + self.shift
        return out.contiguous()


def draw_augmentation(rng: np.random.Generator, recipe: Recipe) -> CropAugmentation:
    """Draw one crop's augmentation with ``recipe``'s probabilities."""
    flips = tuple(bool(rng.random() < recipe.flip_prob) for _ in range(3))
    rotate_k = int(rng.integers(1, recipe.rotate_max_k + 1)) if rng.random() < recipe.rotate_prob else 0
    shift = float(rng.uniform(-recipe.shift_offset, recipe.shift_offset)) if rng.random() < recipe.shift_prob else 0.0
    return CropAugmentation(flips=flips, rotate_k=rotate_k, shift=shift)  # type: ignore[arg-type]
