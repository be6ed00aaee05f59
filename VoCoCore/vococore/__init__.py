"""VoCoCore: VoCo (Volume Contrast) self-supervised pretraining and segmentation for 3D CT, built on MONAI.

World coordinates are RAS millimetres everywhere; arrays are indexed (x, y, z) = (i, j, k) as in MONAI/nibabel.
"""

from typing import Any

from vococore.utils.errors import VoCoError

__version__ = "0.1.0"

__all__ = ["VoCoError", "Volume", "__version__"]


def __getattr__(name: str) -> Any:
    """``vococore.Volume`` on first use: importing numpy here would slow ``vococore --version`` for nothing."""
    if name == "Volume":
        from vococore.io.volume import Volume

        return Volume
    raise AttributeError(f"module 'vococore' has no attribute {name!r}")
