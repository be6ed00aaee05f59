"""Region placement on the preprocessed grid (crop with padding, resize) and the world boxes of the base grid."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from vococore.utils.errors import VoCoError
from vococore.pretraining.pretext import RECIPES, base_boxes, base_boxes_world, place_region, region_world_affine


def test_crop_mode_larger_image_is_a_translation():
    recipe = RECIPES["small"]  # region 96 x 96 x 32
    image = torch.rand(1, 120, 100, 50)
    placement = place_region(image.shape, recipe, rng=None)
    np.testing.assert_array_equal(placement.affine[:3, :3], np.eye(3))
    np.testing.assert_array_equal(placement.offset, [12, 2, 9])  # centred
    region = placement.extract(image)
    assert region.shape == (1, 96, 96, 32)
    assert torch.equal(region, image[:, 12:108, 2:98, 9:41])


def test_crop_mode_random_start_is_uniform_and_seeded():
    recipe = RECIPES["small"]
    starts = np.array([place_region((100, 96, 40), recipe, np.random.default_rng(s)).offset for s in range(300)])
    assert starts[:, 0].min() == 0 and starts[:, 0].max() == 4  # 0..100-96 inclusive
    assert np.all(starts[:, 1] == 0) and starts[:, 2].min() == 0 and starts[:, 2].max() == 8
    again = place_region((100, 96, 40), recipe, np.random.default_rng(5)).offset
    np.testing.assert_array_equal(again, starts[5])


def test_crop_mode_pads_smaller_image():
    """A volume smaller than the region is padded with zeros (MONAI SpatialPad, symmetric), the offset negative."""
    recipe = RECIPES["small"]
    image = torch.rand(1, 90, 96, 20) + 1.0  # strictly positive, so padding is visible as zeros
    placement = place_region(image.shape, recipe, rng=np.random.default_rng(0))
    np.testing.assert_array_equal(placement.offset, [-3, 0, -6])
    region = placement.extract(image)
    assert region.shape == (1, 96, 96, 32)
    assert torch.equal(region[:, 3:93, :, 6:26], image)
    assert region[:, :3].abs().sum() == 0 and region[:, 93:].abs().sum() == 0 and region[..., 26:].abs().sum() == 0
    with pytest.raises(VoCoError, match="does not match"):
        placement.extract(torch.rand(1, 91, 96, 20))


def test_resize_mode_maps_corners_to_corners():
    recipe = RECIPES["v1"]  # region 384 x 384 x 96, resize with aligned corners
    shape = (200, 150, 60)
    placement = place_region(shape, recipe, rng=np.random.default_rng(0))
    corners = np.array([[0, 0, 0], [383, 383, 95]])
    np.testing.assert_allclose(placement.region_to_source(corners), [[0, 0, 0], [199, 149, 59]])
    np.testing.assert_allclose(placement.source_to_region(placement.region_to_source(corners)), corners)
    image = torch.rand(1, *shape)
    region = placement.extract(image)
    assert region.shape == (1, 384, 384, 96)
    # Aligned corners: the corner voxels keep their values exactly.
    assert torch.allclose(region[0, 0, 0, 0], image[0, 0, 0, 0]) and torch.allclose(region[0, -1, -1, -1],
                                                                                   image[0, -1, -1, -1])


def _check_tiling(boxes_world, world_affine, recipe):
    """Adjacent bases touch without gaps or overlap and have size base x spacing; together they cover the region."""
    n, s = recipe.grid, recipe.base_size
    spacing = np.linalg.norm(world_affine[:3, :3], axis=0)
    axes = world_affine[:3, :3] / spacing
    for k, (center, size) in enumerate(boxes_world):
        np.testing.assert_allclose(size, [s * spacing[0], s * spacing[1], recipe.region_size[2] * spacing[2]])
        i, j = divmod(k, n)
        if i + 1 < n:  # neighbour along x: centres one box width apart along the region x axis
            np.testing.assert_allclose(boxes_world[k + n][0] - center, axes[:, 0] * size[0], atol=1e-9)
        if j + 1 < n:
            np.testing.assert_allclose(boxes_world[k + 1][0] - center, axes[:, 1] * size[1], atol=1e-9)
    # Box 0 starts at the region's first voxel edge, the last box ends at its last edge.
    first_edge = world_affine[:3, :3] @ np.full(3, -0.5) + world_affine[:3, 3]
    last_edge = world_affine[:3, :3] @ (np.array(recipe.region_size) - 0.5) + world_affine[:3, 3]
    c0, s0 = boxes_world[0]
    cl, sl = boxes_world[-1]
    np.testing.assert_allclose(c0 - axes @ (s0 / 2), first_edge, atol=1e-9)
    np.testing.assert_allclose(cl + axes @ (sl / 2), last_edge, atol=1e-9)


def test_world_boxes_tile_region_on_real_ct(sample):
    """Small recipe on the real TotalSegmentator CT, preprocessed at 3 mm."""
    from vococore.io import read_volume
    from vococore.preprocessing.preprocessor import Preprocessor

    recipe = RECIPES["small"]
    pre = Preprocessor(recipe.preprocess_config())(read_volume(sample("TotalSegCT")))
    placement = place_region(pre.shape, recipe, rng=None)
    boxes = base_boxes_world(pre.affine, placement, recipe)
    world = region_world_affine(pre.affine, placement)
    _check_tiling(boxes, world, recipe)
    np.testing.assert_allclose(boxes[0][1], [96.0, 96.0, 96.0])  # 32 voxels x 3 mm
    # The centre of base 4 is the world position of its central voxel edge (region voxel 47.5, 47.5, 15.5).
    np.testing.assert_allclose(boxes[4][0], pre.to_world(placement.region_to_source([47.5, 47.5, 15.5])))


@pytest.mark.parametrize("name", ["v2", "v1"])
def test_world_boxes_tile_region_oblique_anisotropic(name):
    """An oblique, anisotropic preprocessed grid (rotation + spacing 0.8/1.1/2.5 mm) and a translated or scaled
    placement: the boxes still tile the region exactly."""
    recipe = RECIPES[name]
    angle = np.deg2rad(20)
    rotation = np.array([[np.cos(angle), -np.sin(angle), 0], [np.sin(angle), np.cos(angle), 0], [0, 0, 1]])
    pre_affine = np.eye(4)
    pre_affine[:3, :3] = rotation @ np.diag([0.8, 1.1, 2.5])
    pre_affine[:3, 3] = [-120.0, 35.0, 410.0]
    placement = place_region((250, 230, 80), recipe, rng=np.random.default_rng(1))
    world = region_world_affine(pre_affine, placement)
    boxes = base_boxes_world(pre_affine, placement, recipe)
    assert len(boxes) == len(base_boxes(recipe)) == recipe.num_bases
    _check_tiling(boxes, world, recipe)
