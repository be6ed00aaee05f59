"""The MONAI-free inference preprocessing gives the MONAI pipeline's image and grid on real CT, and the windows and
blending weights of our sliding window are MONAI's."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest
import torch

from header_variants import header_variants
from vococore.io import read_volume
from vococore.io.volume import Volume
from vococore.preprocessing.lean import preprocess_for_inference
from vococore.preprocessing.preprocessor import PRESETS, PreprocessConfig, Preprocessor

SMALL_MODEL = PreprocessConfig(spacing=(6.0, 6.0, 6.0), min_size=(32, 32, 32))  # the finetune_small recipe


def _check(volume: Volume, config: PreprocessConfig) -> None:
    ours = preprocess_for_inference(volume, config)
    pre = Preprocessor(config)(volume)
    monai = pre.image.as_tensor()
    assert tuple(ours.image.shape) == tuple(monai.shape), (volume.source, config)
    # MONAI interpolates from normalised float32 coordinates, we from voxel indices: rounding apart
    assert float((ours.image - monai).abs().max()) < 1e-5
    np.testing.assert_allclose(ours.affine, pre.affine, atol=1e-6)
    record = next(op["extra_info"]["padded"] for op in pre.image.applied_operations if op["class"] == "SpatialPad")
    assert [list(p) for p in ours.pads] == [[int(v) for v in pair] for pair in record[1:]]


@pytest.mark.parametrize("name", ["TotalSegCT", "TotalSegDICOM"])
def test_lean_preprocessing_equals_monai_on_real_ct(sample, name):
    # an RAS NIfTI at 3 mm (its 112 slices are 56.5 voxels long at 6 mm, which MONAI rounds up to 57) and an LPS
    # DICOM series of 20 slices at 0.98 x 0.98 x 2 mm (padded in z), through the demo model's and the presets'
    # recipes
    volume = read_volume(sample(name))
    for config in (SMALL_MODEL, PRESETS["abdomen"], PRESETS["chest"], PRESETS["v1"]):
        _check(volume, config)


def test_lean_preprocessing_equals_monai_on_reoriented_real_ct(sample):
    # real voxels under headers that exercise each step: oblique directions, axes stored in another order and
    # flipped, anisotropic spacing, a spacing within 1e-3 mm of the target, float voxels, an all-air volume
    v = read_volume(sample("TotalSegCTSmall"))
    variants = [*header_variants(v), Volume(v.array.astype(np.float32) + 0.25, v.affine)]
    for volume in variants:
        _check(volume, SMALL_MODEL)
        _check(volume, replace(PRESETS["abdomen"], spacing=(2.0, 1.3, 4.0)))


def test_lean_preprocessing_leaves_the_input_voxels_alone(sample):
    v = read_volume(sample("TotalSegCTSmall"))
    volume = Volume(v.array.astype(np.float32), v.affine)
    before = volume.array.copy()
    preprocess_for_inference(volume, replace(PRESETS["v1"], orientation="RAS"))  # native spacing: no resampling
    np.testing.assert_array_equal(volume.array, before)


@pytest.mark.parametrize("size,roi,overlap", [((62, 49, 57), (32, 32, 32), 0.5), ((96, 70, 64), (64, 64, 64), 0.25),
                                              ((40, 33, 32), (32, 32, 32), 0.75)])
def test_windows_and_blend_weights_equal_monai(size, roi, overlap):
    from monai.data.utils import compute_importance_map, dense_patch_slices

    from vococore.segmentation.sliding_window import blend_weight, scan_intervals, window_slices

    steps = scan_intervals(size, roi, overlap)
    assert window_slices(size, roi, steps) == dense_patch_slices(size, roi, steps)
    for blend in ("gaussian", "constant"):
        theirs = compute_importance_map(roi, mode=blend, sigma_scale=0.125, device="cpu")
        assert torch.equal(blend_weight(roi, blend, torch.device("cpu")), theirs)
