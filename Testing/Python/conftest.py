"""Shared test fixtures: real sample CT through the registry, and a headless MRML scene from slicer-core."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

# Must be set before torch starts OpenMP: spinning waits make small CPU networks many times slower under load.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

# The local mirror beside the checkout (read-only); outside this machine the registry downloads instead.
_DEFAULT_MIRROR = Path(__file__).resolve().parents[3] / "shared" / "data" / "ct"
if "VOCOCORE_SAMPLE_DATA_MIRROR" not in os.environ and _DEFAULT_MIRROR.is_dir():
    os.environ["VOCOCORE_SAMPLE_DATA_MIRROR"] = str(_DEFAULT_MIRROR)


@pytest.fixture(scope="session", autouse=True)
def _few_threads() -> None:
    """Tests run on 2-core CI machines: keep torch from oversubscribing (one thread per pytest-xdist worker)."""
    import torch

    torch.set_num_threads(1 if int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1")) > 1 else 2)


@pytest.fixture(scope="session")
def sample():
    """``sample("TotalSegCT")`` -> verified local Path of a registered real CT sample."""
    from vococore.io.sampledata import fetch

    return fetch


@pytest.fixture
def mrml(tmp_path):
    """A headless MRML scene with the module logics wired as Slicer's application would (slicer-core wheel)."""
    import slicer  # slicer-core is pinned for the suite: a missing wheel is an error, not a skip
    from VoCoSlicerLib.headless import headless_scene, install_as_slicer_globals

    ctx = headless_scene(tmp_path / "mrml-cache")
    install_as_slicer_globals(ctx)
    yield ctx
    del slicer.mrmlScene, slicer.modules
    ctx.scene.Clear(1)
