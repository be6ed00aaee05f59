"""CT input/output: read NIfTI, NRRD, MetaImage and DICOM series into a :class:`~vococore.io.volume.Volume`,
and write labelmaps on a reference grid as NIfTI, NRRD or Slicer ``.seg.nrrd``.

The names below load on first use, so that ``vococore.io.sampledata`` (and ``vococore --help``) need no numpy.
"""

from importlib import import_module
from typing import Any

_WHERE = {"LabelInfo": "labels", "read_volume": "read", "write_labelmap": "write", "write_volume": "write"}

__all__ = list(_WHERE)


def __getattr__(name: str) -> Any:
    """Import the module that defines ``name`` when it is first asked for."""
    if name in _WHERE:
        return getattr(import_module(f"vococore.io.{_WHERE[name]}"), name)
    raise AttributeError(f"module 'vococore.io' has no attribute {name!r}")
