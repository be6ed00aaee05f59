"""Preprocessing (voco-spec 1.1) and its inverse: results on the preprocessed grid map back exactly."""

from __future__ import annotations

import numpy as np
import pytest

from vococore.io import read_volume
from vococore.preprocessing.preprocessor import PRESETS, PreprocessConfig, Preprocessor
from vococore.io.volume import Volume


@pytest.mark.parametrize("name", ["TotalSegCT", "TotalSegDICOM", "Dcmqi3Slice"])
def test_preprocess_then_invert_restores_grid(sample, name):
    vol = read_volume(sample(name))
    pre_proc = Preprocessor()
    pre = pre_proc(vol)
    assert pre.image.shape[0] == 1 and all(s >= 64 for s in pre.shape)
    np.testing.assert_allclose(np.linalg.norm(pre.affine[:3, :3], axis=0), 1.5, atol=1e-6)
    assert "".join(__import__("nibabel").orientations.aff2axcodes(pre.affine)) == "RAS"
    back = pre_proc.invert(pre, (pre.image[0] > 0.5).to(dtype=__import__("torch").uint8))
    assert back.shape == vol.shape
    np.testing.assert_allclose(np.asarray(back.affine), vol.affine, atol=1e-4)


def test_intensity_window_and_range(sample):
    vol = read_volume(sample("TotalSegCT"))
    pre = Preprocessor()(vol)
    img = pre.image.numpy()
    assert img.min() >= 0.0 and img.max() <= 1.0
    # HU 250 and above saturate at 1, HU -175 and below at 0: bone and air both present in an abdomen CT
    assert (img == 1.0).mean() > 0.001 and (img == 0.0).mean() > 0.05


def test_label_round_trip_is_exact_for_integer_resampling(sample):
    """3 mm -> 1.5 mm -> 3 mm with nearest neighbour puts every label voxel back where it was."""
    ct, lab = read_volume(sample("TotalSegCT")), read_volume(sample("TotalSegCTLabels"))
    proc = Preprocessor()
    pre = proc(ct, lab)
    assert tuple(pre.label.shape[1:]) == pre.shape
    back = proc.invert(pre, pre.label[0].to(dtype=__import__("torch").uint8))
    assert np.array_equal(back.array, lab.array)


def test_world_position_is_preserved(sample):
    """Organs stay where they are in the world: on the LPS series (flipped to RAS, resampled to 1.5 mm, cropped,
    padded), each organ's centroid through the preprocessed grid's affine is its centroid through the original
    series' affine, within a voxel; the image content there is that organ's contrast-CT intensity."""
    vol = read_volume(sample("TotalSegDICOM"))
    stored = read_volume(sample("TotalSegDICOMLabels"))  # LAS: the series' grid with j reversed (test_io_read)
    label = vol.with_array(np.ascontiguousarray(stored.array[:, ::-1, :]))
    pre = Preprocessor()(vol, label)
    lab = pre.label[0].numpy()
    lo, hi = PreprocessConfig().hu_range
    for value, hu in ((5, (70, 110)), (52, (150, 210))):  # liver, aorta
        before = vol.voxel_to_world(np.argwhere(label.array == value).mean(axis=0))
        after = pre.to_world(np.argwhere(lab == value).mean(axis=0))
        assert np.linalg.norm(after - before) < 1.5, (value, before, after)
        mean = float(pre.image[0].numpy()[lab == value].mean()) * (hi - lo) + lo
        assert hu[0] < mean < hu[1], (value, mean)


def test_foreground_crop_and_padding_of_small_volume(sample):
    """The 3-slice series (3 mm of z) is padded to 64 slices; the crop keeps the body, drops the -3024 padding."""
    vol = read_volume(sample("Dcmqi3Slice"))
    pre = Preprocessor()(vol)
    assert pre.shape[2] == 64
    assert pre.shape[0] < vol.shape[0] * vol.spacing[0] / 1.5  # cropped in x


def test_constant_volume_keeps_whole_grid():
    """An all-air volume has no foreground: it is kept whole rather than cropped to nothing."""
    vol = Volume(np.full((40, 30, 20), -1000, dtype=np.int16), np.diag([2.0, 2.0, 2.0, 1.0]))
    pre = Preprocessor()(vol)
    assert pre.shape == (64, 64, 64) and float(pre.image.max()) == 0.0


def test_presets_follow_spec():
    assert PRESETS["abdomen"].spacing == (1.5, 1.5, 1.5) and PRESETS["abdomen"].hu_range == (-175.0, 250.0)
    assert PRESETS["chest"].spacing == (1.25, 1.25, 5.0) and PRESETS["chest"].hu_range == (-1000.0, 500.0)
    assert PRESETS["v1"].spacing is None and PRESETS["v1"].foreground_threshold == 0.3
