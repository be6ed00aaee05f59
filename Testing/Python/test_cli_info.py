"""``vococore info``: geometry, HU statistics and crop-region fit, as text and JSON."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np

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
