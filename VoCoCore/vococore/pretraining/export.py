"""Release files from pretraining checkpoints (voco-spec section 3): the encoder alone, as a flat fp32 dict with
MONAI SwinUNETR(use_v2=True) key names (``swinViT.*`` + ``encoder{1,2,3,4,10}.*``, 145 tensors for Swin, no
prefix), which both official loaders and ``SwinUNETR.load_state_dict(strict=False)`` accept.

A flat dict cannot say how it was trained, so a sidecar ``<file>.json`` records the backbone (feature size, patch
merging), recipe, step and the file's SHA-256; ``vococore.networks.weights`` reads it when it matches the file."""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path

import torch

from vococore.utils.atomic import atomic_path, check_writable, save_torch
from vococore.utils.errors import VoCoError
from vococore.networks.backbones import SWIN_ENCODER_MODULES
from vococore.networks.weights_layouts import SIDECAR_FORMAT, sidecar_path
from vococore.training.checkpoint import checkpoint_backbone, load_checkpoint

SWIN_ENCODER_TENSORS = 145


@dataclass(frozen=True)
class ExportReport:
    """What was written: where, how many tensors and parameters, for which backbone."""

    path: Path
    tensors: int
    parameters: int
    arch: str
    feature_size: int
    legacy_merging: bool

    def text(self) -> str:
        return (f"wrote {self.path}: {self.tensors} tensors, {self.parameters / 1e6:.1f} M values, {self.arch} "
                f"feature size {self.feature_size} (MONAI 1.3.0 patch merging: {self.legacy_merging})")


def encoder_state_dict(checkpoint: dict) -> dict[str, torch.Tensor]:
    """The encoder's tensors of a pretraining checkpoint, MONAI-named, fp32, contiguous, on CPU."""
    from vococore.pretraining.model import VoCoModel
    from vococore.pretraining.pretext import get_recipe

    if checkpoint.get("recipe") is None:
        raise VoCoError("the checkpoint records no VoCo recipe; only pretraining checkpoints can be exported")
    model = VoCoModel(checkpoint_backbone(checkpoint), get_recipe(checkpoint["recipe"]))
    model.load_state_dict(checkpoint["model"], strict=True)
    return {k: v.detach().float().cpu().contiguous().clone() for k, v in model.encoder_state_dict().items()}


def export_encoder(checkpoint_path: str | os.PathLike, out_path: str | os.PathLike,
                   overwrite: bool = False) -> ExportReport:
    """Write the encoder of ``checkpoint_path`` to ``out_path`` (torch.save of a flat dict, atomic) and its
    sidecar ``<out_path>.json`` (backbone incl. patch merging, recipe, step, SHA-256 of the weights).

    A Swin encoder gives exactly 145 tensors; a CNN (BasicUNet) checkpoint is refused, because its encoder keys
    (conv_0, down_1..4) match no official loader: fine-tune it from the training checkpoint instead.
    """
    ckpt = load_checkpoint(checkpoint_path)
    spec = checkpoint_backbone(ckpt)
    if spec.arch != "swin":
        raise VoCoError(f"this is a {spec.arch} checkpoint; the release format is the MONAI SwinUNETR encoder, so "
                        "only swin checkpoints are exported (fine-tune a CNN from the training checkpoint itself)",
                        checkpoint_path)
    state = encoder_state_dict(ckpt)
    bad = sorted(k for k in state if k.split(".")[0] not in SWIN_ENCODER_MODULES)
    if bad or len(state) != SWIN_ENCODER_TENSORS:
        raise VoCoError(f"encoder has {len(state)} tensors (expected {SWIN_ENCODER_TENSORS}); unexpected keys "
                        f"{bad[:3]}", checkpoint_path)
    from vococore.utils.config import to_dict
    from vococore.utils.downloads import sha256_of

    sidecar = sidecar_path(out_path)
    check_writable(sidecar, overwrite)
    save_torch(state, out_path, overwrite=overwrite)
    recipe = ckpt.get("recipe")
    description = {"format": SIDECAR_FORMAT, "backbone": to_dict(spec),
                   "recipe": recipe.get("name") if isinstance(recipe, dict) else recipe, "step": ckpt.get("step"),
                   "tensors": len(state), "weights_sha256": sha256_of(Path(out_path))}
    with atomic_path(sidecar, overwrite=overwrite) as tmp:
        Path(tmp).write_text(json.dumps(description, indent=2) + "\n")
    return ExportReport(path=Path(out_path), tensors=len(state), parameters=sum(v.numel() for v in state.values()),
                        arch=spec.arch, feature_size=int(spec.feature_size), legacy_merging=spec.legacy_merging)
