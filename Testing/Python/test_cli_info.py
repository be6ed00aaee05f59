"""``vococore info``: geometry, HU statistics and crop-region fit, as text and JSON."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest

from header_variants import header_variants
from vococore.preprocessing.describe import describe
from vococore.io import read_volume


def test_info_json_on_dicom_series(sample):
    path = sample("TotalSegDICOM")
    proc = subprocess.run([sys.executable, "-m", "vococore", "info", "--json", str(path)], capture_output=True,
                          text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    info = json.loads(proc.stdout)
    assert info["shape"] == [512, 512, 20] and info["orientation"] == "LPS"
    np.testing.assert_allclose(info["spacing"], [0.976562, 0.976562, 2.0], atol=1e-5)
    vol = read_volume(path)
    np.testing.assert_allclose(info["world_bounds"], vol.world_bounds(), atol=1e-3)
    assert info["hu_min"] == -1024 and info["hu_max"] == 1839
    # 20 slices x 2 mm = 38 mm of z: at 1.5 mm that is 26 slices, short of the 64 the v2 region needs
    assert info["preprocessed_shape"][2] == 26 and info["region_padding"] == [0, 0, 38]
    assert info["covers_region"] is False


def test_info_text_for_large_volume(sample):
    info = describe(read_volume(sample("TotalSegCT")))
    assert info.covers_region and info.preprocessed_shape[2] >= 64
    assert info.hu_percentiles["p1"] <= info.hu_percentiles["p50"] <= info.hu_percentiles["p99"]
    proc = subprocess.run([sys.executable, "-m", "vococore", "info", str(sample("TotalSegCT"))],
                          capture_output=True, text=True, timeout=120)
    assert "covers the v2 crop region" in proc.stdout and "RAS" in proc.stdout


def _check_against_monai(volume, preset):
    """The NumPy grid that ``info`` reports equals the grid the MONAI preprocessing actually produces."""
    from dataclasses import replace

    from vococore.preprocessing.output_shape import preprocessed_grid
    from vococore.preprocessing.preprocessor import PRESETS, Preprocessor

    config = PRESETS[preset]
    unpadded = Preprocessor(replace(config, min_size=(1, 1, 1)))(volume)
    grid = preprocessed_grid(volume, config)
    assert grid.shape == unpadded.shape, (volume.source, preset)
    np.testing.assert_allclose(grid.spacing, np.linalg.norm(unpadded.affine[:3, :3], axis=0), atol=1e-6)


@pytest.mark.parametrize("name", ["TotalSegCTSmall", "TotalSegDICOM", "Dcmqi3Slice"])
def test_fast_grid_matches_monai_preprocessing(sample, name):
    # an RAS NIfTI at 3 mm, an LPS DICOM series at 0.98 x 0.98 x 2 mm, a 3-slice LPS series at 0.81 x 0.81 x 1 mm,
    # through the three recipes (1.5 mm isotropic; 1.25 x 1.25 x 5 mm; native spacing with a 0.3 threshold)
    volume = read_volume(sample(name))
    for preset in ("abdomen", "chest", "v1"):
        _check_against_monai(volume, preset)


def test_fast_grid_rounds_a_half_voxel_extent_as_monai(sample):
    # the demo model's 6 mm recipe: the example CT's 112 slices of 3 mm span 55.5 output voxels, + 1 = 56.5, which
    # MONAI's Spacing makes 57 through its floating-point arithmetic (a plain round-half-to-even says 56)
    from vococore.preprocessing.output_shape import preprocessed_grid
    from vococore.preprocessing.preprocessor import PreprocessConfig, Preprocessor

    config = PreprocessConfig(spacing=(6.0, 6.0, 6.0), foreground_threshold=None, min_size=(1, 1, 1))
    volume = read_volume(sample("TotalSegCT"))
    assert preprocessed_grid(volume, config).shape == Preprocessor(config)(volume).shape == (62, 51, 57)


def test_fast_grid_matches_monai_on_reoriented_real_ct(sample):
    # the same real voxels under headers that make every step work: oblique directions, axes stored in another
    # order and flipped, an anisotropic spacing, a spacing within MONAI's 1e-3 mm of the target, an all-air volume
    v = read_volume(sample("TotalSegCTSmall"))
    variants = header_variants(v)
    for volume in variants:
        _check_against_monai(volume, "abdomen")


def test_info_imports_neither_torch_nor_monai(sample):
    code = ("import sys\nfrom vococore.cli import main\nrc = main(['info', '--json', %r])\n"
            "print('HEAVY', sorted(m for m in ('torch', 'monai') if m in sys.modules), rc)" % str(sample("TotalSegCTSmall")))
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    out = proc.stdout.strip().splitlines()
    assert out[-1] == "HEAVY [] 0", (proc.stdout, proc.stderr)
    info = json.loads(out[0])
    assert info["preprocessed_shape"] == [241, 191, 59] and info["preprocessed_spacing"] == [1.5, 1.5, 1.5]
