"""Sample-data registry: mirror first, then cache, then a SHA-256-verified download; a bad file is never kept."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

from vococore.io import sampledata
from vococore.utils.errors import VoCoError


def test_registry_lists_every_shared_file_with_checksums():
    reg = sampledata.registry()
    assert {"TotalSegCT", "TotalSegDICOM", "TotalSegDICOMLabels", "Dcmqi3Slice"} <= set(reg)
    assert len(reg["TotalSegDICOM"].files) == 20 and reg["TotalSegDICOM"].is_folder
    for ds in reg.values():
        for f in ds.files:
            assert f.url.startswith("https://") and len(f.sha256) == 64 and f.size > 0


def test_mirror_is_used_in_place_and_verified(tmp_path, monkeypatch):
    """A matching mirror file is returned where it lies (not copied, not touched) and nothing enters the cache."""
    mirror = Path(os.environ[sampledata.MIRROR_ENV])  # the read-only shared data folder
    monkeypatch.setenv(sampledata.CACHE_ENV, str(tmp_path / "cache"))
    entry = sampledata.registry()["TotalSegCT"].files[0]
    before = (mirror / entry.path).stat()
    path = sampledata.fetch("TotalSegCT", mirror=mirror, download=False)
    assert path == mirror / entry.path
    after = path.stat()
    assert (after.st_mtime_ns, after.st_ino) == (before.st_mtime_ns, before.st_ino)
    assert not (tmp_path / "cache").exists()


@pytest.fixture
def local_registry(tmp_path, monkeypatch, sample):
    """A registry whose one dataset 'downloads' from a file:// URL, with an empty cache and no mirror."""
    served = tmp_path / "served"
    served.mkdir()
    shutil.copy(sample("TotalSegCTSmallLabels"), served / "labels.nii.gz")
    entry = sampledata.SampleFile(path="ts/labels.nii.gz", url=(served / "labels.nii.gz").as_uri(),
                                  sha256=sampledata.sha256_of(served / "labels.nii.gz"),
                                  size=(served / "labels.nii.gz").stat().st_size)
    ds = sampledata.SampleDataset("Labels", "test", "Apache-2.0", (entry,))
    monkeypatch.setattr(sampledata, "registry", lambda: {"Labels": ds})
    monkeypatch.setenv(sampledata.CACHE_ENV, str(tmp_path / "cache"))
    monkeypatch.delenv(sampledata.MIRROR_ENV, raising=False)
    return served, entry


def test_download_into_cache_then_reuse(local_registry, tmp_path):
    served, entry = local_registry
    path = sampledata.fetch("Labels")
    assert path == tmp_path / "cache" / "sampledata" / entry.path
    assert sampledata.sha256_of(path) == entry.sha256
    (served / "labels.nii.gz").unlink()  # no source any more: the verified cache copy is used
    assert sampledata.fetch("Labels") == path


def test_corrupted_download_is_refused_and_not_kept(local_registry, tmp_path):
    served, entry = local_registry
    data = bytearray((served / "labels.nii.gz").read_bytes())
    data[100] ^= 0xFF
    (served / "labels.nii.gz").write_bytes(bytes(data))
    with pytest.raises(VoCoError, match="SHA-256"):
        sampledata.fetch("Labels")
    cache = tmp_path / "cache" / "sampledata" / "ts"
    assert not cache.exists() or list(cache.iterdir()) == []


def test_bad_mirror_copy_is_skipped(local_registry, tmp_path):
    served, entry = local_registry
    mirror = tmp_path / "mirror" / "ts"
    mirror.mkdir(parents=True)
    (mirror / "labels.nii.gz").write_bytes(b"stale")
    path = sampledata.fetch("Labels", mirror=tmp_path / "mirror")
    assert path.parent.parent.parent.name == "cache"  # downloaded, not the stale mirror file


def test_offline_without_copy_says_where_it_looked(local_registry):
    with pytest.raises(VoCoError, match="downloads are off"):
        sampledata.fetch("Labels", download=False)
    with pytest.raises(VoCoError, match="unknown sample dataset"):
        sampledata.fetch("Nope")


def test_cli_lists_and_fetches(sample):
    import subprocess
    import sys

    proc = subprocess.run([sys.executable, "-m", "vococore", "sample-data"], capture_output=True, text=True,
                          timeout=120)
    assert proc.returncode == 0 and "TotalSegDICOM" in proc.stdout
    proc = subprocess.run([sys.executable, "-m", "vococore", "sample-data", "TotalSegCT", "--no-download"],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0 and proc.stdout.strip() == str(sample("TotalSegCT"))
