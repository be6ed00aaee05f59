"""The sampler: crop shapes per recipe, independent per-crop augmentation, labels independent of augmentation,
reproducibility from the seed, and the augmentation probabilities of voco-spec 1.4."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch

from vococore.utils.errors import VoCoError
from vococore.pretraining.pretext import (
    RECIPES,
    PretextSampler,
    base_boxes,
    collate,
    draw_augmentation,
    position_labels,
    target_box,
)


def _region(recipe, seed=0):
    return torch.from_numpy(np.random.default_rng(seed).random((1, *recipe.region_size), dtype=np.float32))


def test_small_sample_shapes_and_crops():
    recipe = RECIPES["small"]
    region = _region(recipe)
    sample = PretextSampler(recipe, augment=False)(region, np.random.default_rng(3))
    assert sample.bases.shape == (9, 1, 32, 32, 32) and sample.targets.shape == (2, 1, 32, 32, 32)
    assert sample.labels.shape == (2, 9) and sample.labels.dtype == torch.float64
    for k, ((x0, y0, z0), (x1, y1, z1)) in enumerate(base_boxes(recipe)):
        assert torch.equal(sample.bases[k], region[:, x0:x1, y0:y1, z0:z1])
    for c, crop in zip(sample.centers, sample.targets):
        (x0, y0, z0), (x1, y1, z1) = target_box(c, recipe)
        assert torch.equal(crop, region[:, x0:x1, y0:y1, z0:z1])
    np.testing.assert_array_equal(sample.labels.numpy(), position_labels(sample.centers, recipe))
    batch = collate([sample, sample])
    assert batch["bases"].shape == (2, 9, 1, 32, 32, 32) and batch["labels"].shape == (2, 2, 9)


def test_v1_crops_resized_to_input():
    """v1: 16 bases and 2 targets of 96³ cut from the 384 x 384 x 96 region, each resized to 64³."""
    recipe = RECIPES["v1"]
    sample = PretextSampler(recipe)(_region(recipe), np.random.default_rng(0))
    assert sample.bases.shape == (16, 1, 64, 64, 64) and sample.targets.shape == (2, 1, 64, 64, 64)
    assert sample.labels.shape == (2, 16)


def test_augmentation_is_independent_per_crop():
    """With a fixed seed the 11 crops draw their own flips/rotations/shifts; each augmented crop is exactly its
    un-augmented crop with its own draw applied."""
    recipe = RECIPES["small"]
    region = _region(recipe, seed=1)
    plain = PretextSampler(recipe, augment=False)(region, np.random.default_rng(0), centers=[[30, 40], [60, 50]])
    sample = PretextSampler(recipe)(region, np.random.default_rng(11), centers=[[30, 40], [60, 50]])
    augs = sample.augmentations
    assert len(augs) == 11
    assert len({a.flips for a in augs}) > 1  # at least two crops got different flips
    flipped_bases = [k for k in range(9) if any(augs[k].flips)]
    plain_bases = [k for k in range(9) if not any(augs[k].flips) and not augs[k].rotate_k]
    assert flipped_bases and plain_bases
    crops = torch.cat([plain.bases, plain.targets])
    for aug, original, got in zip(augs, crops, torch.cat([sample.bases, sample.targets])):
        assert torch.equal(got, _monai_augment(aug, original))
    k = flipped_bases[0]
    assert not torch.equal(sample.bases[k], plain.bases[k])


def test_labels_do_not_depend_on_augmentation():
    recipe = RECIPES["small"]
    region = _region(recipe)
    centers = np.array([[16, 79], [50, 33]])
    labels = [PretextSampler(recipe, augment=a)(region, np.random.default_rng(s), centers=centers).labels
              for a in (False, True) for s in range(4)]
    for other in labels[1:]:
        assert torch.equal(other, labels[0])
    np.testing.assert_array_equal(labels[0].numpy(), position_labels(centers, recipe))


def test_seeded_samples_are_reproducible():
    recipe = RECIPES["small"]
    region = _region(recipe)
    a = PretextSampler(recipe)(region, np.random.default_rng(42))
    b = PretextSampler(recipe)(region, np.random.default_rng(42))
    c = PretextSampler(recipe)(region, np.random.default_rng(43))
    assert torch.equal(a.bases, b.bases) and torch.equal(a.targets, b.targets) and torch.equal(a.labels, b.labels)
    assert not (torch.equal(a.bases, c.bases) and torch.equal(a.targets, c.targets))


@pytest.mark.parametrize("name,shift_prob", [("v2", 0.5), ("v1", 0.1)])
def test_augmentation_probabilities(name, shift_prob):
    """Flip p 0.2 per axis, rotate90 p 0.2 with k in 1..3, intensity shift in [-0.1, 0.1) with p 0.5 (v2) / 0.1 (v1).
    20,000 draws: each frequency is within 5 standard errors of its probability."""
    recipe = RECIPES[name]
    rng = np.random.default_rng(0)
    augs = [draw_augmentation(rng, recipe) for _ in range(20000)]
    flips = np.array([a.flips for a in augs])
    ks = np.array([a.rotate_k for a in augs])
    shifts = np.array([a.shift for a in augs])

    def close(freq, p):
        return abs(freq - p) < 5 * np.sqrt(p * (1 - p) / len(augs))

    assert all(close(flips[:, axis].mean(), 0.2) for axis in range(3))
    assert close((ks > 0).mean(), 0.2) and set(np.unique(ks[ks > 0])) == {1, 2, 3}
    assert close((shifts != 0).mean(), shift_prob)
    assert shifts.min() >= -0.1 and shifts.max() < 0.1


def _monai_augment(aug, crop: torch.Tensor) -> torch.Tensor:
    """The same draw applied by MONAI's own transforms (Flip per axis, Rotate90 in the first two spatial axes,
    ShiftIntensity): the reference VoCo's pipeline uses, independent of our torch calls."""
    from monai.transforms import Flip, Rotate90, ShiftIntensity

    out = crop
    for axis, flip in enumerate(aug.flips):
        if flip:
            out = Flip(spatial_axis=axis)(out)
    if aug.rotate_k:
        out = Rotate90(k=aug.rotate_k, spatial_axes=(0, 1))(out)
    if aug.shift:
        out = ShiftIntensity(aug.shift)(out)
    return torch.as_tensor(out)


def test_rotation_plane_and_flip_axes():
    """Every flip/rotation draw equals MONAI's transforms; and by hand: a quarter turn sends voxel (i, j, z) to
    (n_y-1-j, i, z) (counter-clockwise from x towards y), a flip of x sends i to n_x-1-i."""
    import itertools

    from vococore.pretraining.pretext import CropAugmentation

    crop = torch.arange(2 * 3 * 4, dtype=torch.float32).view(1, 2, 3, 4)
    for flips in itertools.product((False, True), repeat=3):
        for k in range(4):
            aug = CropAugmentation(flips=flips, rotate_k=k, shift=0.25)
            assert torch.equal(aug.apply(crop), _monai_augment(aug, crop)), (flips, k)
    rotated = CropAugmentation(flips=(False, False, False), rotate_k=1, shift=0.0).apply(crop)
    assert rotated.shape == (1, 3, 2, 4)
    for i, j, z in itertools.product(range(2), range(3), range(4)):
        assert rotated[0, 2 - j, i, z] == crop[0, i, j, z]
    flipped = CropAugmentation(flips=(True, False, False), rotate_k=0, shift=0.0).apply(crop)
    assert flipped[0, 1, 2, 3] == crop[0, 0, 2, 3] and flipped[0, 0, 1, 0] == crop[0, 1, 1, 0]


def test_wrong_region_shape_is_an_error():
    recipe = RECIPES["small"]
    with pytest.raises(VoCoError, match="region must have shape"):
        PretextSampler(recipe)(torch.rand(1, 96, 96, 31), np.random.default_rng(0))
    with pytest.raises(VoCoError):
        dataclasses.replace(recipe, region_size=(96, 96, 33))
