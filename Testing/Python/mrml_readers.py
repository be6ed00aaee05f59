"""Readers the tests use to look into MRML nodes through Slicer's own API, independent of VoCoSlicerLib."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from vococore.io.volume import Volume


def segment_voxels(segmentation_node: Any, segment_name: str, reference: Volume) -> np.ndarray:
    """Boolean mask (i, j, k) of the segment named ``segment_name`` on ``reference``'s grid."""
    import slicer

    segment_id = segmentation_node.GetSegmentation().GetSegmentIdBySegmentName(segment_name)
    assert segment_id, f"no segment named {segment_name!r}"
    scene = segmentation_node.GetScene()
    ref = scene.AddNewNodeByClass("vtkMRMLLabelMapVolumeNode", "_reference")
    try:  # the volume's affine maps (i, j, k) to RAS, as a node's IJKToRAS matrix does
        ref.SetIJKToRASMatrix(slicer.util.vtkMatrixFromArray(np.asarray(reference.affine, dtype=np.float64)))
        slicer.util.updateVolumeFromArray(ref, np.zeros(reference.shape[::-1], np.uint8))
        array = slicer.util.arrayFromSegmentBinaryLabelmap(segmentation_node, segment_id, ref)
    finally:
        scene.RemoveNode(ref)
    return np.asarray(array).transpose(2, 1, 0).astype(bool)


def table_values(table: Any) -> tuple[np.ndarray, np.ndarray]:
    """The "predicted overlap" and "true overlap" columns of a table node, read cell by cell by column name."""
    data = table.GetTable()
    rows = range(data.GetNumberOfRows())
    return tuple(np.array([data.GetValueByName(r, name).ToDouble() for r in rows])
                 for name in ("predicted overlap", "true overlap"))


def read_seg_nrrd(scene: Any, path: str | Path) -> Any:
    """A segmentation node read from ``path`` by Slicer's own segmentation storage node."""
    import slicer

    node = scene.AddNewNodeByClass("vtkMRMLSegmentationNode")
    storage = slicer.vtkMRMLSegmentationStorageNode()
    scene.AddNode(storage)
    storage.SetFileName(str(path))
    assert storage.ReadData(node), f"Slicer could not read {path}"
    return node
