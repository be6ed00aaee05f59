"""VoCoSlicerLib.install: what would be installed, judged from the real package metadata of this environment;
torch and Slicer's own packages are never planned. The pip calls themselves need Slicer (self-test)."""

from __future__ import annotations

import importlib.metadata

from VoCoSlicerLib import install


def test_is_satisfied_reads_metadata():
    monai = importlib.metadata.version("monai")
    assert install.is_satisfied(f"monai=={monai}")
    assert not install.is_satisfied("monai>=999")
    assert not install.is_satisfied("surely-not-installed-package-xyz")


def test_plan_here_needs_nothing_but_reports_what_is_missing():
    assert not install.plan(["monai>=1.4", "psutil"]).needed
    todo = install.plan(["monai>=999", "torch>=999", "numpy>=999", "SimpleITK>=999", "pynrrd"])
    # torch and the packages Slicer ships are never installed by this module, whatever their version
    assert todo.missing == ["monai>=999"]
    assert todo.torch_missing is False  # torch>=2.3 (the module's own need) is satisfied by torch 2.13
    text = todo.message()
    assert "monai>=999" in text and "torch" not in text


def test_message_names_pytorch_utils_when_torch_is_missing():
    todo = install.InstallPlan(missing=["monai>=1.4"], torch_missing=True)
    assert todo.needed
    assert "PyTorch Utils" in todo.message() and "monai>=1.4" in todo.message()


def test_missing_dependencies_skips_slicer_packages():
    # monai declares numpy and torch; both are installed here, and both are skipped anyway
    assert install.missing_dependencies(["monai"], install.SLICER_SHIPS + install.NEVER_INSTALL) == []
    deps = importlib.metadata.requires("monai")
    assert any(d.startswith("torch") for d in deps)
