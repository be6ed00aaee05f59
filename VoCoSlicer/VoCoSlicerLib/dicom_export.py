"""DICOM SEG export of a segmentation computed from a volume that came from Slicer's DICOM database, and the
standard terminology on its segments, so the result files into the input's study (Qt-free; the widget passes
Slicer's database through :class:`DicomStore`: ``slicer.dicomDatabase.fileForInstance`` and DICOMUtils' import)."""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from vococore.io.dicom_seg import Algorithm, write_dicom_seg
from vococore.io.labels import LabelInfo, Terminology
from vococore.utils.errors import VoCoError

from VoCoSlicerLib.nodes import labelmap_from_segmentation, place_beside, volume_from_node

# Attribute that Slicer's DICOM scalar volume plugin sets on a loaded volume: its SOP Instance UIDs, space-separated.
INSTANCE_UIDS = "DICOM.instanceUIDs"


class DicomStore:
    """The DICOM database as the export needs it: the file of an instance UID, and importing a folder (copying
    its files into the database). Slicer: ``DicomStore(slicer.dicomDatabase.fileForInstance, lambda folder:
    DICOMUtils.importDicom(folder, slicer.dicomDatabase, copyFiles=True))``."""

    def __init__(self, file_for_instance: Callable[[str], str], import_folder: Callable[[str], None]) -> None:
        self.file_for_instance, self.import_folder = file_for_instance, import_folder

    def add(self, path: str | os.PathLike) -> Path:
        """Import the DICOM file at ``path`` (alone in its folder) and return where the database keeps it."""
        import pydicom

        uid = pydicom.dcmread(str(path), stop_before_pixels=True).SOPInstanceUID
        self.import_folder(str(Path(path).parent))
        stored = self.file_for_instance(uid)
        if not stored or not Path(stored).is_file():
            raise VoCoError("the DICOM database did not take the DICOM SEG file", path)
        return Path(stored)


def not_from_dicom(volume_node: Any) -> str:
    """Why DICOM SEG cannot reference ``volume_node`` (empty when it came from Slicer's DICOM database)."""
    if volume_node.GetAttribute(INSTANCE_UIDS):
        return ""
    return (f"The input volume '{volume_node.GetName()}' was not loaded from DICOM (Slicer's DICOM database): "
            "DICOM SEG references the source DICOM images. Save the segmentation as .seg.nrrd instead.")


def package_algorithm(package_path: str | os.PathLike) -> Algorithm:
    """The algorithm identification of a model package (name, VoCoSlicer version, weights SHA-256), as
    ``vococore infer`` writes it."""
    from vococore import __version__
    from vococore.segmentation.package import read_package_info

    info = read_package_info(package_path)
    name = info.description or Path(package_path).stem
    return Algorithm(name=name, version=f"VoCoSlicer {__version__}", weights_sha256=info.weights_sha256)


def apply_terminology(segmentation_node: Any, label_info: Sequence[LabelInfo]) -> None:
    """Give each segment (found by label value) its label's standard terminology, so Slicer shows the term."""
    import slicerio.segmentation

    info = {li.value: li for li in label_info}
    seg = segmentation_node.GetSegmentation()
    for index in range(seg.GetNumberOfSegments()):
        segment = seg.GetNthSegment(index)
        label = info.get(int(segment.GetLabelValue()))
        if label is not None and label.terminology is not None:
            segment.SetTerminology(slicerio.segmentation.terminology_entry_to_string(label.terminology.to_slicer()))


def segment_labels(segmentation_node: Any, reference_node: Any) -> tuple[Any, list[LabelInfo]]:
    """All segments as one labelmap on the reference volume's grid, with names, colours and each segment's
    terminology as Slicer holds it now (a user's edits in the terminology selector included)."""
    import slicerio.segmentation

    labels, info = labelmap_from_segmentation(segmentation_node, volume_from_node(reference_node))
    seg = segmentation_node.GetSegmentation()
    coded = []
    for index, label in enumerate(info):
        segment = seg.GetNthSegment(index)
        term = None
        if segment.HasTerminology():
            entry = slicerio.segmentation.terminology_entry_from_string(segment.GetTerminology())
            term = Terminology(category=tuple(entry["category"]), type=tuple(entry["type"]),
                               type_modifier=_code(entry.get("typeModifier")),
                               region=_code(entry.get("anatomicRegion")),
                               region_modifier=_code(entry.get("anatomicRegionModifier")),
                               context=entry.get("contextName") or Terminology.context)
        coded.append(LabelInfo(label.value, label.name, label.color, term))
    return labels, coded


def export_dicom_seg(segmentation_node: Any, volume_node: Any, path: str | os.PathLike,
                     file_for_instance: Callable[[str], str], algorithm: Algorithm, overwrite: bool = False) -> Path:
    """Write the segmentation as DICOM SEG referencing ``volume_node``'s DICOM instances, and put the
    segmentation under the volume's study in the subject hierarchy. Refuses a volume not loaded from DICOM."""
    uids = (volume_node.GetAttribute(INSTANCE_UIDS) or "").split()
    if not uids:
        raise VoCoError(f"volume '{volume_node.GetName()}' was not loaded from Slicer's DICOM database; DICOM "
                        "SEG needs its source DICOM images")
    files = [file_for_instance(uid) for uid in uids]
    missing = [uid for uid, f in zip(uids, files) if not f or not Path(f).is_file()]
    if missing:
        raise VoCoError(f"{len(missing)} of the {len(uids)} DICOM images of '{volume_node.GetName()}' are not in "
                        f"the DICOM database any more (first: {missing[0]})")
    segmentation_node.SetReferenceImageGeometryParameterFromVolumeNode(volume_node)  # export on its exact grid
    labels, info = segment_labels(segmentation_node, volume_node)
    written = write_dicom_seg(labels, volume_from_node(volume_node), files, path, info, algorithm,
                              overwrite=overwrite)
    place_beside(segmentation_node, volume_node)
    return written


def _code(item: Sequence[str] | None) -> tuple[str, str, str] | None:
    """slicerio gives absent codes as missing keys or empty strings."""
    if not item or not any(item):
        return None
    scheme, value, meaning = item
    return str(scheme), str(value), str(meaning)
