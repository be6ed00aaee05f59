"""CT preprocessing of the VoCo recipes (orientation, spacing, HU window, foreground crop, padding) as MONAI
dict transforms, with the inverse that maps anything on the preprocessed grid back to the original grid."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import torch

from vococore.utils.errors import VoCoError
from vococore.io.volume import Volume
# The recipe lives in config (NumPy only); these names are used from here across the package.
from vococore.preprocessing.config import PRESETS, PreprocessConfig, check_resampled_size  # noqa: F401

IMAGE = "image"
LABEL = "label"


def _crop_foreground_or_keep(threshold: float):
    """MONAI CropForeground whose box falls back to the whole image when nothing is above ``threshold``
    (an all-air or constant volume would otherwise be cropped to nothing)."""
    from monai.transforms import CropForeground

    class CropForegroundOrKeep(CropForeground):
        def compute_bounding_box(self, img: torch.Tensor) -> tuple[np.ndarray, np.ndarray]:
            start, end = super().compute_bounding_box(img)
            if np.any(np.asarray(end) - np.asarray(start) <= 0):
                return np.zeros(len(img.shape) - 1, dtype=np.int16), np.asarray(img.shape[1:], dtype=np.int16)
            return start, end

    return CropForegroundOrKeep(select_fn=lambda x: x > threshold, allow_smaller=True)


def build_transform(config: PreprocessConfig, with_label: bool = False):
    """The MONAI Compose for ``config``: label (if any) follows the image with nearest interpolation."""
    from monai.transforms import Compose, CropForegroundd, Orientationd, ScaleIntensityRanged, Spacingd, SpatialPadd

    keys = [IMAGE, LABEL] if with_label else [IMAGE]
    steps = [Orientationd(keys=keys, axcodes=config.orientation, labels=None)]
    if config.spacing is not None:
        modes = ["bilinear", "nearest"] if with_label else ["bilinear"]
        steps.append(Spacingd(keys=keys, pixdim=config.spacing, mode=modes))
    lo, hi = config.hu_range
    steps.append(ScaleIntensityRanged(keys=IMAGE, a_min=lo, a_max=hi, b_min=0.0, b_max=1.0, clip=True))
    if config.foreground_threshold is not None:
        crop = CropForegroundd(keys=keys, source_key=IMAGE, allow_smaller=True)
        crop.cropper = _crop_foreground_or_keep(config.foreground_threshold)
        steps.append(crop)
    steps.append(SpatialPadd(keys=keys, spatial_size=config.min_size))
    return Compose(steps)


def to_meta_tensor(volume: Volume, dtype: torch.dtype = torch.float32) -> "object":
    """A channel-first MONAI MetaTensor (1, i, j, k) carrying the volume's RAS affine."""
    from monai.data import MetaTensor

    array = torch.as_tensor(np.ascontiguousarray(volume.array)).to(dtype)[None]
    return MetaTensor(array, affine=torch.as_tensor(volume.affine, dtype=torch.float64),
                      meta={"filename_or_obj": volume.source or ""})


@dataclass
class Preprocessed:
    """The preprocessed image (and label), plus what is needed to map results back to the original grid."""

    image: "object"  # MetaTensor (1, x, y, z), float32, 0..1
    label: "object | None"
    original: Volume = field(repr=False)
    transform: "object" = field(repr=False, default=None)  # the Compose that made it; MONAI inverts with it

    @property
    def affine(self) -> np.ndarray:
        """Voxel-to-RAS matrix of the preprocessed grid."""
        return np.asarray(self.image.affine, dtype=np.float64)

    @property
    def shape(self) -> tuple[int, int, int]:
        return tuple(int(s) for s in self.image.shape[1:])  # type: ignore[return-value]

    def to_world(self, ijk: np.ndarray) -> np.ndarray:
        """Map (fractional) voxel indices of the preprocessed grid to RAS mm."""
        a = self.affine
        return np.asarray(ijk, dtype=np.float64) @ a[:3, :3].T + a[:3, 3]


class Preprocessor:
    """Applies a :class:`PreprocessConfig` to volumes and inverts results back onto their original grid."""

    def __init__(self, config: PreprocessConfig | None = None) -> None:
        self.config = config or PreprocessConfig()
        self._image_only = build_transform(self.config)
        self._with_label = build_transform(self.config, with_label=True)

    def __call__(self, volume: Volume, label: Volume | None = None) -> Preprocessed:
        """Preprocess ``volume`` (and a ``label`` on the same grid, resampled with nearest neighbour)."""
        check_resampled_size(volume, self.config.spacing)
        data = {IMAGE: to_meta_tensor(volume)}
        if label is not None:
            if not volume.same_grid(label, atol=1e-3):
                raise VoCoError(f"label grid {label.shape} does not match the image grid {volume.shape}; "
                                "resample it onto the image first", label.source)
            data[LABEL] = to_meta_tensor(label)
        transform = self._with_label if label is not None else self._image_only
        out = transform(data)
        return Preprocessed(image=out[IMAGE], label=out.get(LABEL), original=volume, transform=transform)

    def invert(self, pre: Preprocessed, array: np.ndarray | torch.Tensor, nearest: bool = True) -> Volume:
        """Map a 3D array on the preprocessed grid back onto the original grid, as a Volume there.

        Undoes padding, crop, spacing and orientation with MONAI's inverse transforms (``nearest`` for labels);
        the returned affine is the one MONAI's inverse computes, so it can be checked against the original.
        """
        from monai.data import MetaTensor
        from monai.transforms import Invertd

        tensor = array.as_tensor() if isinstance(array, MetaTensor) else torch.as_tensor(array)
        if tuple(tensor.shape) != pre.shape:
            raise ValueError(f"array shape {tuple(tensor.shape)} is not the preprocessed grid {pre.shape}")
        dtype = tensor.dtype
        work = MetaTensor(tensor[None].float(), affine=pre.image.affine)
        inverter = Invertd(keys="out", transform=pre.transform, orig_keys=IMAGE, nearest_interp=nearest)
        back = inverter({"out": work, IMAGE: pre.image})["out"]
        values = back.as_tensor()[0]
        values = values.round().to(dtype) if nearest else values
        return Volume(array=values.numpy(), affine=np.asarray(back.affine, dtype=np.float64),
                      source=pre.original.source, meta={"inverted_from": "preprocessed grid"})
