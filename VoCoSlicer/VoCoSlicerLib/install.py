"""Installs the third-party packages the module needs into Slicer's Python after one confirmation, on the GUI
thread (pip from a worker thread crashes Slicer on macOS): MONAI and what vococore needs, at the versions CI tests
(``requirements/demo.txt``, which ``requirements/ci.txt`` includes). ``vococore`` itself is installed by the
extension build (CMake lists its files); torch comes from the PyTorch extension's PyTorchUtils (the right CUDA
build); packages Slicer ships are never replaced. Uses ``slicer.packaging`` (a submodule: imported, not looked up)
on Slicer >= 5.12, ``slicer.pydeps`` on 5.11 and ``slicer.util.pip_install`` before."""

from __future__ import annotations

import importlib
import importlib.metadata
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

# vococore's run-time dependencies that Slicer does not ship, pinned to the versions CI tests (requirements/demo.txt)
# (Testing/Python/test_slicer_install.py checks both lists agree with VoCoCore/pyproject.toml).
REQUIREMENTS = ["monai==1.6.1", "einops==0.8.2", "nibabel==5.4.2", "pynrrd==1.1.3", "PyYAML==6.0.4",
                "tqdm==4.70.1", "safetensors==0.8.0", "scipy==1.17.1", "psutil==7.2.2", "matplotlib==3.11.2",
                "highdicom==0.28.2", "slicerio==1.4.0"]
# Slicer ships these (replacing them breaks Slicer); torch belongs to PyTorchUtils.
SLICER_SHIPS = ["numpy", "SimpleITK", "vtk", "requests", "pydicom", "packaging"]
NEVER_INSTALL = ["torch", "torchvision", "torchaudio"]
TORCH_REQUIREMENT = "torch>=2.3"
NEXT_STEP = ("Restart Slicer and open the VoCo module again to retry, or install them from the Python console with "
             "slicer.util.pip_install(...); the Python console shows pip's reason.")


def _canonical(name: str) -> str:
    return name.lower().replace("_", "-").replace(".", "-")


@dataclass
class InstallPlan:
    """What is missing, and the one message the user confirms before anything is installed."""

    missing: list[str] = field(default_factory=list)
    torch_missing: bool = False

    @property
    def needed(self) -> bool:
        """True when anything has to be installed."""
        return bool(self.missing) or self.torch_missing

    def message(self) -> str:
        """The confirmation text: every package that will be installed, and where torch comes from."""
        lines = ["VoCoSlicer needs these Python packages in Slicer:"]
        if self.torch_missing:
            lines.append(f"  - {TORCH_REQUIREMENT} (by the PyTorch Utils module, which picks the CUDA build "
                         "for your GPU)")
        lines += [f"  - {req}" for req in self.missing]
        lines.append("This downloads several hundred MB and can take a few minutes. Install now?")
        return "\n".join(lines)


def is_satisfied(requirement: str) -> bool:
    """Whether an installed distribution satisfies ``requirement`` (metadata only, nothing is imported)."""
    from packaging.requirements import Requirement

    req = Requirement(requirement)
    try:
        version = importlib.metadata.version(req.name)
    except importlib.metadata.PackageNotFoundError:
        return False
    return req.url is not None or req.specifier.contains(version, prereleases=True)


def plan(requirements: Iterable[str] = REQUIREMENTS) -> InstallPlan:
    """Compare ``requirements`` with what is installed; torch and Slicer's own packages are never planned."""
    from packaging.requirements import Requirement

    skipped = {_canonical(n) for n in [*SLICER_SHIPS, *NEVER_INSTALL]}
    missing = [r for r in requirements if _canonical(Requirement(r).name) not in skipped and not is_satisfied(r)]
    return InstallPlan(missing=missing, torch_missing=not is_satisfied(TORCH_REQUIREMENT))


def ensure_installed(confirm: Callable[[str], bool], requirements: Iterable[str] = REQUIREMENTS) -> bool:
    """Install what :func:`plan` finds missing after ``confirm(message)`` says yes; False when the user declines.

    Must run inside Slicer, on its GUI thread. Raises ``RuntimeError`` when the PyTorch extension is missing.
    """
    import slicer

    todo = plan(requirements)
    if not todo.needed:
        return True
    if not confirm(todo.message()):
        return False
    if todo.torch_missing:
        try:
            import PyTorchUtils
        except ImportError:
            raise RuntimeError("PyTorch is not installed and the PyTorch extension is missing: install "
                               "'PyTorch' from the Extensions Manager, restart Slicer, then try again.") from None
        if PyTorchUtils.PyTorchUtilsLogic().installTorch(askConfirmation=False,
                                                         torchVersionRequirement=TORCH_REQUIREMENT[5:]) is None:
            raise RuntimeError("PyTorch could not be installed; see the Python console for the reason.")
    if not todo.missing:
        return True
    skip = [*SLICER_SHIPS, *NEVER_INSTALL]
    packaging_module = slicer_packaging()
    if packaging_module is not None:  # Slicer >= 5.11
        from packaging.requirements import Requirement

        # Keywords as in Slicer 5.12's slicer/packaging.py (and 5.11's slicer/pydeps.py): the user has already
        # confirmed, and in testing mode (the self-test) installing is wanted, which pip_ensure skips by default.
        packaging_module.pip_ensure([Requirement(r) for r in todo.missing], skip_packages=skip,
                                    prompt_install=False, requester="VoCoSlicer", skip_in_testing=False)
    else:  # Slicer 5.10: install without dependencies, then the dependencies that Slicer does not ship
        slicer.util.pip_install(["--no-deps", *todo.missing])
        for dependency in missing_dependencies(todo.missing, skip):
            slicer.util.pip_install([dependency])
    return not plan(requirements).missing


def slicer_packaging() -> Any:
    """Slicer's package manager module with ``pip_ensure`` (``slicer.packaging`` on 5.12+, ``slicer.pydeps`` on
    5.11), imported as the submodule it is; None on older Slicer (then ``slicer.util.pip_install``)."""
    for name in ("slicer.packaging", "slicer.pydeps"):
        try:
            module = importlib.import_module(name)
        except ImportError:
            continue
        if hasattr(module, "pip_ensure"):
            return module
    return None


def missing_dependencies(requirements: Iterable[str], skip: Iterable[str]) -> list[str]:
    """Unsatisfied ``Requires-Dist`` entries of the installed ``requirements``, except ``skip`` (one level)."""
    from packaging.requirements import Requirement

    skipped = {_canonical(n) for n in skip}
    found: list[str] = []
    for requirement in requirements:
        try:
            declared = importlib.metadata.requires(Requirement(requirement).name) or []
        except importlib.metadata.PackageNotFoundError:
            continue
        for text in declared:
            dep = Requirement(text)
            if dep.marker is not None and not dep.marker.evaluate({"extra": ""}):
                continue
            spec = f"{dep.name}{dep.specifier}"
            if _canonical(dep.name) not in skipped and not is_satisfied(spec) and spec not in found:
                found.append(spec)
    return found
