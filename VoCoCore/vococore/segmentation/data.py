"""Fine-tuning data: image/label pairs, the chosen label subset remapped to classes 1..N, preprocessed once and
kept in memory, and seeded positive/negative-balanced random crops with the VoCo fine-tuning augmentations."""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

import numpy as np
import torch

from vococore.utils.errors import VoCoError
from vococore.io import LabelInfo, read_volume
from vococore.io.labels import make_label
from vococore.preprocessing.preprocessor import PreprocessConfig, Preprocessor
from vococore.preprocessing.resample import resample_to_grid


@dataclass(frozen=True)
class Pair:
    """One training case: a CT (file or DICOM folder) and its labelmap."""

    image: Path
    label: Path


def pairs_from_datalist(path: str | os.PathLike, split: str = "training") -> list[Pair]:
    """``{"image", "label"}`` items of an MSD-style datalist JSON (paths relative to the JSON's folder)."""
    path = Path(path)
    try:
        data = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise VoCoError(f"cannot read datalist JSON ({exc})", path) from None
    items = data.get(split, []) if isinstance(data, dict) else None
    if not isinstance(items, list) or any(not isinstance(i, dict) or "label" not in i for i in items):
        raise VoCoError(f"datalist {split!r} must be a list of {{'image': ..., 'label': ...}} items", path)
    return pairs_from_lists([i["image"] for i in items], [i["label"] for i in items], path.parent)


def pairs_from_lists(images: list[str], labels: list[str], root: str | os.PathLike = ".") -> list[Pair]:
    """Pair equally long image and label lists; relative paths are taken from ``root``; all must exist."""
    if len(images) != len(labels):
        raise VoCoError(f"{len(images)} images but {len(labels)} labels; they must pair up")
    pairs = [Pair(Path(root) / i, Path(root) / lab) for i, lab in zip(images, labels)]
    for p in pairs:
        for f in (p.image, p.label):
            if not f.exists():
                raise VoCoError("training file does not exist", f)
    return pairs


def label_table(name: str) -> dict[int, str]:
    """Label id → name: ``totalseg`` (TotalSegmentator v2 ids), or a JSON file ``{id: name}`` (or under "labels")."""
    if name == "totalseg":
        raw = json.loads(resources.files("vococore.segmentation").joinpath("totalseg_v2_labels.json").read_text())
    else:
        try:
            raw = json.loads(Path(name).read_text())
        except (OSError, json.JSONDecodeError) as exc:
            raise VoCoError(f"cannot read label table ({exc})", name) from None
    raw = raw.get("labels", raw) if isinstance(raw, dict) else raw
    try:
        return {int(k): str(v) for k, v in raw.items()}
    except (AttributeError, ValueError):
        raise VoCoError("label table must be a JSON object {id: name} with whole-number ids", name) from None


def select_classes(classes: list[str | int], table: dict[int, str],
                   colors: dict[str, list[float]] | None = None) -> tuple[dict[int, int], list[LabelInfo]]:
    """Map the chosen source ids (by name or id) to classes 1..N, with names and colours for the package."""
    by_name = {v: k for k, v in table.items()}
    mapping, infos = {}, []
    for i, item in enumerate(classes, start=1):
        key = str(item)
        if key in by_name:
            source = by_name[key]
        elif key.isdigit():
            source = int(key)
        else:
            raise VoCoError(f"unknown label {item!r}; use a name of the label table or an id "
                            f"(names include {sorted(by_name)[:6]})")
        if source in mapping:
            raise VoCoError(f"label {item!r} chosen twice")
        mapping[source] = i
        name = table.get(source, f"label_{source}")
        color = (colors or {}).get(name)
        infos.append(make_label(i, name, tuple(color) if color is not None else None))
    if not mapping:
        raise VoCoError("choose at least one label (data.classes)")
    return mapping, infos


def remap(labels: np.ndarray, mapping: dict[int, int]) -> np.ndarray:
    """Source ids → classes 1..N (uint8); every other id becomes background."""
    lut = np.zeros(max(int(labels.max()), max(mapping)) + 1, dtype=np.uint8)
    for source, target in mapping.items():
        lut[source] = target
    return lut[labels.astype(np.int64)]


@dataclass
class Case:
    """A preprocessed case in memory: image (1, X, Y, Z) float32 and label (1, X, Y, Z) uint8."""

    image: torch.Tensor
    label: torch.Tensor
    source: str


def prepare_cases(pairs: list[Pair], config: PreprocessConfig, mapping: dict[int, int]) -> list[Case]:
    """Read, remap and preprocess each pair once (labels stored on another grid are resampled by world position)."""
    preprocessor = Preprocessor(config)
    cases = []
    for pair in pairs:
        image = read_volume(pair.image)
        label = read_volume(pair.label)
        if not image.same_grid(label, atol=1e-3):
            label = resample_to_grid(label, image)
        label = label.with_array(remap(np.asarray(label.array), mapping))
        pre = preprocessor(image, label)
        cases.append(Case(pre.image.as_tensor().float(), pre.label.as_tensor().round().to(torch.uint8),
                          str(pair.image)))
    return cases


def crop_transform(roi_size: tuple[int, int, int], samples: int, pos: float, neg: float, augment: bool):
    """MONAI RandCropByPosNegLabeld (+ flips, rot90, intensity scale/shift as in the VoCo BTCV recipe)."""
    from monai.transforms import (Compose, RandCropByPosNegLabeld, RandFlipd, RandRotate90d, RandScaleIntensityd,
                                  RandShiftIntensityd, SpatialPadd)

    keys = ["image", "label"]
    steps = [SpatialPadd(keys=keys, spatial_size=roi_size),
             RandCropByPosNegLabeld(keys=keys, label_key="label", spatial_size=roi_size, pos=pos, neg=neg,
                                    num_samples=samples, image_key="image", image_threshold=0)]
    if augment:
        steps += [RandFlipd(keys=keys, prob=0.2, spatial_axis=axis) for axis in (0, 1, 2)]
        steps += [RandRotate90d(keys=keys, prob=0.2, max_k=3),
                  RandScaleIntensityd(keys="image", factors=0.1, prob=0.1),
                  RandShiftIntensityd(keys="image", offsets=0.1, prob=0.5)]
    return Compose(steps, lazy=False)


def batch_for_step(cases: list[Case], transform, step: int, seed: int) -> dict[str, torch.Tensor]:
    """The crops of training step ``step``: case ``step mod n``, randomness seeded by (seed, step) so a
    resumed run draws exactly the crops the uninterrupted run would have. Plain tensors, not MONAI MetaTensors:
    every network op on a MetaTensor copies its metadata, 5 % of a CNN fine-tuning step (0.532 against 0.506 s,
    4 crops of 32³, one thread)."""
    from monai.utils import convert_to_tensor

    case = cases[step % len(cases)]
    transform.set_random_state(seed=(seed * 1_000_003 + step) % 2**32)
    crops = transform({"image": case.image, "label": case.label})
    image = torch.stack([convert_to_tensor(c["image"], track_meta=False).float() for c in crops])
    label = torch.stack([convert_to_tensor(c["label"], track_meta=False) for c in crops]).long()
    return {"image": image, "label": label}
