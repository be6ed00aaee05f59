"""DICOM SEG output through highdicom: a labelmap on a DICOM series' grid becomes one Segmentation instance that
references the series (Study, Series, SOP Instance and Frame of Reference UIDs), one segment per label with its
standard terminology, colour and the algorithm that made it, so a PACS, OHIF or Slicer can file and read it."""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from vococore.io.labels import LabelInfo, Terminology, no_standard_code
from vococore.io.volume import LPS_TO_RAS, Volume
from vococore.utils.atomic import atomic_path
from vococore.utils.errors import VoCoError

log = logging.getLogger(__name__)

# What Slicer writes for a segment that has no terminology: every new vtkSegment gets category and type
# (SCT, 85756007, "Tissue") from its "3D Slicer General Anatomy list" (the constructor in Slicer's
# Libs/vtkSegmentationCore/vtkSegment.cxx; slicer-core 5.11 gives a fresh vtkSegment the same entry), and Slicer's
# DICOM SEG export (QuantitativeReporting's DICOMSegmentationPlugin, through dcmqi) writes that entry as it is.
# DICOM SEG demands a category and type code per segment, so a label without a standard code gets this one, and
# its Segment Description says why it is uncoded.
UNCODED = Terminology(category=("SCT", "85756007", "Tissue"), type=("SCT", "85756007", "Tissue"),
                      context="Segmentation category and type - 3D Slicer General Anatomy list")
NOT_DICOM = ("DICOM SEG needs a DICOM series as input: it references the source images (their Study, Series and "
             "SOP Instance UIDs and Frame of Reference) and lies on their exact geometry; a {kind} input has none. "
             "Write .seg.nrrd, .nrrd or .nii.gz instead")


@dataclass(frozen=True)
class Algorithm:
    """Who made the segments: model name, software version and the model's weights SHA-256."""

    name: str
    version: str
    weights_sha256: str = ""


def source_files(folder: str | os.PathLike, series_uid: str | None = None) -> list[Path]:
    """The files of the series in ``folder`` that :func:`vococore.io.read_volume` reads (``series_uid``, else
    the largest)."""
    from vococore.io.dicom import find_series

    series = find_series(Path(folder))
    chosen = series_uid if series_uid in series else max(series, key=lambda uid: len(series[uid]))
    return [Path(f) for f in series[chosen]]


def write_dicom_seg(labels: np.ndarray, reference: Volume, sources: Sequence[str | os.PathLike],
                    path: str | os.PathLike, label_info: Sequence[LabelInfo], algorithm: Algorithm,
                    overwrite: bool = False) -> Path:
    """Write ``labels`` (on ``reference``, the grid read from ``sources``) as a binary DICOM SEG at ``path``.

    Every entry of ``label_info`` becomes a segment (numbered 1..N in value order, empty ones included); a label
    value without an entry is refused. Each source image gets the frame at its own position, found through world
    coordinates, so axis flips between our array and the DICOM rows/columns cannot misplace voxels.
    """
    import highdicom as hd

    labels = np.asarray(labels)
    if tuple(labels.shape) != reference.shape:
        raise VoCoError(f"labelmap shape {labels.shape} differs from the reference grid {reference.shape}", path)
    infos = sorted(label_info, key=lambda li: li.value)
    if not infos:
        raise VoCoError("DICOM SEG needs at least one labelled segment", path)
    unknown = sorted(set(int(v) for v in np.unique(labels)) - {0} - {li.value for li in infos})
    if unknown:
        raise VoCoError(f"label values {unknown} have no name; give every value a label", path)
    datasets = read_sources(sources)
    lut = np.zeros(int(max(labels.max(initial=0), infos[-1].value)) + 1,
                   dtype=np.uint8 if len(infos) < 256 else np.uint16)
    for number, info in enumerate(infos, start=1):
        lut[info.value] = number
    frames = np.stack([lut[_frame_of(labels, reference, ds, f)] for ds, f in zip(datasets, sources)])
    descriptions = [_describe(number, info, algorithm) for number, info in enumerate(infos, start=1)]
    first = datasets[0]
    seg = hd.seg.Segmentation(
        source_images=datasets, pixel_array=frames, segmentation_type=hd.seg.SegmentationTypeValues.BINARY,
        segment_descriptions=descriptions, series_instance_uid=hd.UID(), series_number=_series_number(first),
        sop_instance_uid=hd.UID(), instance_number=1, manufacturer="VoCoSlicer",
        manufacturer_model_name=algorithm.name[:64], software_versions=algorithm.version[:64],
        device_serial_number="none", content_label="VOCOSEG", series_description=f"{algorithm.name[:50]} SEG",
        content_description=f"Segments by {algorithm.name}"[:64], content_creator_name="VoCoSlicer^vococore")
    with atomic_path(path, overwrite, suffix=".dcm") as tmp:
        seg.save_as(str(tmp))
    return Path(path)


def read_sources(sources: Sequence[str | os.PathLike]) -> list["object"]:
    """Headers (no pixels) of the source images, each with the UIDs a SEG references; refuses any without."""
    import pydicom

    datasets = []
    for f in sources:
        try:
            datasets.append(_referable(pydicom.dcmread(str(f), stop_before_pixels=True), f))
        except (pydicom.errors.InvalidDicomError, OSError) as exc:
            raise VoCoError(f"not a readable DICOM file ({exc})", f) from None
    return datasets


def _referable(ds: "object", name: str | os.PathLike) -> "object":
    """The source dataset with the UIDs a SEG must reference; SOP Class/Instance UIDs emptied by an anonymiser
    are taken from the file meta (which DICOM requires to hold the same values), other missing UIDs refuse."""
    meta = getattr(ds, "file_meta", None)
    for key, meta_key in (("SOPInstanceUID", "MediaStorageSOPInstanceUID"), ("SOPClassUID", "MediaStorageSOPClassUID")):
        if not ds.get(key) and meta is not None and meta.get(meta_key):
            setattr(ds, key, meta.get(meta_key))
    for key in ("StudyInstanceUID", "SeriesInstanceUID", "SOPInstanceUID", "SOPClassUID", "FrameOfReferenceUID"):
        if not ds.get(key):
            raise VoCoError(f"has no {key} (anonymised without new UIDs?); a DICOM SEG must reference it, so "
                            "it cannot be written for this series", name)
    return ds


def _frame_of(labels: np.ndarray, reference: Volume, ds: "object", name: str | os.PathLike) -> np.ndarray:
    """Labels at the centres of one source image's pixels (rows, columns), looked up by world position."""
    try:
        position = np.asarray(ds.ImagePositionPatient, dtype=np.float64)
        orientation = np.asarray(ds.ImageOrientationPatient, dtype=np.float64)
        row_step, col_step = (float(s) for s in ds.PixelSpacing)
        rows, cols = int(ds.Rows), int(ds.Columns)
    except AttributeError as exc:
        raise VoCoError(f"DICOM image without plane geometry ({exc})", name) from None
    r, c = np.meshgrid(np.arange(rows), np.arange(cols), indexing="ij")
    # DICOM: the first cosine triplet is the direction of increasing column index, the second of increasing row.
    lps = position + c[..., None] * col_step * orientation[:3] + r[..., None] * row_step * orientation[3:]
    ras = lps @ LPS_TO_RAS[:3, :3].T
    ijk = reference.world_to_voxel(ras)
    index = np.rint(ijk)
    if np.abs(ijk - index).max() > 1e-2 or (index < 0).any() or (index >= reference.shape).any():
        raise VoCoError("this DICOM image does not lie on the labelmap's grid; DICOM SEG is written only on "
                        "exactly the source series' geometry", name)
    i, j, k = index.astype(np.int64).transpose(2, 0, 1)
    return labels[i, j, k]


def _describe(number: int, info: LabelInfo, algorithm: Algorithm) -> "object":
    """One segment: label, coded property (with laterality / anatomic region), display colour, algorithm."""
    import highdicom as hd
    from pydicom.sr.codedict import codes

    term, uncoded = info.terminology, ""
    if term is None:
        uncoded = no_standard_code(info.name) or "No standard code is known for this label."
        log.warning("label %r has no standard terminology; DICOM SEG codes it as Slicer does an uncoded segment "
                    "(Tissue)", info.name)
        term = UNCODED
    params = {"weights_sha256": algorithm.weights_sha256} if algorithm.weights_sha256 else None
    description = hd.seg.SegmentDescription(
        segment_number=number, segment_label=info.name[:64], segmented_property_category=_coded(term.category),
        segmented_property_type=_coded(term.type), algorithm_type=hd.seg.SegmentAlgorithmTypeValues.AUTOMATIC,
        algorithm_identification=hd.AlgorithmIdentificationSequence(
            name=algorithm.name[:64], family=codes.cid7162.ArtificialIntelligence, version=algorithm.version[:64],
            source="VoCoSlicer", parameters=params),
        anatomic_regions=[_coded(term.region)] if term.region else None,
        display_color=hd.color.CIELabColor.from_rgb(*(round(255 * c) for c in info.color)))
    if uncoded:
        description.SegmentDescription = f"Uncoded: {uncoded}"[:1024]  # ST, Type 3
    if term.type_modifier:
        description.SegmentedPropertyTypeCodeSequence[0].SegmentedPropertyTypeModifierCodeSequence = [
            _coded(term.type_modifier)]
    if term.region and term.region_modifier:
        description.AnatomicRegionSequence[0].AnatomicRegionModifierSequence = [_coded(term.region_modifier)]
    return description


def _coded(code: tuple[str, str, str]) -> "object":
    from highdicom.sr import CodedConcept

    scheme, value, meaning = code
    return CodedConcept(value=value, scheme_designator=scheme, meaning=meaning)


def _series_number(source: "object") -> int:
    """A series number beside the source's (DICOM wants one; PACS sort by it)."""
    try:
        return int(source.SeriesNumber) + 1000
    except (AttributeError, TypeError, ValueError):
        return 1000
