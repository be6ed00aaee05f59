"""VoCoCore: VoCo (Volume Contrast) self-supervised pretraining and segmentation for 3D CT, built on MONAI.

World coordinates are RAS millimetres everywhere; arrays are indexed (x, y, z) = (i, j, k) as in MONAI/nibabel.
"""

from vococore.utils.errors import VoCoError
from vococore.io.volume import Volume

__version__ = "0.1.0"

__all__ = ["VoCoError", "Volume", "__version__"]
