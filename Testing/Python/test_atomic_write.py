"""Writing onto a disk that fills up mid-write: one VoCoError naming the target and the cause, no partial or
temporary file left, and the cleanup never replaces the real error (a real small tmpfs, as root)."""

from __future__ import annotations

import os
import subprocess

import numpy as np
import pytest

from vococore.io import read_volume, write_labelmap
from vococore.utils.errors import VoCoError


@pytest.fixture
def small_disk(tmp_path):
    mount = tmp_path / "disk"
    mount.mkdir()
    try:
        subprocess.run(["mount", "-t", "tmpfs", "-o", "size=200k", "tmpfs", str(mount)], check=True,
                       capture_output=True)
    except (OSError, subprocess.CalledProcessError):
        pytest.skip("mounting a small tmpfs needs root and mount on this machine")
    yield mount
    subprocess.run(["umount", "-l", str(mount)], capture_output=True)  # lazy: a test may hold a file open


@pytest.mark.parametrize("suffix", [".nii", ".nrrd"])
def test_disk_full_mid_write_is_one_error_and_leaves_nothing(small_disk, sample, suffix):
    ct = read_volume(sample("TotalSegCTSmall"))  # 122 x 101 x 30: 370 kB as uint8, more than the 200 kB disk
    rng = np.random.default_rng(0)
    labels = rng.integers(0, 250, ct.shape).astype(np.uint8)  # incompressible, so .nrrd (gzip) overflows too
    target = small_disk / f"labels{suffix}"
    with pytest.raises(VoCoError) as err:
        write_labelmap(labels, ct, target)
    message = str(err.value)
    assert str(target) in message and ("No space left" in message or "no space left" in message), message
    assert "\n" not in message
    assert os.listdir(small_disk) == []
