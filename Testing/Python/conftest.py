"""Shared test fixtures: real sample CT through the registry, and a headless MRML scene from slicer-core."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

# The local mirror beside the checkout (read-only); outside this machine the registry downloads instead.
_DEFAULT_MIRROR = Path(__file__).resolve().parents[3] / "shared" / "data" / "ct"
if "VOCOCORE_SAMPLE_DATA_MIRROR" not in os.environ and _DEFAULT_MIRROR.is_dir():
    os.environ["VOCOCORE_SAMPLE_DATA_MIRROR"] = str(_DEFAULT_MIRROR)


@pytest.fixture(scope="session", autouse=True)
def _few_threads() -> None:
    """Tests run on 2-core CI machines: keep torch from oversubscribing."""
    import torch

    torch.set_num_threads(2)


@pytest.fixture(scope="session")
def sample():
    """``sample("TotalSegCT")`` -> verified local Path of a registered real CT sample."""
    from vococore.sampledata import fetch

    return fetch


@pytest.fixture
def mrml(tmp_path):
    """A headless MRML scene with the module logics wired as Slicer's application would (slicer-core wheel)."""
    import types

    slicer = pytest.importorskip("slicer")
    scene = slicer.vtkMRMLScene()
    app = slicer.vtkSlicerApplicationLogic()
    app.SetMRMLScene(scene)
    colors = slicer.vtkSlicerColorLogic()
    colors.SetMRMLApplicationLogic(app)
    colors.SetMRMLScene(scene)
    app.SetModuleLogic("Colors", colors)
    markups = slicer.vtkSlicerMarkupsLogic()
    markups.SetMRMLApplicationLogic(app)
    markups.SetMRMLScene(scene)
    app.SetModuleLogic("Markups", markups)
    volumes = slicer.vtkSlicerVolumesLogic()
    volumes.SetMRMLApplicationLogic(app)
    volumes.SetMRMLScene(scene)
    segs = slicer.vtkSlicerSegmentationsModuleLogic()
    segs.SetMRMLApplicationLogic(app)
    segs.SetMRMLScene(scene)
    cache = slicer.vtkCacheManager()
    cache.SetRemoteCacheDirectory(str(tmp_path / "mrml-cache"))
    dio = slicer.vtkDataIOManager()
    dio.SetCacheManager(cache)
    scene.SetCacheManager(cache)
    scene.SetDataIOManager(dio)
    slicer.mrmlScene = scene
    slicer.modules = types.SimpleNamespace(
        volumes=types.SimpleNamespace(logic=lambda: volumes),
        segmentations=types.SimpleNamespace(logic=lambda: segs),
        markups=types.SimpleNamespace(logic=lambda: markups))
    yield types.SimpleNamespace(scene=scene, app=app, volumes=volumes, segs=segs, markups=markups)
    del slicer.mrmlScene, slicer.modules
    scene.Clear(1)
