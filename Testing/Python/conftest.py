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


# The files whose tests take longest (seconds of one pytest-xdist worker on the 2-core VM, 2026-12-01), run first
# so that the two workers end together: in xdist's default order (files with most tests first) one worker sat idle
# for the last 106 of 530 s. test_infer trains the shared segmentation model; the second worker starts on files
# that do not wait for it. The other files keep their collection order after these.
LONGEST_FIRST = ("test_infer.py", "test_studio_browser.py", "test_pretrain_run.py", "test_finetune.py",
                 "test_demo.py", "test_pretrain_torchrun.py", "test_pretrain_continue.py", "test_corpus_bad_input.py",
                 "test_slicer_training.py", "test_slicer_presenter.py", "test_dicom_seg.py", "test_pretrain_resume.py")


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Longest files first (:data:`LONGEST_FIRST`); a stable sort keeps each file's tests together and in order."""
    rank = {name: i for i, name in enumerate(LONGEST_FIRST)}
    items.sort(key=lambda item: rank.get(item.path.name, len(rank)))


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
