"""Slicer side of DICOM SEG: a segmentation of a volume loaded from DICOM is exported as a SEG referencing that
volume's instances, with the segments' terminology as Slicer holds it, and sits under the volume's study."""

from __future__ import annotations

from pathlib import Path

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


class FolderDatabase:
    """Stands in for Slicer's DICOM database (ctkDICOMDatabase is not part of slicer-core): importing a folder
    copies its files in, and each instance UID gives the copy's path, as ``fileForInstance`` does."""

    def __init__(self, root):
        self.root, self.files = root, {}

    def import_folder(self, folder):
        import shutil

        import pydicom

        target = self.root / f"import{len(list(self.root.glob('import*')))}"
        target.mkdir(parents=True)
        for f in sorted(Path(folder).iterdir()):
            ds = pydicom.dcmread(f, stop_before_pixels=True)
            uid = ds.get("SOPInstanceUID") or ds.file_meta.MediaStorageSOPInstanceUID
            self.files[uid] = str(shutil.copy(f, target / f.name))
        return target

    def file_for_instance(self, uid):
        return self.files.get(uid, "")


def _load_from_database(db, folder, mrml):
    """The series as Slicer's DICOM plugin loads it from the database: a volume node carrying its instance UIDs,
    under its patient and study in the subject hierarchy."""
    import pydicom
    import slicer
    from VoCoSlicerLib import dicom_export, nodes

    stored = db.import_folder(folder)
    headers = [pydicom.dcmread(f, stop_before_pixels=True) for f in sorted(stored.iterdir())]
    node = nodes.node_from_volume(read_volume(stored), mrml.scene, "CT from DICOM")
    node.SetAttribute(dicom_export.INSTANCE_UIDS, " ".join(h.file_meta.MediaStorageSOPInstanceUID for h in headers))
    sh = slicer.vtkMRMLSubjectHierarchyNode.GetSubjectHierarchyNode(mrml.scene)
    patient = sh.CreateSubjectItem(sh.GetSceneItemID(), "Anonymous")
    study = sh.CreateStudyItem(patient, "CT study")
    sh.SetItemUID(study, "DICOM", headers[0].StudyInstanceUID)
    sh.CreateItem(study, node)
    return node, headers, study


def _coded_package(path):
    """A real, untrained model package (MONAI BasicUNet) whose labels carry standard codes (liver, spleen)."""
    import torch
    from vococore.networks.backbones import BackboneSpec, build_segmenter
    from vococore.preprocessing.preprocessor import PreprocessConfig
    from vococore.segmentation.package import ModelPackage, save_package

    torch.manual_seed(0)
    spec = BackboneSpec(arch="cnn", feature_size=8)
    package = ModelPackage(backbone=spec, labels=make_labels({1: "liver", 2: "spleen"}),
                           preprocess=PreprocessConfig(spacing=(6.0,) * 3, min_size=(32, 32, 32)),
                           roi_size=(32, 32, 32), description="tiny coded model")
    return save_package(build_segmenter(spec, out_channels=3), package, path)


def test_presenter_exports_the_result_of_a_dicom_volume_into_its_study(sample, tmp_path, mrml):
    import time

    import highdicom as hd
    import slicer
    from vococore.segmentation.package import read_package_info
    from VoCoSlicerLib import device
    from VoCoSlicerLib.dicom_export import DicomStore
    from VoCoSlicerLib.logic import VoCoLogic
    from VoCoSlicerLib.presenter import ModuleState, Presenter
    from VoCoSlicerLib.registry import ModelRegistry

    db = FolderDatabase(tmp_path / "dicomdb")
    logic = VoCoLogic(mrml.scene, registry=ModelRegistry(cache_dir=tmp_path / "models"), work_dir=tmp_path / "work")
    errors = []
    presenter = Presenter(ModuleState(device="cpu"), logic, on_error=lambda *e: errors.append(e),
                          probe_gpu=device.gpu_facts, runs_dir=tmp_path / "runs")
    presenter.dicom_database = DicomStore(db.file_for_instance, db.import_folder)
    volume, headers, study = _load_from_database(db, series_with_uids(sample("TotalSegDICOM"), tmp_path / "s"), mrml)
    presenter.state.inputVolume = volume
    package_path = _coded_package(tmp_path / "coded.vocomodel")
    presenter.import_model(package_path)
    export = presenter.view().actions["export_dicom_seg"]
    assert not export.enabled and export.reason.startswith("Segment a volume first")
    presenter.apply()
    assert presenter.view().actions["export_dicom_seg"].reason.startswith("A segment run is going")
    deadline = time.monotonic() + 300
    while presenter.poll() or presenter.running:
        assert time.monotonic() < deadline
        time.sleep(0.05)
    assert presenter.texts["status"] == "segment succeeded", errors
    result = logic.result_node
    liver = result.GetSegmentation().GetSegment(result.GetSegmentation().GetNthSegmentID(0))
    assert "SCT^10200004^Liver" in liver.GetTerminology()  # the package's terms on the segments
    export = presenter.view().actions["export_dicom_seg"]
    assert export.enabled and export.text == "Export DICOM SEG" and "study of 'CT from DICOM'" in export.reason

    stored = presenter.export_dicom_seg()
    assert stored.parent.parent == db.root and list((tmp_path / "work").iterdir()) == []
    seg = hd.seg.segread(stored)
    assert seg.StudyInstanceUID == headers[0].StudyInstanceUID
    assert seg.FrameOfReferenceUID == headers[0].FrameOfReferenceUID
    (referenced,) = seg.ReferencedSeriesSequence
    assert referenced.SeriesInstanceUID == headers[0].SeriesInstanceUID
    assert ({i.ReferencedSOPInstanceUID for i in referenced.ReferencedInstanceSequence}
            == {h.file_meta.MediaStorageSOPInstanceUID for h in headers})
    assert [(d.SegmentLabel, d.SegmentedPropertyTypeCodeSequence[0].CodeValue) for d in seg.SegmentSequence] == [
        ("liver", "10200004"), ("spleen", "78961009")]
    (algorithm,) = seg.SegmentSequence[0].SegmentationAlgorithmIdentificationSequence
    assert algorithm.AlgorithmName == "tiny coded model" and algorithm.AlgorithmVersion.startswith("VoCoSlicer ")
    assert read_package_info(package_path).weights_sha256 in algorithm.AlgorithmParameters
    sh = slicer.vtkMRMLSubjectHierarchyNode.GetSubjectHierarchyNode(mrml.scene)
    assert sh.GetItemParent(sh.GetItemByDataNode(result)) == study
    assert presenter.view().labels["export"] == "DICOM SEG of 'CT from DICOM VoCo' added to the study of " \
                                                "'CT from DICOM'."
    logic.cancel()
