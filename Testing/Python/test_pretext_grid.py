"""Base grid, target crops and position labels against voco-spec 1.2-1.3 (worked example, brute-force voxel
counting, and a property test over thousands of random centres for every recipe)."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from vococore.utils.errors import VoCoError
from vococore.pretraining.pretext import RECIPES, base_boxes, get_recipe, position_labels, sample_target_centers, target_box


def test_worked_example_v2():
    """Spec 1.3: centre (70, 100) -> x [38, 102), y [68, 132) -> 0.381, 0.025, 0.557, 0.037 at bases 1, 2, 4, 5."""
    recipe = RECIPES["v2"]
    labels = position_labels(np.array([[70, 100]]), recipe)[0]
    assert labels.dtype == np.float64 and labels.shape == (9,)
    np.testing.assert_array_equal(np.nonzero(labels)[0], [1, 2, 4, 5])
    np.testing.assert_allclose(labels[[1, 2, 4, 5]], [26 * 60 / 4096, 26 * 4 / 4096, 38 * 60 / 4096, 38 * 4 / 4096])
    np.testing.assert_allclose(np.round(labels[[1, 2, 4, 5]], 3), [0.381, 0.025, 0.557, 0.037])
    np.testing.assert_array_equal(target_box((70, 100), recipe), [[38, 68, 0], [102, 132, 64]])


@pytest.mark.parametrize("name", ["v2", "v1", "small"])
def test_base_boxes_tile_region(name):
    """Bases are indexed n*i + j, span the full region depth, and cover every region voxel exactly once."""
    recipe = RECIPES[name]
    boxes = base_boxes(recipe)
    n, s = recipe.grid, recipe.base_size
    assert boxes.shape == (n * n, 2, 3)
    cover = np.zeros(recipe.region_size, dtype=np.int32)
    for k, ((x0, y0, z0), (x1, y1, z1)) in enumerate(boxes):
        i, j = divmod(k, n)
        assert (x0, y0, z0, x1, y1, z1) == (i * s, j * s, 0, (i + 1) * s, (j + 1) * s, recipe.region_size[2])
        cover[x0:x1, y0:y1, z0:z1] += 1
    assert cover.min() == cover.max() == 1


def _brute_force_labels(center, recipe) -> np.ndarray:
    """Overlap proportions by counting voxels of x-y masks (independent of the code under test)."""
    size = recipe.region_size[0]
    h, t, s = recipe.target_size // 2, recipe.target_size, recipe.base_size
    target = np.zeros((size, size), dtype=bool)
    target[center[0] - h:center[0] - h + t, center[1] - h:center[1] - h + t] = True
    out = []
    for i in range(recipe.grid):
        for j in range(recipe.grid):
            out.append(target[i * s:(i + 1) * s, j * s:(j + 1) * s].sum() / (t * t))
    return np.array(out)


@pytest.mark.parametrize("name", ["v2", "v1", "small"])
def test_labels_match_voxel_counting(name):
    recipe = RECIPES[name]
    centers = sample_target_centers(np.random.default_rng(7), recipe, 40)
    labels = position_labels(centers, recipe)
    for center, row in zip(centers, labels):
        np.testing.assert_allclose(row, _brute_force_labels(center, recipe), atol=1e-12)


@pytest.mark.parametrize("name", ["v2", "v1", "small"])
@settings(max_examples=300, deadline=None)
@given(data=st.data())
def test_labels_property(name, data):
    """Any centres in the spec's range (300 lists of up to 40: thousands per recipe): each target stays
    inside the region, its labels sum to 1 with at most 4 non-zeros."""
    recipe = RECIPES[name]
    low, high = recipe.target_center_range
    coordinate = st.integers(low, high - 1)
    centers = np.array(data.draw(st.lists(st.tuples(coordinate, coordinate), min_size=1, max_size=40)))
    for center in centers:
        box = target_box(center, recipe)
        assert np.all(box[0] >= 0) and np.all(box[1] <= np.array(recipe.region_size))
        assert np.all(box[1] - box[0] == recipe.target_size)
    labels = position_labels(centers, recipe)
    assert labels.shape == (len(centers), recipe.num_bases) and labels.min() >= 0
    np.testing.assert_allclose(labels.sum(axis=1), 1.0, atol=1e-12)
    assert np.count_nonzero(labels, axis=1).max() <= 4


@pytest.mark.parametrize("name", ["v2", "v1"])
def test_sample_target_centers_range(name):
    """numpy integers with high exclusive: v2 x, y in 32..159, v1 in 48..335 (spec 1.2); reproducible by seed."""
    recipe = RECIPES[name]
    centers = sample_target_centers(np.random.default_rng(0), recipe, 20000)
    low, high = {"v2": (32, 160), "v1": (48, 336)}[name]
    assert centers.shape == (20000, 2) and centers.dtype == np.int64
    assert centers.min() == low and centers.max() == high - 1
    np.testing.assert_array_equal(centers, sample_target_centers(np.random.default_rng(0), recipe, 20000))
    assert len(sample_target_centers(np.random.default_rng(0), recipe)) == recipe.num_targets == 2


def test_recipe_numbers_and_validation():
    v2, v1, small = RECIPES["v2"], RECIPES["v1"], RECIPES["small"]
    assert (v2.region_size, v2.grid, v2.base_size, v2.input_size, v2.negative_loss, v2.projector_out,
            v2.embedding_row_dropout, v2.shift_prob) == ((192, 192, 64), 3, 64, 64, "log", 1024, 0.2, 0.5)
    assert (v1.region_size, v1.grid, v1.base_size, v1.input_size, v1.negative_loss, v1.projector_out,
            v1.region_mode, v1.shift_prob) == ((384, 384, 96), 4, 96, 64, "square", 2048, "resize", 0.1)
    assert v1.crop_resized and not v2.crop_resized and v2.ema_momentum == v1.ema_momentum == 0.9
    assert small.preprocess_config().spacing == (3.0, 3.0, 3.0)
    assert dataclasses.replace(RECIPES["v2-resize"], name="v2", region_mode="crop") == v2
    assert get_recipe({**dataclasses.asdict(v2)}) == v2
    with pytest.raises(VoCoError, match="target centres"):
        dataclasses.replace(v2, target_center_range=(20, 160))
    with pytest.raises(VoCoError, match="unknown recipe"):
        get_recipe("v3")
