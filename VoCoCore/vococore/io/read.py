"""Read a CT volume from a file or a DICOM folder into a :class:`Volume` with its exact RAS geometry."""

from __future__ import annotations

import logging
import os
import warnings
from pathlib import Path

import numpy as np

from vococore.utils.errors import VoCoError, first_line
from vococore.io.dicom import quiet_itk, read_dicom_series
from vococore.io.formats import NIFTI, detect_format
from vococore.io.volume import LPS_TO_RAS, Volume

log = logging.getLogger(__name__)


def read_volume(path: str | os.PathLike, series_uid: str | None = None, check_finite: bool = True) -> Volume:
    """Read a 3D volume: NIfTI (.nii, .nii.gz), NRRD (.nrrd, .nhdr, .seg.nrrd), MetaImage (.mha, .mhd), or a
    folder holding a DICOM series (``series_uid`` picks one of several; default: the one with most slices).

    The array is indexed (i, j, k) and ``affine`` maps voxels to RAS mm. Problems raise :class:`VoCoError`
    naming the file: missing, unreadable or truncated, not 3D, holding NaN/infinite voxels, or a header that lies
    (zero, negative or non-finite spacing, a direction that is not a rotation, NIfTI qform and sform that
    disagree, so that another reader such as Slicer would place the volume elsewhere). Nothing is repaired.
    """
    path = Path(path)
    if not path.exists():
        raise VoCoError("no such file or folder", path)
    if path.is_dir():
        image, meta = read_dicom_series(path, series_uid)
        volume = _from_sitk(image, path, meta={"format": "dicom", **meta})
    elif detect_format(path) == NIFTI:
        volume = _read_nifti(path)
    else:
        volume = _read_with_sitk(path)
    check_geometry(volume.affine, path)
    if check_finite:
        _check_finite(volume)
    return volume


def check_geometry(affine: np.ndarray, path: str | os.PathLike) -> None:
    """Refuse a voxel-to-world matrix with non-finite entries, zero spacing or axes that are not orthonormal
    (a sheared or scaled "direction"): readers disagree about such files, so we do not guess."""
    affine = np.asarray(affine, dtype=np.float64)
    if not np.all(np.isfinite(affine)):
        raise VoCoError("header geometry has NaN or infinite values (spacing, origin or direction)", path)
    spacing = np.linalg.norm(affine[:3, :3], axis=0)
    if np.any(spacing < 1e-6):
        raise VoCoError(f"header spacing {np.round(spacing, 6).tolist()} mm has a zero axis", path)
    axes = affine[:3, :3] / spacing
    error = float(np.abs(axes.T @ axes - np.eye(3)).max())
    if error > 1e-3:
        raise VoCoError(f"header direction is not a rotation (axes off orthonormal by {error:.3g}); fix the "
                        "header: vococore does not repair it", path)


def _read_nifti(path: Path) -> Volume:
    import nibabel as nib

    try:
        # nibabel's warnings go to our log; its own logger (which says it "fixes" zero pixdim) stays quiet: the
        # stored header is checked and refused below instead.
        nib_log = logging.getLogger("nibabel.global")
        was_disabled, nib_log.disabled = nib_log.disabled, True
        try:
            with warnings.catch_warnings(record=True) as caught:
                warnings.simplefilter("always")
                img = nib.load(str(path))
                _check_nifti_header(img, path)
                data = np.asarray(img.dataobj)
        finally:
            nib_log.disabled = was_disabled
    except VoCoError:
        raise
    except Exception as exc:  # nibabel raises many types for damaged files (EOFError, zlib.error, ...)
        raise VoCoError(f"cannot read NIfTI file, damaged or truncated? ({_describe(exc)})", path) from None
    for w in caught:
        log.info("%s: nibabel: %s", path, w.message)
    data = _to_3d(data, path)
    return Volume(array=data, affine=np.asarray(img.affine, dtype=np.float64), source=str(path),
                  meta={"format": "nifti"})


def _check_nifti_header(img: "object", path: Path) -> None:
    """Spacing must be positive and finite; a qform or an sform must be set, and when both are they must agree
    (nibabel reads the sform, ITK and so Slicer may read the qform: a disagreement would mirror or shift our
    labels in Slicer)."""
    from nibabel.openers import ImageOpener

    header = img.header
    with ImageOpener(str(path)) as fh:  # the header as stored: nibabel's loaded copy has zero pixdim set to 1
        stored = type(header).from_fileobj(fh, check=False)
    zooms = np.asarray(stored["pixdim"][1:4], dtype=np.float64)
    if not np.all(np.isfinite(zooms)) or np.any(zooms <= 0):
        raise VoCoError(f"header spacing (pixdim) {zooms.tolist()} mm is not positive and finite", path)
    sform, s_code = header.get_sform(coded=True)
    qform, q_code = header.get_qform(coded=True)
    if not s_code and not q_code:
        # Readers guess differently (nibabel: x flipped, centred on the grid; ITK, and so Slicer: LPS axes from
        # the origin), so a label we wrote would come out mirrored against this CT in Slicer: refuse, don't guess.
        raise VoCoError("header has neither qform nor sform (both codes 0), so the file carries no orientation and "
                        "readers place it differently (nibabel LAS, Slicer LPS); give it one, e.g. load it in "
                        "Slicer, check it, and save it", path)
    if s_code and q_code and not np.allclose(sform, qform, atol=1e-3, rtol=1e-4):
        raise VoCoError("header qform and sform disagree (readers would place the volume differently, e.g. "
                        "mirrored in Slicer); make them equal or clear one", path)


def _read_with_sitk(path: Path) -> Volume:
    import SimpleITK as sitk

    try:
        with quiet_itk():
            image = sitk.ReadImage(str(path))
    except RuntimeError as exc:
        raise VoCoError(f"cannot read image, damaged or truncated? ({first_line(exc)})", path) from None
    spacing = np.asarray(image.GetSpacing(), dtype=np.float64)
    if not np.all(np.isfinite(spacing)) or np.any(spacing <= 0):
        raise VoCoError(f"header spacing {spacing.tolist()} mm is not positive and finite", path)
    return _from_sitk(image, path, meta={"format": detect_format(path)})


def _from_sitk(image: "object", path: Path, meta: dict) -> Volume:
    """Convert a SimpleITK image (LPS geometry, array k,j,i) into a RAS Volume (array i,j,k)."""
    import SimpleITK as sitk

    if image.GetNumberOfComponentsPerPixel() != 1:
        raise VoCoError(f"has {image.GetNumberOfComponentsPerPixel()} components per voxel; expected a "
                        "single-channel (grey-scale) volume", path)
    dim = image.GetDimension()
    if dim == 2:
        raise VoCoError(f"is a 2D image (size {image.GetSize()}); VoCoCore needs a 3D volume", path)
    if dim == 4:
        size = image.GetSize()
        if size[3] != 1:
            raise VoCoError(f"is a 4D image (size {size}); VoCoCore needs a single 3D volume", path)
        image = image[:, :, :, 0]
    elif dim != 3:
        raise VoCoError(f"has {dim} dimensions; VoCoCore needs a 3D volume", path)
    array = sitk.GetArrayFromImage(image).transpose(2, 1, 0)
    _to_3d(array, path)
    spacing = np.asarray(image.GetSpacing(), dtype=np.float64)
    direction = np.asarray(image.GetDirection(), dtype=np.float64).reshape(3, 3)
    affine_lps = np.eye(4)
    affine_lps[:3, :3] = direction * spacing
    affine_lps[:3, 3] = image.GetOrigin()
    return Volume(array=np.ascontiguousarray(array), affine=LPS_TO_RAS @ affine_lps, source=str(path), meta=meta)


def _to_3d(data: np.ndarray, path: Path) -> np.ndarray:
    """Accept (x, y, z) or (x, y, z, 1); refuse 2D images (any axis of length 1) and 4D series."""
    if data.ndim == 4 and data.shape[3] == 1:
        data = data[..., 0]
    if data.ndim == 4:
        raise VoCoError(f"is a 4D image (shape {data.shape}); VoCoCore needs a single 3D volume", path)
    if data.ndim != 3 or min(data.shape) < 2:
        raise VoCoError(f"is a 2D image (shape {data.shape}); VoCoCore needs a 3D volume with at least "
                        "2 voxels along each axis", path)
    return data


def _check_finite(volume: Volume) -> None:
    if np.issubdtype(volume.array.dtype, np.floating):
        bad = int(np.count_nonzero(~np.isfinite(volume.array)))
        if bad:
            raise VoCoError(f"contains {bad} NaN or infinite voxels of {volume.array.size}; fix or mask "
                            "them before use", volume.source)


def _describe(exc: Exception) -> str:
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[-1]}" if text else type(exc).__name__
