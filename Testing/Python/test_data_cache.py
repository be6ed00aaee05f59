"""Datalists, the preprocessed cache and the pretext dataset on real CT (bad files, limits, sharding)."""

from __future__ import annotations

import json
import logging
import os
import shutil

import numpy as np
import pytest

from vococore.pretraining.data.cache import VolumeCache
from vococore.pretraining.data.datalist import load_datalist
from vococore.pretraining.data.dataset import PretextDataset, StepShardSampler, warm_cache
from vococore.utils.errors import VoCoError
from vococore.preprocessing.preprocessor import PreprocessConfig

PRE = PreprocessConfig(spacing=(3.0, 3.0, 3.0), min_size=(32, 32, 32))


def test_datalist_json_folder_glob(tmp_path, sample):
    ct = sample("TotalSegCTSmall")
    (tmp_path / "imgs").mkdir()
    shutil.copy(ct, tmp_path / "imgs" / "a.nii.gz")
    shutil.copytree(sample("TotalSegDICOM"), tmp_path / "imgs" / "series")
    (tmp_path / "imgs" / "notes.txt").write_text("not a CT")
    spec = {"training": [{"image": "imgs/a.nii.gz"}, "imgs/series"], "validation": [str(ct)]}
    (tmp_path / "list.json").write_text(json.dumps(spec))
    assert load_datalist(tmp_path / "list.json") == [tmp_path / "imgs/a.nii.gz", tmp_path / "imgs/series"]
    assert load_datalist(tmp_path / "list.json", "validation") == [ct]
    assert load_datalist(tmp_path / "imgs") == [tmp_path / "imgs/a.nii.gz", tmp_path / "imgs/series"]
    assert load_datalist(str(tmp_path / "imgs" / "*.nii.gz")) == [tmp_path / "imgs/a.nii.gz"]
    (tmp_path / "bad.json").write_text(json.dumps({"training": ["missing.nii.gz"]}))
    with pytest.raises(VoCoError, match="missing.nii.gz.*does not exist"):
        load_datalist(tmp_path / "bad.json")
    with pytest.raises(VoCoError, match="no 'test' list"):
        load_datalist(tmp_path / "list.json", "test")


def test_disk_cache_reuses_and_invalidates(tmp_path, sample):
    ct = tmp_path / "ct.nii.gz"
    shutil.copy(sample("TotalSegCTSmall"), ct)
    cache = VolumeCache(PRE, tmp_path / "cache", dtype="float16")
    first = cache.get(ct)
    assert first.array.dtype == np.float16 and first.array.ndim == 3 and min(first.array.shape) >= 32
    assert 0.0 <= float(first.array.min()) and float(first.array.max()) <= 1.0
    again = VolumeCache(PRE, tmp_path / "cache").get(ct)  # a new process-like instance reads the .npy
    assert isinstance(again.array, np.memmap) and np.array_equal(np.asarray(again.array), first.array)
    np.testing.assert_allclose(again.affine, first.affine)
    (stored,) = (tmp_path / "cache").glob("*.npy")
    assert stored.stem == cache.key(ct)
    os.utime(ct, ns=(1, 1))  # a changed file (mtime) or a changed recipe gets a new key
    assert cache.key(ct) != stored.stem
    assert VolumeCache(PreprocessConfig(), tmp_path / "cache").key(ct) != cache.key(ct)
    u8 = VolumeCache(PRE, None, dtype="uint8").get(ct)
    assert u8.array.dtype == np.uint8 and u8.array.nbytes * 2 == first.array.nbytes
    assert np.abs(u8.as_float() - first.as_float()).max() <= 1 / 255 + 1e-3


def test_cache_limit_stops_caching_and_says_so(tmp_path, sample, caplog):
    a, b = tmp_path / "a.nii.gz", tmp_path / "b.nii.gz"
    shutil.copy(sample("TotalSegCTSmall"), a)
    shutil.copy(sample("TotalSegCTSmall"), b)
    one = VolumeCache(PRE, None).get(a).array.nbytes
    cache = VolumeCache(PRE, tmp_path / "cache", limit_gb=1.5 * one / 2**30)
    cache.get(a)
    with caplog.at_level(logging.WARNING):
        cache.get(b)
    assert cache.skipped_count == 1 and "cache limit" in caplog.text and "b.nii.gz" in caplog.text
    assert len(list((tmp_path / "cache").glob("*.npy"))) == 1
    assert cache.get(b).array.shape == cache.get(a).array.shape  # still usable, re-read each time


def test_corrupt_file_named_or_skipped(tmp_path, sample):
    good = sample("TotalSegCTSmall")
    bad = tmp_path / "truncated.nii.gz"
    data = good.read_bytes()
    bad.write_bytes(data[: len(data) // 3])
    cache = VolumeCache(PRE, tmp_path / "cache")
    with pytest.raises(VoCoError, match="truncated.nii.gz.*skip_bad_files"):
        warm_cache(cache, [good, bad])
    paths, skipped = warm_cache(VolumeCache(PRE, tmp_path / "cache"), [good, bad], skip_bad_files=True)
    assert paths == [good] and [p for p, _ in skipped] == [bad] and "truncated" in skipped[0][1]


def test_dataset_is_reproducible_and_sharded(tmp_path, sample):
    paths = [sample("TotalSegCTSmall"), sample("TotalSegCT")]
    cache = VolumeCache(PRE, None)

    def crops(image, rng):
        x = int(rng.integers(0, image.shape[0] - 8))
        return {"crop": image[x:x + 8, :8, :8].copy(), "x": x}

    ds = PretextDataset(paths, cache, crops, seed=3)
    again = PretextDataset(paths, cache, crops, seed=3)
    for n in (0, 1, 5):
        assert ds[n]["x"] == again[n]["x"] and np.array_equal(ds[n]["crop"], again[n]["crop"])
    assert sorted(ds.volume_index(n) for n in range(2)) == [0, 1]  # each epoch visits every volume once
    r0 = list(StepShardSampler(2, 3, 5, rank=0, world_size=2))
    r1 = list(StepShardSampler(2, 3, 5, rank=1, world_size=2))
    assert r0 == [12, 13, 16, 17] and r1 == [14, 15, 18, 19]
    assert list(StepShardSampler(2, 0, 5)) [6:] == list(StepShardSampler(2, 3, 5))  # resume = same indices


def test_window_read_equals_region_extract():
    """Reading only the region window from the cache gives exactly the pretext region (zero padding included)."""
    import torch

    from vococore.pretraining.data.cache import decode, decode_window
    from vococore.pretraining.pretext import get_recipe, place_region

    recipe, rng = get_recipe("small"), np.random.default_rng(0)
    for shape in [(10, 12, 8), (200, 150, 40), (96, 96, 32), (120, 50, 100)]:
        stored = rng.random(shape).astype(np.float16)
        for seed in range(4):
            placement = place_region(stored.shape, recipe, np.random.default_rng(seed))
            window = decode_window(stored, np.rint(placement.offset).astype(int), placement.region_size)
            expected = placement.extract(torch.from_numpy(decode(stored))[None])[0].numpy()
            assert np.array_equal(window, expected), (shape, seed)


def test_dry_run_says_what_happens_beyond_the_cache_limit():
    """The issue's case: 20,043 volumes estimated at 49 GB against a 1 GB limit."""
    from vococore.pretraining.run import PretrainConfig, _cache_note

    note = _cache_note(PretrainConfig(cache_dir="cache", cache_limit_gb=1.0), 49.0, 20043)
    assert "only about 409 of 20043 volumes fit" in note and "19634 are read and preprocessed again" in note
    assert "cache_limit_gb to about 54" in note and "uint8" in note
    assert "all 3 volume(s) fit" in _cache_note(PretrainConfig(cache_limit_gb=0.0), 49.0, 3)
