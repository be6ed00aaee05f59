"""VoCoSlicerLib.nodes against real MRML (slicer-core): volume geometry round trips for an LPS DICOM series and an
RAS NIfTI, and labelmap -> named, coloured segmentation node that saves to .seg.nrrd and reloads."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from vococore.utils.errors import VoCoError
from vococore.io import LabelInfo, read_volume, write_labelmap
from mrml_readers import segment_voxels
from VoCoSlicerLib import nodes


def _load_with_slicer(mrml, path: Path):
    """Load a file or DICOM folder with Slicer's own volumes logic (slices sorted along the patient axis)."""
    import pydicom
    import vtk

    if path.is_dir():
        files = sorted(path.iterdir(),
                       key=lambda f: float(pydicom.dcmread(f, stop_before_pixels=True).ImagePositionPatient[2]))
        names = vtk.vtkStringArray()
        for f in files:
            names.InsertNextValue(str(f))
        return mrml.volumes.AddArchetypeScalarVolume(str(files[0]), "ct", 0, names)
    return mrml.volumes.AddArchetypeVolume(str(path), "ct")


def _sorted_rows(points: np.ndarray) -> np.ndarray:
    return points[np.lexsort(np.round(points, 3).T[::-1])]


def _segment_world_points(segment) -> np.ndarray:
    """RAS centres of a segment's voxels, from its binary labelmap's own image-to-world matrix and extent."""
    import vtk
    from vtk.util.numpy_support import vtk_to_numpy

    image = segment.GetRepresentation("Binary labelmap")
    matrix = vtk.vtkMatrix4x4()
    image.GetImageToWorldMatrix(matrix)
    m = nodes._matrix_to_numpy(matrix)
    extent = image.GetExtent()
    dims = [extent[1] - extent[0] + 1, extent[3] - extent[2] + 1, extent[5] - extent[4] + 1]
    values = vtk_to_numpy(image.GetPointData().GetScalars()).reshape(dims[::-1]).transpose(2, 1, 0)
    ijk = np.argwhere(values == segment.GetLabelValue()) + [extent[0], extent[2], extent[4]]
    return _sorted_rows(ijk @ m[:3, :3].T + m[:3, 3])


@pytest.mark.parametrize("name, orientation", [("TotalSegDICOM", "LPS"), ("TotalSegCT", "RAS")])
def test_volume_round_trip_keeps_geometry(mrml, sample, name, orientation):
    path = sample(name)
    reference = read_volume(path)
    assert reference.orientation == orientation

    loaded = _load_with_slicer(mrml, path)
    from_slicer = nodes.volume_from_node(loaded)
    np.testing.assert_allclose(from_slicer.affine, reference.affine, atol=1e-4)
    np.testing.assert_array_equal(from_slicer.array, reference.array)

    created = nodes.node_from_volume(reference, mrml.scene, "ct_copy")
    np.testing.assert_allclose(nodes.ijk_to_world(created), nodes.ijk_to_world(loaded), atol=1e-4)
    back = nodes.volume_from_node(created)
    assert back.same_grid(reference)
    np.testing.assert_array_equal(back.array, reference.array)
    # one voxel checked through both worlds: Slicer's RAS of voxel (i, j, k) is vococore's RAS of it
    ijk = np.array([5, 17, 3])
    value = reference.array[tuple(ijk)]
    import slicer

    assert slicer.util.arrayFromVolume(created)[ijk[2], ijk[1], ijk[0]] == value
    import vtk

    matrix = vtk.vtkMatrix4x4()
    created.GetIJKToRASMatrix(matrix)
    np.testing.assert_allclose(matrix.MultiplyPoint([*ijk.tolist(), 1.0])[:3], reference.voxel_to_world(ijk),
                               atol=1e-4)


def test_parent_transform_is_applied(mrml, sample):
    import vtk

    volume = read_volume(sample("TotalSegCT"))
    node = nodes.node_from_volume(volume, mrml.scene, "ct")
    transform = mrml.scene.AddNewNodeByClass("vtkMRMLLinearTransformNode")
    shift = vtk.vtkMatrix4x4()
    shift.SetElement(0, 3, 12.5)
    transform.SetMatrixTransformToParent(shift)
    node.SetAndObserveTransformNodeID(transform.GetID())
    moved = nodes.volume_from_node(node)
    np.testing.assert_allclose(moved.origin, volume.origin + [12.5, 0, 0])


def test_not_a_volume_is_refused(mrml):
    table = mrml.scene.AddNewNodeByClass("vtkMRMLTableNode", "results")
    with pytest.raises(VoCoError, match="'results' is not a scalar volume node"):
        nodes.volume_from_node(table)


def test_labelmap_to_segmentation_names_colours_voxels_and_reload(mrml, sample, tmp_path):
    import slicer

    ct_path = sample("TotalSegCT")
    ct = read_volume(ct_path)
    truth = read_volume(sample("TotalSegCTLabels"))
    labels = np.where(np.isin(truth.array, [1, 5, 52]), truth.array, 0).astype(np.uint8)
    info = [LabelInfo(1, "spleen", (0.6, 0.2, 0.8)), LabelInfo(5, "liver", (0.8, 0.4, 0.2)),
            LabelInfo(52, "aorta", (0.9, 0.1, 0.1))]
    # the labelmap travels through a file as vococore writes it, then into Slicer
    label_file = write_labelmap(labels, ct, tmp_path / "labels.nii.gz", info)
    labels_read = read_volume(label_file)

    ct_node = nodes.node_from_volume(ct, mrml.scene, "CT")
    seg = nodes.segmentation_from_labelmap(labels_read.array, labels_read, info, mrml.scene, "VoCo", ct_node)
    segmentation = seg.GetSegmentation()
    assert segmentation.GetNumberOfSegments() == 3
    by_name = {segmentation.GetNthSegment(i).GetName(): segmentation.GetNthSegment(i) for i in range(3)}
    assert set(by_name) == {"spleen", "liver", "aorta"}
    for entry in info:
        np.testing.assert_allclose(by_name[entry.name].GetColor(), entry.color, atol=1e-6)
        mask = segment_voxels(seg, entry.name, ct)
        np.testing.assert_array_equal(mask, labels == entry.value)
    # world coordinates, read from the segment's own oriented image (not through the CT grid): every voxel of
    # each segment sits at the RAS position that the CT affine gives the labelmap voxel
    for entry in info:
        np.testing.assert_allclose(_segment_world_points(by_name[entry.name]),
                                   _sorted_rows(ct.voxel_to_world(np.argwhere(labels == entry.value))), atol=1e-3)

    out = nodes.save_segmentation(seg, tmp_path / "voco.seg.nrrd")
    with pytest.raises(VoCoError, match="already exists"):
        nodes.save_segmentation(seg, out)
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []
    reloaded = nodes.load_segmentation(out, mrml.scene, reference_node=ct_node)
    assert reloaded is not seg
    again = reloaded.GetSegmentation()
    assert sorted(again.GetNthSegment(i).GetName() for i in range(again.GetNumberOfSegments())) == \
        ["aorta", "liver", "spleen"]
    for entry in info:
        np.testing.assert_array_equal(segment_voxels(reloaded, entry.name, ct), labels == entry.value)
    assert slicer.util.getNode("VoCo", scene=mrml.scene) is seg


def test_seg_nrrd_written_by_vococore_loads_with_names(mrml, sample, tmp_path):
    ct = read_volume(sample("TotalSegCTSmall"))
    labels = np.zeros(ct.shape, np.uint8)
    labels[10:30, 20:40, 5:15] = 2
    labels[60:70, 50:60, 0:30] = 7
    info = [LabelInfo(2, "kidney_right", (0.1, 0.9, 0.2)), LabelInfo(7, "stomach", (0.9, 0.9, 0.1))]
    path = write_labelmap(labels, ct, tmp_path / "result.seg.nrrd", info)
    node = nodes.load_segmentation(path, mrml.scene)
    segmentation = node.GetSegmentation()
    names = {segmentation.GetNthSegment(i).GetName(): segmentation.GetNthSegment(i).GetColor()
             for i in range(segmentation.GetNumberOfSegments())}
    assert set(names) == {"kidney_right", "stomach"}
    np.testing.assert_allclose(names["stomach"], (0.9, 0.9, 0.1), atol=1e-5)
    np.testing.assert_array_equal(segment_voxels(node, "kidney_right", ct), labels == 2)
    with pytest.raises(VoCoError, match="not found"):
        nodes.load_segmentation(tmp_path / "missing.seg.nrrd", mrml.scene)


def test_result_goes_under_the_input_study(mrml, sample):
    import slicer

    ct = read_volume(sample("TotalSegCTSmall"))
    ct_node = nodes.node_from_volume(ct, mrml.scene, "CT")
    sh = slicer.vtkMRMLSubjectHierarchyNode.GetSubjectHierarchyNode(mrml.scene)
    patient = sh.CreateSubjectItem(sh.GetSceneItemID(), "Patient 1")
    study = sh.CreateStudyItem(patient, "Abdomen CT study")
    sh.CreateItem(study, ct_node)
    labels = np.zeros(ct.shape, np.uint8)
    labels[40:50, 40:50, 10:20] = 1
    seg = nodes.segmentation_from_labelmap(labels, ct, [LabelInfo(1, "lesion", (1.0, 0.0, 0.0))], mrml.scene,
                                           "VoCo", ct_node)
    assert sh.GetItemParent(sh.GetItemByDataNode(seg)) == study
    # no hierarchy item for the input: nothing is moved, nothing fails
    other = nodes.node_from_volume(ct, mrml.scene, "loose")
    seg2 = nodes.segmentation_from_labelmap(labels, ct, [], mrml.scene, "VoCo", other)
    assert seg2.GetSegmentation().GetNthSegment(0).GetName() == "Segment_1"
    assert seg2.GetName() != seg.GetName()


def test_segmentation_back_to_labelmap_for_training(mrml, sample):
    ct = read_volume(sample("TotalSegCTSmall"))
    labels = np.zeros(ct.shape, np.uint8)
    labels[10:40, 20:50, 3:12] = 4
    labels[70:90, 30:60, 10:25] = 9
    info = [LabelInfo(4, "gallbladder", (0.2, 0.8, 0.3)), LabelInfo(9, "left adrenal", (0.5, 0.5, 0.9))]
    ct_node = nodes.node_from_volume(ct, mrml.scene, "CT")
    seg = nodes.segmentation_from_labelmap(labels, ct, info, mrml.scene, "truth", ct_node)
    exported, exported_info = nodes.labelmap_from_segmentation(seg, ct)
    assert [(i.value, i.name) for i in exported_info] == [(1, "gallbladder"), (2, "left adrenal")]
    np.testing.assert_array_equal(exported == 1, labels == 4)
    np.testing.assert_array_equal(exported == 2, labels == 9)
    empty = mrml.scene.AddNewNodeByClass("vtkMRMLSegmentationNode", "empty")
    with pytest.raises(VoCoError, match="'empty' has no segments"):
        nodes.labelmap_from_segmentation(empty, ct)


def test_training_labels_follow_the_chosen_volume_not_the_segmentation_geometry(mrml, sample):
    """A segmentation drawn on a coarser copy of the CT (its reference geometry) exports on the CT's own grid,
    with every labelled voxel where it was drawn in RAS."""
    from vococore.io.volume import Volume

    ct = read_volume(sample("TotalSegCTSmall"))
    affine = ct.affine.copy()
    affine[:3, :3] *= 3.0  # every third voxel of the CT, same origin: voxel (i, j, k) -> CT (3i, 3j, 3k)
    coarse = Volume(array=np.zeros(tuple(n // 3 for n in ct.shape), np.int16), affine=affine, source="coarse")
    labels = np.zeros(coarse.shape, np.uint8)
    labels[5:15, 10:20, 2:6] = 1
    ct_node = nodes.node_from_volume(ct, mrml.scene, "CT")
    coarse_node = nodes.node_from_volume(coarse, mrml.scene, "coarse")
    seg = nodes.segmentation_from_labelmap(labels, coarse, [LabelInfo(1, "box", (1.0, 0.0, 0.0))], mrml.scene,
                                           "drawn on coarse", coarse_node)
    exported, _ = nodes.labelmap_from_segmentation(seg, ct)
    assert exported.shape == ct.shape
    expected = np.zeros(ct.shape, bool)
    expected[14:44, 29:59, 5:17] = True  # coarse voxel i covers CT voxels 3i-1 .. 3i+1
    np.testing.assert_array_equal(exported == 1, expected)
