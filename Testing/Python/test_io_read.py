"""CT input: every sample loads with the size, spacing and orientation that SOURCES.md lists, and geometry is
exact across formats and conventions (RAS NIfTI, LPS DICOM, LAS-stored labels)."""

from __future__ import annotations

import numpy as np
import pytest

from vococore.io import read_volume
from vococore.preprocessing.resample import resample_to_grid

# name, shape (x, y, z), spacing (mm), orientation, HU/value range (from shared/data/ct/SOURCES.md)
EXPECTED = [
    ("TotalSegCT", (122, 101, 112), (3.0, 3.0, 3.0), "RAS", (-1207, 3382)),
    ("TotalSegCTLabels", (122, 101, 112), (3.0, 3.0, 3.0), "RAS", (0, 117)),
    ("TotalSegCTSmall", (122, 101, 30), (3.0, 3.0, 3.0), "RAS", (-1100, 1207)),
    ("TotalSegCTSmallLabels", (122, 101, 30), (3.0, 3.0, 3.0), "RAS", (0, 117)),
    ("TotalSegDICOM", (512, 512, 20), (0.977, 0.977, 2.0), "LPS", (-1024, 1839)),
    ("TotalSegDICOMLabels", (512, 512, 20), (0.977, 0.977, 2.0), "LAS", (0, 117)),
    ("Dcmqi3Slice", (512, 512, 3), (0.811, 0.811, 1.0), "LPS", (-3024, 1381)),
    ("Dcmqi3SliceLabels", (512, 512, 3), (0.811, 0.811, 1.0), "LPS", (0, 2)),
]


@pytest.mark.parametrize("name,shape,spacing,orientation,value_range", EXPECTED)
def test_sample_loads_as_listed(sample, name, shape, spacing, orientation, value_range):
    vol = read_volume(sample(name))
    assert vol.shape == shape
    np.testing.assert_allclose(vol.spacing, spacing, atol=1e-3)
    assert vol.orientation == orientation
    assert vol.array.min() == value_range[0]
    assert vol.array.max() <= value_range[1]


def test_dicom_series_is_sorted_by_position(sample):
    """Slice k of the volume is the file that pydicom places k-th along the slice normal (its own sort of
    ImagePositionPatient), with that file's pixels and position: independent of the GDCM/SimpleITK reader."""
    import pydicom

    folder = sample("TotalSegDICOM")
    vol = read_volume(folder)
    files = [pydicom.dcmread(p) for p in sorted(folder.iterdir()) if p.is_file()]
    row, col = np.array(files[0].ImageOrientationPatient[:3]), np.array(files[0].ImageOrientationPatient[3:])
    normal = np.cross(row, col)
    files.sort(key=lambda ds: float(np.dot(normal, np.array(ds.ImagePositionPatient, float))))
    assert len(files) == vol.shape[2] == 20 and vol.meta["other_series"] == {}
    for k, ds in enumerate(files):
        hu = ds.pixel_array.T * float(ds.RescaleSlope) + float(ds.RescaleIntercept)  # array axes are (x, y)
        np.testing.assert_array_equal(vol.array[:, :, k], hu, err_msg=f"slice {k}")
        np.testing.assert_allclose(vol.affine_lps @ [0, 0, k, 1], [*map(float, ds.ImagePositionPatient), 1],
                                   atol=1e-3)


def test_dicom_and_flipped_label_agree_in_world(sample):
    """The LAS-stored label lands voxel-for-voxel on the LPS series through world coordinates, and the organs
    it names get their expected contrast-CT intensities there (by raw array index they would not)."""
    ct = read_volume(sample("TotalSegDICOM"))
    label = read_volume(sample("TotalSegDICOMLabels"))
    flip_j = np.diag([1.0, -1.0, 1.0, 1.0])
    flip_j[1, 3] = ct.shape[1] - 1
    np.testing.assert_allclose(label.affine @ flip_j, ct.affine, atol=1e-3)  # same grid, j stored reversed
    np.testing.assert_allclose(label.world_bounds(), ct.world_bounds(), atol=1e-3)
    on_ct = resample_to_grid(label, ct).array
    assert np.array_equal(on_ct, label.array[:, ::-1, :])  # the stored y-flip, undone by geometry alone
    means = {v: ct.array[on_ct == v].mean() for v in (5, 1, 52)}  # liver, spleen, aorta
    assert 70 < means[5] < 110 and 60 < means[1] < 100 and 150 < means[52] < 210
    assert ct.array[label.array == 5].mean() < 0  # raw-index pairing puts "liver" on air/fat


def test_lps_to_ras_conversion_is_explicit(sample):
    """DICOM LPS geometry becomes RAS by negating x and y of the direction columns and the origin."""
    import SimpleITK as sitk

    path = sample("TotalSegDICOM")
    vol = read_volume(path)
    reader = sitk.ImageSeriesReader()
    reader.SetFileNames(reader.GetGDCMSeriesFileNames(str(path)))
    image = reader.Execute()
    origin_lps = np.array(image.GetOrigin())
    np.testing.assert_allclose(vol.origin, origin_lps * [-1, -1, 1])
    np.testing.assert_allclose(vol.affine_lps[:3, 3], origin_lps)
    # voxel (i, j, k) of the array is SimpleITK index (i, j, k)
    idx = (300, 200, 7)
    assert vol.array[idx] == sitk.GetArrayViewFromImage(image)[idx[::-1]]
    np.testing.assert_allclose(vol.voxel_to_world(np.array(idx)),
                               np.array(image.TransformIndexToPhysicalPoint(idx)) * [-1, -1, 1], atol=1e-6)


def test_formats_agree_on_geometry(sample, tmp_path):
    """The same CT written as NRRD, MetaImage and NIfTI reads back with identical voxels and affine."""
    from vococore.io import write_volume

    ct = read_volume(sample("TotalSegDICOM"))
    for name in ("ct.nrrd", "ct.mha", "ct.nii.gz", "ct.nhdr"):
        back = read_volume(write_volume(ct, tmp_path / name))
        assert np.array_equal(back.array, ct.array), name
        np.testing.assert_allclose(back.affine, ct.affine, atol=1e-4, err_msg=name)


def test_several_series_in_one_folder_pick_largest_or_by_uid(sample, tmp_path, caplog):
    """A folder with two series reads the larger by default (and says so), or the one named by UID."""
    import shutil

    from vococore.io.dicom import find_series

    big, small = sample("TotalSegDICOM"), sample("Dcmqi3Slice")
    for src in (big, small):
        for f in src.iterdir():
            shutil.copy(f, tmp_path / f"{src.name}_{f.name}")
    series = find_series(tmp_path)
    assert sorted(len(v) for v in series.values()) == [3, 20]
    with caplog.at_level("WARNING"):
        vol = read_volume(tmp_path)
    assert vol.shape == (512, 512, 20) and "2 DICOM series" in caplog.text
    small_uid = next(uid for uid, files in series.items() if len(files) == 3)
    assert read_volume(tmp_path, series_uid=small_uid).shape == (512, 512, 3)


def test_nifti_without_qform_or_sform_is_refused_as_readers_disagree(sample, tmp_path):
    # Why it is refused: on the real CT with both codes cleared, nibabel, ITK and Slicer's own NIfTI reader do not
    # agree where the voxels are, so any label we wrote for it could come out mirrored in Slicer.
    import nibabel as nib
    import SimpleITK as sitk

    from vococore.utils.errors import VoCoError

    ct = nib.load(str(sample("TotalSegCTSmall")))
    img = nib.Nifti1Image(np.asarray(ct.dataobj), ct.affine)
    img.set_qform(None, code=0)
    img.set_sform(None, code=0)
    path = tmp_path / "no_orientation.nii.gz"
    nib.save(img, str(path))
    by_nibabel = nib.load(str(path)).affine
    itk = sitk.ReadImage(str(path))
    lps = np.eye(4)
    lps[:3, :3] = np.asarray(itk.GetDirection()).reshape(3, 3) * itk.GetSpacing()
    lps[:3, 3] = itk.GetOrigin()
    by_itk = np.diag([-1.0, -1.0, 1.0, 1.0]) @ lps
    assert "".join(nib.aff2axcodes(by_nibabel)) == "LAS" and "".join(nib.aff2axcodes(by_itk)) == "LPS"
    try:
        import slicer
        import vtk
    except ImportError:
        slicer = None
    if slicer is not None:  # Slicer's storage node reads it as ITK does
        scene = slicer.vtkMRMLScene()
        node = scene.AddNewNodeByClass("vtkMRMLScalarVolumeNode")
        storage = scene.AddNewNodeByClass("vtkMRMLVolumeArchetypeStorageNode")
        storage.SetFileName(str(path))
        assert storage.ReadData(node)
        m = vtk.vtkMatrix4x4()
        node.GetIJKToRASMatrix(m)
        np.testing.assert_allclose([[m.GetElement(i, j) for j in range(4)] for i in range(4)], by_itk, atol=1e-6)
    with pytest.raises(VoCoError, match="no_orientation.nii.gz: header has neither qform nor sform.*no orientation"):
        read_volume(path)
