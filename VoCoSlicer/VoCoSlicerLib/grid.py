"""Draws VoCo's base-crop grid on a CT as markups ROIs in RAS: the same boxes the position labels use
(``vococore.pretraining.pretext``), placed on the preprocessed grid and mapped to world coordinates by its affine."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from vococore.io.volume import Volume

GRID_ATTRIBUTE = "VoCoSlicer.GridOf"  # set on every ROI we draw: the ID of the volume node it belongs to


@dataclass(frozen=True)
class GridGeometry:
    """The recipe's region on one CT: region-voxel -> RAS matrix and each base crop's (centre, size) in RAS mm."""

    recipe: Any
    region_to_world: np.ndarray
    boxes: list[tuple[np.ndarray, np.ndarray]]

    def world_to_region(self, ras: np.ndarray) -> np.ndarray:
        """Region voxel coordinates (x, y, z) of RAS points (..., 3)."""
        inv = np.linalg.inv(self.region_to_world)
        return np.asarray(ras, dtype=np.float64) @ inv[:3, :3].T + inv[:3, 3]


def grid_geometry(volume: Volume, recipe_name: str) -> GridGeometry:
    """Preprocess ``volume`` as ``recipe_name`` does, place its region (centred, deterministic) and map the grid."""
    from vococore.preprocessing.preprocessor import Preprocessor
    from vococore.pretraining.pretext import base_boxes_world, get_recipe, place_region, region_world_affine

    recipe = get_recipe(recipe_name)
    pre = Preprocessor(recipe.preprocess_config())(volume)
    placement = place_region(pre.shape, recipe, rng=None)
    return GridGeometry(recipe=recipe, region_to_world=region_world_affine(pre.affine, placement),
                        boxes=base_boxes_world(pre.affine, placement, recipe))


def draw_grid(geometry: GridGeometry, scene: Any, volume_node: Any) -> list[Any]:
    """One ROI per base crop (named ``VoCo base k (i, j)``), oriented along the region axes, under a folder
    beside the volume in the subject hierarchy. Earlier grids drawn for this volume are removed first."""
    import vtk

    remove_grid(scene, volume_node)
    axes = geometry.region_to_world[:3, :3] / np.linalg.norm(geometry.region_to_world[:3, :3], axis=0)
    n = geometry.recipe.grid
    rois = []
    for k, (center, size) in enumerate(geometry.boxes):
        roi = scene.AddNewNodeByClass("vtkMRMLMarkupsROINode", f"VoCo base {k} ({k // n}, {k % n})")
        roi.SetAttribute(GRID_ATTRIBUTE, volume_node.GetID())
        object_to_node = vtk.vtkMatrix4x4()
        for r in range(3):
            for c in range(3):
                object_to_node.SetElement(r, c, float(axes[r, c]))
            object_to_node.SetElement(r, 3, float(center[r]))
        roi.SetAndObserveObjectToNodeMatrix(object_to_node)
        roi.SetSize(*size.tolist())
        roi.SetLocked(True)
        rois.append(roi)
    _group(scene, volume_node, rois)
    return rois


def _group(scene: Any, volume_node: Any, rois: list[Any]) -> None:
    """A subject-hierarchy folder "VoCo grid" beside the volume holding the ROIs (when the scene has a hierarchy)."""
    import slicer

    sh = slicer.vtkMRMLSubjectHierarchyNode.GetSubjectHierarchyNode(scene)
    if sh is None:
        return
    volume_item = sh.GetItemByDataNode(volume_node)
    parent = sh.GetItemParent(volume_item) if volume_item else sh.GetSceneItemID()
    folder = sh.CreateFolderItem(parent, f"VoCo grid ({volume_node.GetName()})")
    sh.SetItemAttribute(folder, GRID_ATTRIBUTE, volume_node.GetID())
    for roi in rois:
        item = sh.GetItemByDataNode(roi)
        if item:
            sh.SetItemParent(item, folder)
        else:
            sh.CreateItem(folder, roi)


def grid_nodes(scene: Any, volume_node: Any) -> list[Any]:
    """The ROIs this module drew for ``volume_node`` (never any other ROI)."""
    nodes = scene.GetNodesByClass("vtkMRMLMarkupsROINode")
    found = [nodes.GetItemAsObject(i) for i in range(nodes.GetNumberOfItems())]
    return [roi for roi in found if roi.GetAttribute(GRID_ATTRIBUTE) == volume_node.GetID()]


def remove_grid(scene: Any, volume_node: Any) -> int:
    """Remove the grid drawn for ``volume_node`` (ROIs and their folder); returns how many ROIs went."""
    import slicer
    import vtk

    rois = grid_nodes(scene, volume_node)
    for roi in rois:
        scene.RemoveNode(roi)
    sh = slicer.vtkMRMLSubjectHierarchyNode.GetSubjectHierarchyNode(scene)
    if sh is not None:
        items = vtk.vtkIdList()
        sh.GetItemChildren(sh.GetSceneItemID(), items, True)
        for i in range(items.GetNumberOfIds()):
            item = items.GetId(i)
            if sh.GetItemAttribute(item, GRID_ATTRIBUTE) == volume_node.GetID():
                sh.RemoveItem(item)
    return len(rois)
