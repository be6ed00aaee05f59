"""The VoCo recipes: every number of the pretext task, heads and losses (voco-spec sections 1.1-1.4 and 2).

``v2`` is the default (Large-Scale-Medical Self-supervised; ``v2-resize`` its variant for unlabeled data that resizes
the whole volume to the region), ``v1`` the CVPR 2024 code, ``small`` a CPU preset that runs the same code path on a
cheap CNN backbone for tests and demos. A recipe is a frozen dataclass, so configs can
name one (``recipe: v2``) or spell it out field by field (``vococore.utils.config.from_dict(Recipe, data)``).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

from vococore.utils.errors import VoCoError
from vococore.networks.backbones import BackboneSpec
from vococore.preprocessing.preprocessor import PRESETS, PreprocessConfig

REGION_MODES = ("crop", "resize")
NEGATIVE_FORMS = ("log", "square")
LAYOUTS = ("shared", "twin")
LOSS_PARTS = ("intra", "inter", "pos", "neg", "reg")

# Preprocessing presets beside vococore.preprocessing.preprocessor.PRESETS. "abdomen-3mm" is the small recipe's: at 3 mm its
# 96x96x32 region covers 288x288x96 mm, about the same abdomen as the v2 region at 1.5 mm in x-y.
PREPROCESS_PRESETS: dict[str, PreprocessConfig] = {
    **PRESETS,
    "abdomen-3mm": PreprocessConfig(spacing=(3.0, 3.0, 3.0), min_size=(32, 32, 32)),
}


@dataclass(frozen=True)
class Recipe:
    """All numbers of one VoCo variant. Sizes are voxels on the preprocessed grid, axes (x, y, z).

    The region (``region_size``) is split in x-y into a ``grid`` x ``grid`` set of base crops of edge
    ``base_size`` spanning the full region z; ``num_targets`` target crops of edge ``target_size`` are centred at
    integers drawn from [low, high) of ``target_center_range`` in x and y, at ``target_center_z`` in z. Every crop is
    resized to ``input_size`` before the network when that differs from its cut size (v1: 96 -> 64).
    """

    name: str
    region_size: tuple[int, int, int]
    grid: int
    base_size: int
    target_size: int
    input_size: int
    num_targets: int
    target_center_range: tuple[int, int]
    target_center_z: int
    preprocess: str
    region_mode: str  # "crop": pad to the region, then random crop; "resize": resize the whole volume to it
    negative_loss: str  # "log" (v2) or "square" (v1)
    layout: str  # "shared": one backbone + student/teacher projectors (v2); "twin": two full networks (v1)
    projector_hidden: int
    projector_out: int
    loss_parts: tuple[str, ...]
    embedding_row_dropout: float = 0.0  # v2: Dropout1d on the (N, D) embeddings drops whole crop vectors
    ema_momentum: float = 0.9
    flip_prob: float = 0.2
    rotate_prob: float = 0.2
    rotate_max_k: int = 3
    shift_offset: float = 0.1
    shift_prob: float = 0.5

    def __post_init__(self) -> None:
        x, y, z = self.region_size
        checks = [
            (x == y == self.grid * self.base_size, f"region x-y {x}x{y} must equal grid {self.grid} x base size "
                                                    f"{self.base_size}"),
            (z == self.base_size, f"region z {z} must equal the base size {self.base_size} (cubic base crops)"),
            (self.target_size <= z, f"target size {self.target_size} exceeds the region z {z}"),
            (self.target_size // 2 <= self.target_center_range[0] and
             self.target_center_range[1] - 1 + self.target_size - self.target_size // 2 <= x,
             f"target centres {self.target_center_range} let a {self.target_size} crop leave the region"),
            (self.target_center_range[0] < self.target_center_range[1], "empty target centre range"),
            (self.target_size // 2 <= self.target_center_z <= z - (self.target_size - self.target_size // 2),
             f"target centre z {self.target_center_z} lets the crop leave the region"),
            (self.region_mode in REGION_MODES, f"region_mode must be one of {REGION_MODES}"),
            (self.negative_loss in NEGATIVE_FORMS, f"negative_loss must be one of {NEGATIVE_FORMS}"),
            (self.layout in LAYOUTS, f"layout must be one of {LAYOUTS}"),
            (set(self.loss_parts) <= set(LOSS_PARTS) and len(self.loss_parts) > 0,
             f"loss_parts must be taken from {LOSS_PARTS}"),
            (not ({"intra", "inter"} & set(self.loss_parts) and {"pos", "neg"} & set(self.loss_parts)),
             "use either intra/inter (v2) or pos/neg (v1) loss parts"),
            (not ("inter" in self.loss_parts and self.layout != "shared"), "the inter-volume loss needs layout "
                                                                           "'shared'"),
            (0.0 <= self.embedding_row_dropout < 1.0, "embedding_row_dropout must be in [0, 1)"),
            (0.0 <= self.ema_momentum <= 1.0, "ema_momentum must be in [0, 1]"),
            (self.preprocess in PREPROCESS_PRESETS, f"unknown preprocess preset {self.preprocess!r}; known: "
                                                    f"{sorted(PREPROCESS_PRESETS)}"),
        ]
        for ok, message in checks:
            if not ok:
                raise VoCoError(f"recipe {self.name!r}: {message}")

    @property
    def num_bases(self) -> int:
        """Number of base crops, grid²."""
        return self.grid * self.grid

    @property
    def crop_resized(self) -> bool:
        """True when crops are resized to ``input_size`` before the network (v1)."""
        return self.input_size != self.base_size or self.input_size != self.target_size

    def preprocess_config(self) -> PreprocessConfig:
        """The preprocessing that produces the grid this recipe's voxel sizes refer to."""
        return dataclasses.replace(PREPROCESS_PRESETS[self.preprocess])


RECIPES: dict[str, Recipe] = {
    "v2": Recipe(name="v2", region_size=(192, 192, 64), grid=3, base_size=64, target_size=64, input_size=64,
                 num_targets=2, target_center_range=(32, 160), target_center_z=32, preprocess="abdomen",
                 region_mode="crop", negative_loss="log", layout="shared", projector_hidden=1024,
                 projector_out=1024, loss_parts=("intra", "inter", "reg"), embedding_row_dropout=0.2,
                 shift_prob=0.5),
    "v1": Recipe(name="v1", region_size=(384, 384, 96), grid=4, base_size=96, target_size=96, input_size=64,
                 num_targets=2, target_center_range=(48, 336), target_center_z=48, preprocess="v1",
                 region_mode="resize", negative_loss="square", layout="twin", projector_hidden=2048,
                 projector_out=2048, loss_parts=("pos", "neg", "reg"), embedding_row_dropout=0.0,
                 shift_prob=0.1),
    # v2 for unlabeled abdomen / head-neck / TotalSegmentator / colon data: the whole foreground volume is resized
    # to the region instead of cropped (voco-spec 1.1). Aligned corners are assumed, as in the v1 code.
    "v2-resize": Recipe(name="v2-resize", region_size=(192, 192, 64), grid=3, base_size=64, target_size=64,
                        input_size=64, num_targets=2, target_center_range=(32, 160), target_center_z=32,
                        preprocess="abdomen", region_mode="resize", negative_loss="log", layout="shared",
                        projector_hidden=1024, projector_out=1024, loss_parts=("intra", "inter", "reg"),
                        embedding_row_dropout=0.2, shift_prob=0.5),
    # No embedding dropout here: on the small encoder's 124-dim features, dropping 20 % of the rows (v2) kept the
    # intra-volume loss at the level of a constant guess (about 0.6) for 200+ steps on the sample CT, and dropped
    # rows (all mapped to the same vector) made the inter-volume loss spike. Without it intra falls within 60 steps.
    "small": Recipe(name="small", region_size=(96, 96, 32), grid=3, base_size=32, target_size=32, input_size=32,
                    num_targets=2, target_center_range=(16, 80), target_center_z=16, preprocess="abdomen-3mm",
                    region_mode="crop", negative_loss="log", layout="shared", projector_hidden=128,
                    projector_out=128, loss_parts=("intra", "inter", "reg"), embedding_row_dropout=0.0,
                    shift_prob=0.5),
}

# The backbone each recipe is meant for; a config may choose another (e.g. swin L/H for v2).
DEFAULT_BACKBONES: dict[str, BackboneSpec] = {
    "v2": BackboneSpec(arch="swin", feature_size=48, legacy_merging=True),
    "v1": BackboneSpec(arch="swin", feature_size=48, legacy_merging=True),
    "v2-resize": BackboneSpec(arch="swin", feature_size=48, legacy_merging=True),
    "small": BackboneSpec(arch="cnn", feature_size=8),
}


def get_recipe(recipe: str | dict[str, Any] | Recipe) -> Recipe:
    """A recipe from its name (``"v2"``), a full field mapping (as saved in checkpoints/configs), or itself."""
    if isinstance(recipe, Recipe):
        return recipe
    if isinstance(recipe, str):
        if recipe not in RECIPES:
            raise VoCoError(f"unknown recipe {recipe!r}; choose one of {sorted(RECIPES)}")
        return RECIPES[recipe]
    if isinstance(recipe, dict):
        from vococore.utils.config import from_dict

        return from_dict(Recipe, recipe, where="recipe")
    raise VoCoError(f"a recipe is a name or a mapping, got {type(recipe).__name__}")


def default_backbone(recipe: str | Recipe) -> BackboneSpec:
    """A fresh copy of the backbone spec that ``recipe`` is designed for."""
    name = recipe.name if isinstance(recipe, Recipe) else recipe
    return dataclasses.replace(DEFAULT_BACKBONES.get(name, DEFAULT_BACKBONES["v2"]))
