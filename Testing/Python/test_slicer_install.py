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


def test_requirements_are_the_ci_pins_of_what_vococore_needs_and_slicer_lacks():
    """What the module installs is exactly vococore's declared dependencies, minus torch and Slicer's own packages,
    at the versions CI tests (the run-time pins, requirements/demo.txt, which ci.txt includes); vococore itself
    is not fetched (the extension build installs it)."""
    import re
    import tomllib
    from pathlib import Path

    from packaging.requirements import Requirement

    root = Path(__file__).resolve().parents[2]
    pins = dict(re.findall(r"^([A-Za-z0-9_.-]+)==(\S+)", (root / "requirements" / "demo.txt").read_text(), re.M))
    pins = {install._canonical(name): version for name, version in pins.items()}
    declared = tomllib.loads((root / "VoCoCore" / "pyproject.toml").read_text())["project"]["dependencies"]
    skipped = {install._canonical(n) for n in [*install.SLICER_SHIPS, *install.NEVER_INSTALL]}
    needed = {install._canonical(Requirement(d).name) for d in declared} - skipped
    planned = {install._canonical(Requirement(r).name): Requirement(r) for r in install.REQUIREMENTS}
    assert set(planned) == needed
    for name, req in planned.items():
        assert str(req.specifier) == f"=={pins[name]}", name
    assert not any("vococore" in r or "git+" in r for r in install.REQUIREMENTS)


def test_package_manager_is_found_by_importing_the_submodule():
    """Outside Slicer neither slicer.packaging nor slicer.pydeps has pip_ensure: the 5.10 path is taken."""
    assert install.slicer_packaging() is None
