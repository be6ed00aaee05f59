"""CT input/output: read NIfTI, NRRD, MetaImage and DICOM series into a :class:`~vococore.io.volume.Volume`,
and write labelmaps on a reference grid as NIfTI, NRRD or Slicer ``.seg.nrrd``."""

from vococore.io.labels import LabelInfo
from vococore.io.read import read_volume
from vococore.io.write import write_labelmap, write_volume

__all__ = ["LabelInfo", "read_volume", "write_labelmap", "write_volume"]
