"""VoCoSlicerLib.registry: the shipped model list, checksum-verified downloads (file:// URLs, real urllib) and
offline import into the per-user cache."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from vococore.utils.errors import VoCoError
from VoCoSlicerLib.registry import MODELS_JSON, ModelRegistry, default_cache_dir, sha256_of


def test_official_models_are_the_vocomni_files(tmp_path):
    registry = ModelRegistry(cache_dir=tmp_path)
    ids = [e.id for e in registry.entries()]
    assert ids == ["VoComni_B", "VoComni_L", "VoComni_H"]
    for entry in registry.entries():
        assert entry.url == f"https://huggingface.co/Luffy503/VoCo/resolve/main/{entry.id}.pt"
        assert entry.sha256 is None and entry.sha256_note == "not published; computed on first download"
        assert entry.license == "Apache-2.0" and entry.size > 1e8
        assert entry.labels[6] == "liver" and len(entry.labels) == 20
        assert entry.extra["architecture"]["out_channels"] == 21
    assert registry.local_path(registry.get("VoComni_B")) is None
    with pytest.raises(VoCoError, match="unknown model 'VoCo_X'"):
        registry.get("VoCo_X")


def test_default_cache_dir_follows_vococore(monkeypatch, tmp_path):
    monkeypatch.setenv("VOCOCORE_CACHE", str(tmp_path))
    assert default_cache_dir() == tmp_path / "models"
    monkeypatch.delenv("VOCOCORE_CACHE")
    assert default_cache_dir() == Path.home() / ".cache" / "vococore" / "models"


def _models_json(tmp_path: Path, url: str, sha256: str | None) -> Path:
    data = json.loads(MODELS_JSON.read_text())
    data["models"] = [dict(data["models"][0], id="Tiny", filename="tiny.pt", url=url, sha256=sha256, size=None)]
    path = tmp_path / "models.json"
    path.write_text(json.dumps(data))
    return path


def test_download_without_published_checksum_records_it_and_detects_tampering(tmp_path):
    served = tmp_path / "server" / "tiny.pt"
    served.parent.mkdir()
    served.write_bytes(b"weights" * 300_000)
    registry = ModelRegistry(_models_json(tmp_path, served.as_uri(), None), cache_dir=tmp_path / "cache")
    entry = registry.get("Tiny")
    seen = []
    path = registry.download(entry, on_bytes=lambda done, total: seen.append((done, total)))
    assert path.read_bytes() == served.read_bytes()
    assert seen[-1] == (served.stat().st_size, served.stat().st_size)
    assert registry.expected_sha256(entry) == sha256_of(served)
    assert registry.local_path(entry) == path
    path.write_bytes(b"corrupted")
    with pytest.raises(VoCoError, match="different SHA-256"):
        registry.local_path(entry)


def test_download_with_wrong_checksum_keeps_nothing(tmp_path):
    served = tmp_path / "tiny.pt"
    served.write_bytes(b"not the published weights")
    registry = ModelRegistry(_models_json(tmp_path, served.as_uri(), "0" * 64), cache_dir=tmp_path / "cache")
    with pytest.raises(VoCoError, match="expected 0000"):
        registry.download(registry.get("Tiny"))
    assert list((tmp_path / "cache").iterdir()) == []
    registry = ModelRegistry(_models_json(tmp_path, (tmp_path / "absent.pt").as_uri(), None), tmp_path / "cache")
    with pytest.raises(VoCoError, match="Import model file"):
        registry.download(registry.get("Tiny"))


def test_import_model_copies_verifies_and_lists(tmp_path):
    source = tmp_path / "my_model.pt"
    source.write_bytes(b"\x00\x01" * 1000)
    registry = ModelRegistry(cache_dir=tmp_path / "cache")
    with pytest.raises(VoCoError, match="not imported"):
        registry.import_model(source, "Mine", expected_sha256="f" * 64)
    entry = registry.import_model(source, "Mine", title="My liver model", expected_sha256=sha256_of(source),
                                  labels={1: "liver"})
    again = ModelRegistry(cache_dir=tmp_path / "cache")
    assert [e.id for e in again.entries()][-1] == "Mine"
    assert again.get("Mine") == entry and again.get("Mine").labels == {1: "liver"}
    assert again.local_path(entry).read_bytes() == source.read_bytes()
    with pytest.raises(VoCoError, match="already registered"):
        again.import_model(source, "Mine")
    with pytest.raises(VoCoError, match="model file not found"):
        again.import_model(tmp_path / "nope.pt", "Other")


def _served_official_checkpoint(tmp_path: Path):
    """A small official-layout SwinUNETR checkpoint ('state_dict', 'module.' keys) served from a file URL, and a
    registry listing it as "Tiny" (liver, spleen) with no published checksum."""
    import torch
    from monai.networks.nets import SwinUNETR

    torch.manual_seed(0)
    net = SwinUNETR(in_channels=1, out_channels=3, feature_size=12, use_v2=True)
    served = tmp_path / "server" / "Tiny.pt"
    served.parent.mkdir()
    torch.save({"state_dict": {f"module.{k}": v for k, v in net.state_dict().items()}}, served)
    data = json.loads(MODELS_JSON.read_text())
    entry = dict(data["models"][0], id="Tiny", filename="Tiny.pt", url=served.as_uri(), sha256=None, size=None,
                 labels={"1": "liver", "2": "spleen"})
    entry["architecture"] = dict(entry["architecture"], feature_size=12, out_channels=3)
    data["models"] = [entry]
    (tmp_path / "models.json").write_text(json.dumps(data))
    return net, served, ModelRegistry(tmp_path / "models.json", cache_dir=tmp_path / "cache")


def test_official_checkpoint_becomes_a_model_package(tmp_path):
    """An official-layout checkpoint ('state_dict' wrapper, 'module.' prefix) is packaged once with the list's
    architecture, preprocessing and labels; the package's weights equal the checkpoint's."""
    import torch

    from vococore.segmentation.package import load_package, read_package_info
    from VoCoSlicerLib.convert import package_path
    from VoCoSlicerLib.logic import VoCoLogic

    net, served, registry = _served_official_checkpoint(tmp_path)
    logic = VoCoLogic(scene=None, registry=registry, work_dir=tmp_path)
    assert logic.model_path("Tiny") is None  # not downloaded yet
    registry.download(registry.get("Tiny"))
    path = logic.model_path("Tiny")
    assert path == package_path(registry, registry.get("Tiny")) and path.is_file()
    info = read_package_info(path)
    assert [(li.value, li.name) for li in info.labels] == [(1, "liver"), (2, "spleen")]
    assert info.preprocess.spacing == (1.5, 1.5, 1.5) and info.roi_size == (96, 96, 96) and info.overlap == 0.75
    assert info.backbone.legacy_merging is True and info.extra["load_report"]["fraction"] == 1.0
    assert info.extra["source_sha256"] == sha256_of(served)
    model, _ = load_package(path)
    for key, value in net.state_dict().items():
        torch.testing.assert_close(model.state_dict()[key], value)
    stamp = path.stat().st_mtime_ns
    assert logic.model_path("Tiny") == path and path.stat().st_mtime_ns == stamp  # converted once


def test_checksum_of_a_cached_model_is_computed_once_and_redone_when_the_file_changes(tmp_path):
    """Apply must not hash a multi-GB model every time: the verified digest is remembered with the file's size and
    modification time, and a file that changed is hashed (and refused) again."""
    import os

    served = tmp_path / "server" / "tiny.pt"
    served.parent.mkdir()
    served.write_bytes(b"weights" * 300_000)
    registry = ModelRegistry(_models_json(tmp_path, served.as_uri(), None), cache_dir=tmp_path / "cache")
    entry = registry.get("Tiny")
    path = registry.download(entry)
    stat = path.stat()
    # same size and time, other bytes: only a remembered digest can pass this without reading the file
    path.write_bytes(b"W" + path.read_bytes()[1:])
    os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns))
    assert registry.local_path(entry) == path
    assert ModelRegistry(registry.models_json, cache_dir=tmp_path / "cache").local_path(entry) == path  # on disk
    os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns + 1_000_000_000))  # the file changed: hashed again
    with pytest.raises(VoCoError, match="different SHA-256"):
        registry.local_path(entry)


def test_official_checkpoint_is_packaged_by_the_background_run_not_by_slicer(tmp_path, mrml, sample):
    """Apply on a downloaded official checkpoint returns at once: the conversion (full weights in memory) runs in
    the background job, reports a 'convert' stage, and then inference starts on the package it wrote."""
    import time

    from vococore.io import read_volume
    from VoCoSlicerLib import nodes
    from VoCoSlicerLib.convert import package_path
    from VoCoSlicerLib.logic import VoCoLogic
    from VoCoSlicerLib.parameters import SegmentParameters
    from VoCoSlicerLib.runner import RunState

    _, _, registry = _served_official_checkpoint(tmp_path)
    registry.download(registry.get("Tiny"))
    events = []
    logic = VoCoLogic(mrml.scene, registry=registry, work_dir=tmp_path / "work", on_progress=events.append)
    ct = nodes.node_from_volume(read_volume(sample("TotalSegCTSmall")), mrml.scene, "CT")
    process = logic.start_segmentation(ct, SegmentParameters(model="Tiny", device="cpu"))
    package = package_path(registry, registry.get("Tiny"))
    assert not package.exists()  # nothing converted in this process
    deadline = time.monotonic() + 240
    try:
        while not any(e.stage == "infer" for e in events):
            assert process.poll(), process.error_message()
            assert time.monotonic() < deadline
            time.sleep(0.05)
    finally:
        process.cancel()
    assert [e.event for e in events if e.stage == "convert"][:2] == ["start", "progress"]
    assert package.is_file() and logic.model_files("Tiny") == (package, None)
    assert process.wait_for_completion(timeout_s=10) is RunState.CANCELLED
    assert list((tmp_path / "work").iterdir()) == []
