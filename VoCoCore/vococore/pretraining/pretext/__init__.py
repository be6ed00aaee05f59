"""The VoCo pretext task as pure array code: recipes, crop region, base grid, target crops, position labels,
per-crop augmentation and the sampler that turns a region into one training sample (no file I/O)."""

from vococore.pretraining.pretext.augment import CropAugmentation, draw_augmentation
from vococore.pretraining.pretext.grid import base_boxes, position_labels, sample_target_centers, target_box
from vococore.pretraining.pretext.recipe import (
    DEFAULT_BACKBONES,
    PREPROCESS_PRESETS,
    RECIPES,
    Recipe,
    default_backbone,
    get_recipe,
)
from vococore.pretraining.pretext.region import (
    RegionPlacement,
    base_boxes_world,
    box_world,
    place_region,
    region_world_affine,
)
from vococore.pretraining.pretext.sampler import PretextSample, PretextSampler, collate, crops_at

__all__ = [
    "DEFAULT_BACKBONES", "PREPROCESS_PRESETS", "RECIPES", "CropAugmentation", "PretextSample", "PretextSampler",
    "Recipe", "RegionPlacement", "base_boxes", "base_boxes_world", "box_world", "collate", "crops_at",
    "default_backbone", "draw_augmentation", "get_recipe", "place_region", "position_labels", "region_world_affine",
    "sample_target_centers", "target_box",
]
