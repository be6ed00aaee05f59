"""MRML nodes <-> vococore: volume nodes to and from :class:`vococore.Volume`, labelmaps to named, coloured
segmentation nodes placed beside their input in the subject hierarchy. Qt-free (runs on the slicer-core wheel)."""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from vococore.utils.errors import VoCoError
from vococore.io import LabelInfo
from vococore.io.volume import Volume


def _matrix_to_numpy(matrix: Any) -> np.ndarray:
    return np.array([[matrix.GetElement(r, c) for c in range(4)] for r in range(4)], dtype=np.float64)


def _numpy_to_matrix(array: np.ndarray) -> Any:
    import vtk

    matrix = vtk.vtkMatrix4x4()
    for r in range(4):
        for c in range(4):
            matrix.SetElement(r, c, float(array[r, c]))
    return matrix


def ijk_to_world(node: Any) -> np.ndarray:
    """The node's voxel (i, j, k) -> world RAS matrix, including a linear parent transform if there is one."""
    import slicer
    import vtk

    matrix = vtk.vtkMatrix4x4()
    node.GetIJKToRASMatrix(matrix)
    affine = _matrix_to_numpy(matrix)
    parent = node.GetParentTransformNode()
    if parent is not None:
        if not parent.IsTransformToWorldLinear():
            raise VoCoError(f"volume node '{node.GetName()}' is under a non-linear transform; harden it first")
        to_world = vtk.vtkMatrix4x4()
        slicer.vtkMRMLTransformNode.GetMatrixTransformBetweenNodes(parent, None, to_world)
        affine = _matrix_to_numpy(to_world) @ affine
    return affine


def volume_from_node(node: Any) -> Volume:
    """A :class:`Volume` with the node's voxels (as (i, j, k), not Slicer's (k, j, i)) and world geometry."""
    import slicer

    if node is None or not node.IsA("vtkMRMLScalarVolumeNode"):
        raise VoCoError(f"'{getattr(node, 'GetName', lambda: node)()}' is not a scalar volume node")
    if node.GetImageData() is None:
        raise VoCoError(f"volume node '{node.GetName()}' has no image data")
    array = slicer.util.arrayFromVolume(node)
    if array.ndim != 3:
        raise VoCoError(f"volume node '{node.GetName()}' has {array.ndim - 3} extra components; need a scalar CT")
    return Volume(array=np.ascontiguousarray(array.transpose(2, 1, 0)), affine=ijk_to_world(node),
                  source=node.GetName(), meta={"node_id": node.GetID()})


def node_from_volume(volume: Volume, scene: Any, name: str, labelmap: bool = False) -> Any:
    """A new scalar (or labelmap) volume node holding ``volume``'s voxels and RAS geometry."""
    import slicer

    cls = "vtkMRMLLabelMapVolumeNode" if labelmap else "vtkMRMLScalarVolumeNode"
    node = scene.AddNewNodeByClass(cls, scene.GenerateUniqueName(name))
    node.SetIJKToRASMatrix(_numpy_to_matrix(volume.affine))
    slicer.util.updateVolumeFromArray(node, np.ascontiguousarray(volume.array.transpose(2, 1, 0)))
    return node


def place_beside(node: Any, reference_node: Any) -> None:
    """Put ``node`` in the same subject-hierarchy folder (e.g. the DICOM study) as ``reference_node``, if any.

    Results under the input's study can be exported as DICOM SEG with it; without a hierarchy nothing changes.
    """
    import slicer

    scene = node.GetScene()
    sh = slicer.vtkMRMLSubjectHierarchyNode.GetSubjectHierarchyNode(scene)
    if sh is None or reference_node is None:
        return
    ref_item = sh.GetItemByDataNode(reference_node)
    if not ref_item:
        return
    parent = sh.GetItemParent(ref_item)
    item = sh.GetItemByDataNode(node)
    if item:
        sh.SetItemParent(item, parent)
    else:
        sh.CreateItem(parent, node)


def segmentation_from_labelmap(labels: np.ndarray, reference: Volume, label_info: Sequence[LabelInfo],
                               scene: Any, name: str, reference_node: Any = None) -> Any:
    """A new segmentation node with one segment per label value present, named and coloured from ``label_info``.

    ``labels`` is indexed (i, j, k) on ``reference``'s grid; values without an entry become ``Segment_<value>``.
    """
    import slicer

    labels = np.asarray(labels)
    if tuple(labels.shape) != reference.shape:
        raise VoCoError(f"labelmap shape {labels.shape} differs from the grid of '{reference.source}' "
                        f"{reference.shape}")
    info = {li.value: li for li in label_info}
    temp = node_from_volume(reference.with_array(labels.astype(np.int32)), scene, name + "_labels", labelmap=True)
    segmentation = scene.AddNewNodeByClass("vtkMRMLSegmentationNode", scene.GenerateUniqueName(name))
    try:
        if reference_node is not None:
            segmentation.SetReferenceImageGeometryParameterFromVolumeNode(reference_node)
        if not slicer.vtkSlicerSegmentationsModuleLogic.ImportLabelmapToSegmentationNode(temp, segmentation):
            raise VoCoError(f"could not import the labelmap into segmentation '{name}'")
    finally:
        scene.RemoveNode(temp)
    name_segments(segmentation, info)
    place_beside(segmentation, reference_node)
    return segmentation


def name_segments(segmentation_node: Any, info: dict[int, LabelInfo]) -> None:
    """Name and colour each segment by the label value it carries (``Segment_<value>`` without an entry)."""
    from vococore.io.labels import default_color

    seg = segmentation_node.GetSegmentation()
    for index in range(seg.GetNumberOfSegments()):
        segment = seg.GetNthSegment(index)
        value = int(segment.GetLabelValue())
        entry = info.get(value)
        segment.SetName(entry.name if entry else f"Segment_{value}")
        segment.SetColor(*(entry.color if entry else default_color(value)))


def load_segmentation(path: str | os.PathLike, scene: Any, name: str | None = None,
                      reference_node: Any = None) -> Any:
    """Load a ``.seg.nrrd`` (e.g. written by ``vococore infer``) as a new segmentation node beside its input."""
    import slicer

    path = Path(path)
    if not path.is_file():
        raise VoCoError("segmentation file not found", path)
    node = scene.AddNewNodeByClass("vtkMRMLSegmentationNode",
                                   scene.GenerateUniqueName(name or path.name.split(".")[0]))
    storage = slicer.vtkMRMLSegmentationStorageNode()
    storage.SetFileName(str(path))
    if not storage.ReadData(node):
        scene.RemoveNode(node)
        raise VoCoError("could not read the segmentation (not a Slicer .seg.nrrd?)", path)
    if reference_node is not None:
        node.SetReferenceImageGeometryParameterFromVolumeNode(reference_node)
    place_beside(node, reference_node)
    return node


def save_segmentation(node: Any, path: str | os.PathLike, overwrite: bool = False) -> Path:
    """Write a segmentation node as ``.seg.nrrd``, atomically, refusing to replace a file unless asked."""
    import slicer

    from vococore.utils.atomic import atomic_path

    if not str(path).endswith(".seg.nrrd"):
        raise VoCoError("segmentations are saved as .seg.nrrd", path)
    with atomic_path(path, overwrite=overwrite, suffix=".seg.nrrd") as tmp:
        storage = slicer.vtkMRMLSegmentationStorageNode()
        storage.SetFileName(str(tmp))
        if not storage.WriteData(node):
            raise VoCoError(f"could not write segmentation '{node.GetName()}'", path)
    return Path(path)


def labelmap_from_segmentation(segmentation_node: Any, reference: Volume) -> tuple[np.ndarray, list[LabelInfo]]:
    """All segments as one labelmap (i, j, k) on ``reference``'s grid, values 1..N in segment order, with names
    and colours (for exporting training labels). Overlapping segments: the later one wins.

    The segments are resampled onto ``reference`` (the chosen CT), never onto the segmentation's own reference
    geometry, which differs when the segmentation was drawn on another volume or grid."""
    import slicer
    import vtk

    seg = segmentation_node.GetSegmentation()
    if seg.GetNumberOfSegments() == 0:
        raise VoCoError(f"segmentation '{segmentation_node.GetName()}' has no segments")
    scene = segmentation_node.GetScene()
    geometry = node_from_volume(reference.with_array(np.zeros(reference.shape, np.uint8)), scene, "_geometry",
                                labelmap=True)
    labelmap = scene.AddNewNodeByClass("vtkMRMLLabelMapVolumeNode", scene.GenerateUniqueName("_export"))
    ids = vtk.vtkStringArray()
    for i in range(seg.GetNumberOfSegments()):
        ids.InsertNextValue(seg.GetNthSegmentID(i))
    try:
        if not slicer.vtkSlicerSegmentationsModuleLogic.ExportSegmentsToLabelmapNode(
                segmentation_node, ids, labelmap, geometry, slicer.vtkSegmentation.EXTENT_REFERENCE_GEOMETRY):
            raise VoCoError(f"could not export segmentation '{segmentation_node.GetName()}' to a labelmap")
        labels = slicer.util.arrayFromVolume(labelmap).transpose(2, 1, 0).copy()
    finally:
        scene.RemoveNode(labelmap)
        scene.RemoveNode(geometry)
    if labels.shape != reference.shape:
        raise VoCoError(f"segmentation '{segmentation_node.GetName()}' exported as {labels.shape}, not on the grid "
                        f"of '{reference.source}' {reference.shape}")
    info = [LabelInfo(i + 1, seg.GetNthSegment(i).GetName(), tuple(seg.GetNthSegment(i).GetColor()))
            for i in range(seg.GetNumberOfSegments())]
    return labels, info
