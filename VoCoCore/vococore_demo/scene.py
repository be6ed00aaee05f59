"""The demo's Slicer scene (.mrb): the CTs, the segmentation, the base-crop grid and the position table."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import numpy as np

from vococore.io import LabelInfo
from vococore.io.volume import Volume


def write_demo_scene(path: Path, grid_ct: Volume, recipe: str, predicted: np.ndarray, true: np.ndarray,
                     seg_ct: Volume, labels: np.ndarray, label_info: list[LabelInfo]) -> Path:
    """Build a headless MRML scene and save it as ``path`` (.mrb, atomically).

    ``grid_ct`` gets the recipe's base-crop ROIs and the position table/chart of one sub-volume (``predicted``,
    ``true``); ``seg_ct`` gets a segmentation node made from ``labels`` with names and colours.
    """
    from VoCoSlicerLib.grid import draw_grid, grid_geometry
    from VoCoSlicerLib.headless import headless_scene, vtk_messages_to_log
    from VoCoSlicerLib.nodes import node_from_volume, segmentation_from_labelmap
    from VoCoSlicerLib.position import show_positions

    with tempfile.TemporaryDirectory() as cache:
        ctx = headless_scene(cache)
        scene = ctx.scene
        grid_node = node_from_volume(grid_ct, scene, Path(grid_ct.source or "CT").name.split(".")[0])
        geometry = grid_geometry(grid_ct, recipe)
        draw_grid(geometry, scene, grid_node)
        show_positions(scene, grid_node, predicted, true, geometry.recipe.grid)
        seg_node = node_from_volume(seg_ct, scene, Path(seg_ct.source or "CT").name)
        segmentation_from_labelmap(labels, seg_ct, label_info, scene, "VoCo segmentation", reference_node=seg_node)
        # Slicer names the bundle after the file, so write a plainly named file in a private folder, then move it.
        with tempfile.TemporaryDirectory(dir=path.parent) as staging:
            staged = Path(staging) / path.name
            with vtk_messages_to_log():
                written = scene.WriteToMRB(str(staged))
            if not written:
                raise RuntimeError(f"could not write the scene to {path}")
            os.replace(staged, path)
        scene.Clear(1)
    return path
