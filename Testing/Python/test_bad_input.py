"""Bad input gets one clear error naming the file and the problem, from the API and from the CLI."""

from __future__ import annotations

import gzip
import shutil
import subprocess
import sys

import nibabel as nib
import numpy as np
import pytest

from vococore.utils.errors import VoCoError
from vococore.io import read_volume


def _nifti(path, data):
    nib.save(nib.Nifti1Image(data, np.eye(4)), str(path))
    return path


@pytest.fixture
def bad_files(tmp_path, sample):
    good = sample("TotalSegCT").read_bytes()
    truncated = tmp_path / "truncated.nii.gz"
    truncated.write_bytes(good[: len(good) // 3])
    empty = tmp_path / "empty_folder"
    empty.mkdir()
    no_dicom = tmp_path / "no_dicom"
    no_dicom.mkdir()
    (no_dicom / "notes.txt").write_text("not an image")
    nan = np.zeros((8, 8, 8), np.float32)
    nan[2, 3, 4] = np.nan
    return {
        "truncated": (truncated, "damaged or truncated"),
        "empty folder": (empty, "folder is empty"),
        "no dicom": (no_dicom, "no DICOM series"),
        "2d": (_nifti(tmp_path / "slice.nii.gz", np.zeros((16, 16), np.int16)), "2D image"),
        "flat 3d": (_nifti(tmp_path / "flat.nii.gz", np.zeros((16, 16, 1), np.int16)), "2D image"),
        "4d": (_nifti(tmp_path / "series.nii.gz", np.zeros((8, 8, 8, 3), np.int16)), "4D image"),
        "nan": (_nifti(tmp_path / "nan.nii.gz", nan), "1 NaN or infinite voxels"),
        "missing": (tmp_path / "does_not_exist.nii.gz", "no such file"),
        "unknown type": (_write(tmp_path / "scan.png", b"\x89PNG"), "unknown file type"),
        "bad nrrd": (_write(tmp_path / "bad.nrrd", b"NRRD0004\ngarbage\n"), "cannot read image"),
    }


def _write(path, data):
    path.write_bytes(data)
    return path


def test_each_bad_input_names_file_and_problem(bad_files):
    for case, (path, problem) in bad_files.items():
        with pytest.raises(VoCoError) as err:
            read_volume(path)
        message = str(err.value)
        assert str(path) in message, case
        assert problem in message, f"{case}: {message}"
        assert "\n" not in message, case


def test_cli_prints_one_line_without_traceback(bad_files):
    path, problem = bad_files["truncated"]
    vococore = shutil.which("vococore", path=str(__import__("pathlib").Path(sys.executable).parent))
    proc = subprocess.run([vococore, "info", str(path)], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2
    assert "Traceback" not in proc.stderr
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and str(path) in lines[0] and problem in lines[0]


def test_uneven_dicom_slices_are_refused(sample, tmp_path):
    """A series with a missing slice would silently stretch the anatomy: refuse it."""
    files = sorted(sample("TotalSegDICOM").iterdir())
    for f in files[:8] + files[9:]:
        shutil.copy(f, tmp_path / f.name)
    with pytest.raises(VoCoError, match="unevenly spaced"):
        read_volume(tmp_path)


def test_gzip_garbage_is_refused(tmp_path):
    path = tmp_path / "garbage.nii.gz"
    with gzip.open(path, "wb") as fh:
        fh.write(b"\x00" * 100)
    with pytest.raises(VoCoError, match="garbage.nii.gz"):
        read_volume(path)
