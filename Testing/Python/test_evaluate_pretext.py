"""Held-out pretext evaluation: scores on hand-worked rows, the image-free prior, and real crops of the DICOM CT."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from vococore.io import read_volume
from vococore.networks.backbones import BackboneSpec
from vococore.pretraining.evaluate_pretext import (constant_guess, heldout_crops, predict_crops, pretext_scores,
                                                   untrained_like)
from vococore.pretraining.model import VoCoModel
from vococore.pretraining.pretext import get_recipe

RECIPE = get_recipe("small")


def test_scores_on_hand_worked_rows():
    true = np.array([[0.5, 0.5, 0.0, 0.0],   # a tie: either of the first two bases is right
                     [0.0, 0.25, 0.75, 0.0],
                     [1.0, 0.0, 0.0, 0.0]])
    predicted = np.array([[0.1, 0.9, 0.0, 0.0],  # right (second of the tied bases)
                          [0.0, 0.8, 0.7, 0.0],  # wrong: base 1 ranked above base 2
                          [0.6, 0.0, 0.0, 0.2]])  # right
    scores = pretext_scores(predicted, true)
    assert scores["accuracy"] == pytest.approx(2 / 3)
    # |errors| row by row: 0.4+0.4 ; 0.55+0.05 ; 0.4+0.2 -> 2.0 over 12 entries
    assert scores["mae"] == pytest.approx(2.0 / 12)
    constant = pretext_scores(np.array([0.0, 0.0, 1.0, 0.0]), true)  # a (K,) guess counts for every row
    assert constant["accuracy"] == pytest.approx(1 / 3)


def test_constant_guess_is_the_centre_heavy_prior():
    """Targets of 32 voxels centred in [16, 80) touch a corner or edge base in at most half the draws (median 0);
    the centre base's x and y overlaps are each 1 - |c - 48| / 32, whose product has its median near 0.19."""
    guess = constant_guess(RECIPE)
    assert guess.shape == (9,)
    assert np.all(np.delete(guess, 4) == 0)
    c = np.arange(16, 80)
    per_axis = 1 - np.abs(c - 47.5) / 32  # geometric centre of a box starting at c - 16 is c - 0.5
    product = (per_axis[:, None] * per_axis[None, :]).ravel()
    assert guess[4] == pytest.approx(np.median(product), abs=0.01)


@pytest.fixture(scope="module")
def dicom(sample):
    return read_volume(sample("TotalSegDICOM"))


@pytest.fixture(scope="module")
def crops(dicom):
    return heldout_crops(dicom, RECIPE, count=10, seed=3, per_region=4)


def test_crops_are_seeded_and_labelled(crops, dicom):
    assert crops.targets.shape == (10, 1, 32, 32, 32) and crops.bases.shape == (3, 9, 1, 32, 32, 32)
    assert crops.region.tolist() == [0] * 4 + [1] * 4 + [2] * 2
    np.testing.assert_allclose(crops.true.sum(axis=1), 1.0)
    assert crops.targets.std() > 0.01  # real CT, not padding
    again = heldout_crops(dicom, RECIPE, count=10, seed=3, per_region=4)
    assert np.array_equal(again.centers, crops.centers) and torch.equal(again.targets, crops.targets)
    other = heldout_crops(dicom, RECIPE, count=10, seed=4, per_region=4)
    assert not np.array_equal(other.centers, crops.centers)


def test_fast_prediction_equals_one_target_at_a_time(crops):
    """The shared-backbone path gives what ``predict_overlaps`` gives for each target alone with its bases."""
    torch.manual_seed(0)
    model = VoCoModel(BackboneSpec(arch="cnn", feature_size=4), RECIPE).eval()
    fast = predict_crops(model, crops)
    for i in (0, 5, 9):
        alone = model.predict_overlaps(crops.bases[crops.region[i]], crops.targets[i:i + 1])[0].double().numpy()
        np.testing.assert_allclose(fast[i], alone, atol=1e-6)
    assert fast.std() > 0  # not all clamped to one value
    fresh = untrained_like(model, seed=0)
    assert not fresh.training and all(torch.equal(a, b) for a, b in
                                      zip(fresh.state_dict().values(), model.state_dict().values()))
