"""The VoCo pretraining model (voco-spec 2.6): backbone, student and EMA-teacher projectors, and the loss parts.

Layouts (``recipe.layout``):
- ``shared`` (v2): ``backbone`` = one encoder; ``student`` and ``teacher`` = projectors only, so state-dict keys
  read ``backbone.swinViT...``, ``student.layer1.0.weight``, ``teacher.layer1.0.weight`` as in the official v2 code.
- ``twin`` (v1): ``student`` and ``teacher`` are two full encoder + projector networks, keys
  ``student.swinViT...`` and ``student.proj_head.layer1.0.weight`` as in the official v1 code.

The teacher is initialised on its own (not copied) and follows the student only through the EMA with
``recipe.ema_momentum`` applied inside every training forward, before the teacher pass.

Pretraining checkpoints that :func:`load_voco_model` reads are dicts saved with ``torch.save`` holding at least
``"model"`` (``VoCoModel.state_dict()``), ``"backbone"`` (``vococore.utils.config.to_dict(BackboneSpec)``) and
``"recipe"`` (a recipe name or ``to_dict(Recipe)``); other keys (optimizer, step, ...) are ignored here.
"""

from __future__ import annotations

import os
from contextlib import nullcontext
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from vococore.utils.errors import VoCoError
from vococore.pretraining.losses import inter_volume_loss, prediction_loss, regularization_loss, relu_cosine
from vococore.networks.backbones import BackboneSpec, build_encoder
from vococore.pretraining.heads import Projector
from vococore.pretraining.pretext.recipe import Recipe, get_recipe

CHECKPOINT_KEYS = ("model", "backbone", "recipe")


def _encoder_with_head(spec: BackboneSpec, recipe: Recipe) -> nn.Module:
    """A v1 network: the encoder with its projector attached as ``proj_head`` (the encoder's forward still returns
    the pooled features; the projector is applied by :class:`VoCoModel`)."""
    net = build_encoder(spec)
    net.add_module("proj_head", Projector(spec.feature_dim, recipe.projector_hidden, recipe.projector_out))
    return net


class VoCoModel(nn.Module):
    """VoCo for ``spec`` and ``recipe``: ``forward(bases, targets, labels)`` returns the loss parts and ``total``."""

    def __init__(self, spec: BackboneSpec, recipe: Recipe | str) -> None:
        super().__init__()
        self.spec = spec
        self.recipe = get_recipe(recipe)
        size, unit = self.recipe.input_size, spec.min_input
        if size % unit or size < 2 * unit:  # at one unit the deepest stage is 1 voxel and InstanceNorm fails
            raise VoCoError(f"recipe {self.recipe.name!r} feeds {size}³ crops, but the {spec.arch} backbone needs a "
                            f"multiple of {unit} of at least {2 * unit}")
        dims = (spec.feature_dim, self.recipe.projector_hidden, self.recipe.projector_out)
        if self.recipe.layout == "shared":
            self.backbone = build_encoder(spec)
            self.student = Projector(*dims)
            self.teacher = Projector(*dims)
        else:
            self.student = _encoder_with_head(spec, self.recipe)
            self.teacher = _encoder_with_head(spec, self.recipe)
        self.teacher.requires_grad_(False)

    @torch.no_grad()
    def update_teacher(self) -> None:
        """EMA step: teacher <- m * teacher + (1 - m) * student, for every parameter."""
        m = self.recipe.ema_momentum
        for p_student, p_teacher in zip(self.student.parameters(), self.teacher.parameters()):
            p_teacher.mul_(m).add_(p_student.detach(), alpha=1.0 - m)

    def encoder(self) -> nn.Module:
        """The encoder whose weights are the pretraining result (v2: the shared backbone, v1: the student's)."""
        return self.backbone if self.recipe.layout == "shared" else self.student

    def encoder_state_dict(self) -> dict[str, torch.Tensor]:
        """The encoder's weights with MONAI key names (``swinViT.*``, ``encoder1.*`` ...; no projector)."""
        return {k: v for k, v in self.encoder().state_dict().items() if not k.startswith("proj_head.")}

    def project(self, crops: torch.Tensor, update_teacher: bool,
                row_dropout: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
        """Student and teacher embeddings (N, D) of crops (N, C, s, s, s), all crops in one batch (BatchNorm
        statistics over all of them). With ``update_teacher`` the EMA step runs before the teacher pass; with
        ``row_dropout`` the student sees the recipe's embedding row dropout (v2)."""
        if self.recipe.layout == "shared":
            features = self.backbone(crops)
            student_in = features
            if row_dropout and self.recipe.embedding_row_dropout > 0:
                # A 2-D input is (C, L) to dropout1d: whole crop vectors are zeroed, the rest scaled (as v2 does).
                student_in = F.dropout1d(features, p=self.recipe.embedding_row_dropout, training=True)
            student = self.student(student_in)
            if update_teacher:
                self.update_teacher()
            with torch.no_grad():
                teacher = self.teacher(features.detach())
        else:
            student = self.student.proj_head(self.student(crops))
            if update_teacher:
                self.update_teacher()
            with torch.no_grad():
                teacher = self.teacher.proj_head(self.teacher(crops))
        return student, teacher.detach()

    def _split(self, bases: torch.Tensor, targets: torch.Tensor, training: bool):
        """Embed targets then bases of all volumes together; return (B, T, D) / (B, K, D) float32 parts.
        ``training`` runs the EMA step and the row dropout."""
        b, k, t = bases.shape[0], bases.shape[1], targets.shape[1]
        crops = torch.cat([targets.flatten(0, 1), bases.flatten(0, 1)])
        student, teacher = self.project(crops, update_teacher=training, row_dropout=training)
        student, teacher = student.float(), teacher.float()
        n = b * t
        return (student[:n].view(b, t, -1), student[n:].view(b, k, -1),
                teacher[:n].view(b, t, -1), teacher[n:].view(b, k, -1))

    def _position_logits(self, s_t, s_b, t_t, t_b) -> torch.Tensor:
        """Intra-volume logits (B, T, K): v2 student targets vs teacher bases; v1 the mean of both pairings."""
        if self.recipe.layout == "shared":
            return relu_cosine(s_t, t_b)
        return 0.5 * (relu_cosine(s_t, t_b) + relu_cosine(t_t, s_b))

    def forward(self, bases: torch.Tensor, targets: torch.Tensor, labels: torch.Tensor) -> dict[str, torch.Tensor]:
        """Loss parts for a batch: ``bases`` (B, K, C, s, s, s), ``targets`` (B, T, C, s, s, s), ``labels``
        (B, T, K). Returns float32 scalars named by ``recipe.loss_parts`` plus ``total`` (their sum).

        In training mode each call runs the EMA step (before the teacher pass) and the row dropout; in eval mode
        neither, so a validation loss leaves the teacher unchanged."""
        if bases.shape[1] != self.recipe.num_bases or labels.shape != (*targets.shape[:2], bases.shape[1]):
            raise VoCoError(f"batch shapes bases {tuple(bases.shape)}, targets {tuple(targets.shape)}, labels "
                            f"{tuple(labels.shape)} do not fit recipe {self.recipe.name!r} "
                            f"({self.recipe.num_bases} bases)")
        s_t, s_b, t_t, t_b = self._split(bases, targets, training=self.training)
        wanted = self.recipe.loss_parts
        negative = self.recipe.negative_loss
        parts: dict[str, torch.Tensor] = {}
        # the meta device (benchmarks/count_flops.py runs the step there without computing it) has no autocast
        device = bases.device.type
        no_autocast = (torch.autocast(device, enabled=False) if torch.amp.is_autocast_available(device)
                       else nullcontext())
        with no_autocast:
            # Intra-volume loss in float64 like the official float64 labels (voco-spec, "facts checked").
            logits = self._position_logits(s_t, s_b, t_t, t_b).double()
            pos, neg = prediction_loss(labels.double(), logits, negative)
            if "intra" in wanted:
                parts["intra"] = (pos + neg).float()
            if "pos" in wanted:
                parts["pos"] = pos.float()
            if "neg" in wanted:
                parts["neg"] = neg.float()
            if "inter" in wanted:
                parts["inter"] = inter_volume_loss(s_t, s_b, t_t, t_b, negative)
            if "reg" in wanted:
                parts["reg"] = regularization_loss(s_b)
        parts["total"] = torch.stack([parts[name] for name in wanted if name in parts]).sum()
        return parts

    @torch.no_grad()
    def predict_overlaps(self, bases: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        """Predicted overlaps (T, K) in [0, 1] of one volume's targets (T, C, s, s, s) with its bases (K, C, s, s, s):
        the training logits, without the EMA step or row dropout. They are not normalised to sum to 1."""
        s_t, s_b, t_t, t_b = self._split(bases[None], targets[None], training=False)
        return self._position_logits(s_t, s_b, t_t, t_b)[0].clamp(0.0, 1.0)


def load_voco_model(path: str | os.PathLike, map_location: str | torch.device = "cpu") -> VoCoModel:
    """Rebuild a :class:`VoCoModel` from a pretraining checkpoint (keys ``model``, ``backbone``, ``recipe``),
    loading weights only (no arbitrary unpickling). Raises VoCoError naming the file when it is not one."""
    from vococore.utils.config import from_dict

    path = os.fspath(path)
    if not os.path.isfile(path):
        raise VoCoError("model checkpoint not found", path)
    from vococore.utils.torchload import load_weights_only

    ckpt: Any = load_weights_only(path, "a VoCo pretraining checkpoint", map_location)
    if not isinstance(ckpt, dict) or any(key not in ckpt for key in CHECKPOINT_KEYS):
        found = sorted(ckpt)[:8] if isinstance(ckpt, dict) else type(ckpt).__name__
        raise VoCoError(f"not a VoCo pretraining checkpoint: needs keys {list(CHECKPOINT_KEYS)}, found {found}", path)
    try:
        spec = from_dict(BackboneSpec, ckpt["backbone"], source=path, where="backbone")
        recipe = get_recipe(ckpt["recipe"])
    except VoCoError as exc:
        raise VoCoError(f"checkpoint has an invalid backbone/recipe: {exc}", path) from None
    model = VoCoModel(spec, recipe)
    state = dict(ckpt["model"])
    if state and all(k.startswith("module.") for k in state):  # saved from a DistributedDataParallel wrapper
        state = {k[len("module."):]: v for k, v in state.items()}
    try:
        result = model.load_state_dict(state, strict=False)
    except RuntimeError as exc:  # shape mismatches
        raise VoCoError(f"weights do not fit the model: {str(exc).splitlines()[-1].strip()}", path) from None
    if result.missing_keys or result.unexpected_keys:
        raise VoCoError(f"weights do not match a {spec.arch} VoCo model with recipe {recipe.name!r}: "
                        f"{len(result.missing_keys)} missing (e.g. {result.missing_keys[:3]}), "
                        f"{len(result.unexpected_keys)} unexpected (e.g. {result.unexpected_keys[:3]})", path)
    return model.eval()
