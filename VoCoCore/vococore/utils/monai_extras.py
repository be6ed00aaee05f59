"""MONAI's import in vococore's own processes without the plotting and signal-processing packages it loads for
features vococore never calls.

Why: ``import monai`` imports every MONAI submodule, and through them matplotlib's pyplot
(``monai.utils.jupyter_utils``, ``monai.visualize``) and ``scipy.signal`` with ``scipy.stats``
(``monai.data.ultrasound_confidence_map``). On the project's 2-core VM that was 1.0 of MONAI's 1.97 s import
(0.93 s with both held back), paid by every training, evaluation and position process, torchrun's workers and the
suite's subprocesses. MONAI imports both as optional (``try``/``optional_import``), so while they read as absent it
records them as missing, and afterwards they import as usual (``vococore position`` and the demo's report draw
with matplotlib). Only processes vococore starts hold them back (the CLI's ``main``, the demo): a program that
imports vococore as a library keeps MONAI's plotting helpers.
"""

from __future__ import annotations

import importlib.abc
import importlib.util
import sys
from collections.abc import Sequence
from importlib.machinery import ModuleSpec
from types import ModuleType

HELD_BACK = ("matplotlib", "scipy.signal")


class _MonaiLoader(importlib.abc.Loader):
    """MONAI's own loader, run with :data:`HELD_BACK` marked absent in ``sys.modules`` (``None``: an import of them
    raises ImportError) and unmarked afterwards; the package keeps MONAI's loader as its ``__loader__``."""

    def __init__(self, loader: importlib.abc.Loader) -> None:
        self.loader = loader

    def create_module(self, spec: ModuleSpec) -> ModuleType | None:
        return self.loader.create_module(spec)

    def exec_module(self, module: ModuleType) -> None:
        module.__loader__ = module.__spec__.loader = self.loader
        held = [name for name in HELD_BACK if name not in sys.modules]
        sys.modules.update(dict.fromkeys(held))
        try:
            self.loader.exec_module(module)
        finally:
            for name in held:
                if name in sys.modules and sys.modules[name] is None:
                    del sys.modules[name]


class _MonaiFinder(importlib.abc.MetaPathFinder):
    """Answers only the first import of ``monai``, with the spec the other finders give and :class:`_MonaiLoader`
    around its loader, and then leaves the import system."""

    def find_spec(self, fullname: str, path: Sequence[str] | None = None,
                  target: ModuleType | None = None) -> ModuleSpec | None:
        if fullname != "monai":
            return None
        sys.meta_path.remove(self)
        spec = importlib.util.find_spec(fullname)
        if spec is not None and spec.loader is not None:
            spec.loader = _MonaiLoader(spec.loader)
        return spec


def hold_back_monai_extras() -> None:
    """From now on, the first import of MONAI in this process leaves out :data:`HELD_BACK` (see the module
    docstring); nothing happens when MONAI is imported already or the hook is in place."""
    if "monai" not in sys.modules and not any(isinstance(f, _MonaiFinder) for f in sys.meta_path):
        sys.meta_path.insert(0, _MonaiFinder())
