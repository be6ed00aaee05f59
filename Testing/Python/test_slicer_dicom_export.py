"""Slicer side of DICOM SEG: a segmentation of a volume loaded from DICOM is exported as a SEG referencing that
volume's instances, with the segments' terminology as Slicer holds it, and sits under the volume's study."""

from __future__ import annotations

import numpy as np
import pytest

from dicom_seg_helpers import seg_on_grid, series_with_uids
from vococore.io import read_volume
from vococore.io.dicom_seg import Algorithm
from vococore.io.labels import make_labels
from vococore.utils.errors import VoCoError


def test_export_references_the_volume_and_files_under_its_study(sample, tmp_path, mrml):
    import pydicom
    import slicer
    from VoCoSlicerLib import dicom_export, nodes
    from vococore.preprocessing.resample import resample_to_grid

    folder = series_with_uids(sample("TotalSegDICOM"), tmp_path / "series")
    ct = read_volume(folder)
    # as Slicer's DICOM plugin loads it: a volume node with its instance UIDs, under patient > study
    headers = {pydicom.dcmread(f, stop_before_pixels=True).file_meta.MediaStorageSOPInstanceUID: f
               for f in sorted(folder.iterdir())}
    volume_node = nodes.node_from_volume(ct, mrml.scene, "CT")
    volume_node.SetAttribute(dicom_export.INSTANCE_UIDS, " ".join(headers))
    sh = slicer.vtkMRMLSubjectHierarchyNode.GetSubjectHierarchyNode(mrml.scene)
    study = sh.CreateStudyItem(sh.CreateSubjectItem(sh.GetSceneItemID(), "Patient"), "Study")
    sh.CreateItem(study, volume_node)

    reference = resample_to_grid(read_volume(sample("TotalSegDICOMLabels")), ct).array
    labels = np.select([reference == 5, reference == 1], [1, 2], 0).astype(np.uint8)
    info = make_labels({1: "liver", 2: "spleen"})
    segmentation = nodes.segmentation_from_labelmap(labels, ct, info, mrml.scene, "VoCo")
    assert not sh.GetItemByDataNode(segmentation)  # made without a reference node: not in the study yet
    dicom_export.apply_terminology(segmentation, info)
    liver = segmentation.GetSegmentation().GetSegment(segmentation.GetSegmentation().GetNthSegmentID(0))
    assert "SCT^10200004^Liver" in liver.GetTerminology()

    out = dicom_export.export_dicom_seg(segmentation, volume_node, tmp_path / "seg.dcm",
                                        lambda uid: str(headers.get(uid, "")), Algorithm("VoCo test", "VoCoSlicer 0"))
    assert sh.GetItemParent(sh.GetItemByDataNode(segmentation)) == study
    ds = pydicom.dcmread(out)
    referenced = {i.ReferencedSOPInstanceUID for i in ds.ReferencedSeriesSequence[0].ReferencedInstanceSequence}
    assert referenced == set(headers)
    assert [(s.SegmentLabel, s.SegmentedPropertyTypeCodeSequence[0].CodeValue) for s in ds.SegmentSequence] == [
        ("liver", "10200004"), ("spleen", "78961009")]
    decoded, numbers = seg_on_grid(out, ct)
    assert numbers == {"liver": 1, "spleen": 2} and np.array_equal(decoded, labels) and labels.any()


def test_refuses_a_volume_not_from_dicom(sample, tmp_path, mrml):
    from VoCoSlicerLib import dicom_export, nodes

    ct = read_volume(sample("TotalSegCT"))
    volume_node = nodes.node_from_volume(ct, mrml.scene, "CT")
    segmentation = nodes.segmentation_from_labelmap((ct.array > 200).astype(np.uint8), ct,
                                                    make_labels({1: "bone"}), mrml.scene, "S")
    with pytest.raises(VoCoError, match="not loaded from Slicer's DICOM database"):
        dicom_export.export_dicom_seg(segmentation, volume_node, tmp_path / "x.dcm", lambda uid: "",
                                      Algorithm("a", "b"))
    assert not (tmp_path / "x.dcm").exists()
