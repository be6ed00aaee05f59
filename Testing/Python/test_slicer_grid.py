"""VoCoSlicerLib.grid on real MRML: the ROIs' centres and sizes in RAS are VoCoCore's base-crop boxes mapped to
world coordinates, for the v2 and small recipes, on an RAS NIfTI and an LPS DICOM series."""

from __future__ import annotations

import numpy as np
import pytest

from vococore.io import read_volume
from vococore.pretraining import pretext
from VoCoSlicerLib import grid, nodes



def _expected_boxes(volume, recipe_name):
    """Base boxes from VoCoCore, mapped corner by corner through the preprocessed grid's own to_world."""
    from vococore.preprocessing.preprocessor import Preprocessor

    recipe = pretext.get_recipe(recipe_name)
    pre = Preprocessor(recipe.preprocess_config())(volume)
    placement = pretext.place_region(pre.shape, recipe, rng=None)
    out = []
    for start, end in pretext.base_boxes(recipe):
        # voxel box [start, end) spans voxel edges start - 0.5 .. end - 0.5 in region voxels
        corners = placement.region_to_source(np.stack([start - 0.5, end - 0.5]))
        lo, hi = pre.to_world(corners)
        out.append(((lo + hi) / 2, np.abs(hi - lo)))
    return recipe, out


@pytest.mark.parametrize("name, recipe_name", [("TotalSegCT", "v2"), ("TotalSegCT", "small"),
                                                ("TotalSegDICOM", "small")])
def test_roi_centres_and_sizes_equal_vococore_boxes(mrml, sample, name, recipe_name):
    volume = read_volume(sample(name))
    node = nodes.node_from_volume(volume, mrml.scene, "CT")
    geometry = grid.grid_geometry(nodes.volume_from_node(node), recipe_name)
    rois = grid.draw_grid(geometry, mrml.scene, node)
    recipe, expected = _expected_boxes(volume, recipe_name)
    assert len(rois) == recipe.grid ** 2
    for k, (roi, (center, size)) in enumerate(zip(rois, expected)):
        got = [0.0, 0.0, 0.0]
        roi.GetCenterWorld(got)
        np.testing.assert_allclose(got, center, atol=1e-3)
        np.testing.assert_allclose(roi.GetSize(), size, atol=1e-3)
        bounds = [0.0] * 6
        roi.GetRASBounds(bounds)
        np.testing.assert_allclose(np.array(bounds[1::2]) - bounds[0::2], size, atol=1e-3)
        assert roi.GetName() == f"VoCo base {k} ({k // recipe.grid}, {k % recipe.grid})"
    # the bases tile the region: neighbours in x touch, sizes are base_size voxels of the recipe's spacing
    spacing = recipe.preprocess_config().spacing
    np.testing.assert_allclose(rois[0].GetSize()[:2], [recipe.base_size * spacing[0]] * 2, atol=1e-3)
    c0, c1 = [0.0] * 3, [0.0] * 3
    rois[0].GetCenterWorld(c0)
    rois[recipe.grid].GetCenterWorld(c1)
    np.testing.assert_allclose(c1[0] - c0[0], recipe.base_size * spacing[0], atol=1e-3)


def test_redraw_replaces_only_our_rois(mrml, sample):
    import slicer

    volume = read_volume(sample("TotalSegCTSmall"))
    node = nodes.node_from_volume(volume, mrml.scene, "CT")
    sh = slicer.vtkMRMLSubjectHierarchyNode.GetSubjectHierarchyNode(mrml.scene)
    study = sh.CreateStudyItem(sh.CreateSubjectItem(sh.GetSceneItemID(), "P"), "S")
    sh.CreateItem(study, node)
    users_roi = mrml.scene.AddNewNodeByClass("vtkMRMLMarkupsROINode", "my ROI")
    geometry = grid.grid_geometry(volume, "small")
    first = grid.draw_grid(geometry, mrml.scene, node)
    folder = sh.GetItemParent(sh.GetItemByDataNode(first[0]))
    assert sh.GetItemParent(folder) == study
    second = grid.draw_grid(geometry, mrml.scene, node)
    assert all(roi.GetScene() is None for roi in first)
    assert grid.grid_nodes(mrml.scene, node) == second
    assert mrml.scene.GetNodesByClass("vtkMRMLMarkupsROINode").GetNumberOfItems() == 10
    assert grid.remove_grid(mrml.scene, node) == 9
    assert users_roi.GetScene() is mrml.scene
    assert mrml.scene.GetNodesByClass("vtkMRMLMarkupsROINode").GetNumberOfItems() == 1


def test_world_to_region_inverts_the_grid(sample):
    volume = read_volume(sample("TotalSegCT"))
    geometry = grid.grid_geometry(volume, "small")
    center, _ = geometry.boxes[4]
    # the centre of base 4 = (1, 1) is the region centre minus half a voxel (voxel boxes [32, 64))
    np.testing.assert_allclose(geometry.world_to_region(center), [47.5, 47.5, 15.5], atol=1e-6)
