"""Load pretrained weights of any known layout into a model, with a report of what matched and why not.

Only tensors whose key (after undoing wrappers and prefixes, see :mod:`weights_layouts`) and shape match are
copied; the rest of the model keeps its initialisation. Too few matches (e.g. another feature size) is an error.
Official VoCo/VoComni weights were trained with MONAI 1.3.0, so loading them switches a Swin model to the
1.3.0 patch merging and the report records it.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass, field

import torch
from torch import nn

from vococore.utils.errors import VoCoError
from vococore.networks.legacy_merging import LegacyPatchMerging, use_legacy_merging
from vococore.networks.weights_layouts import WeightSource, feature_size_of, find_source_key, read_weights

DEFAULT_MIN_FRACTION = 0.5


@dataclass
class LoadReport:
    """What a weight load did: target tensors matched, and every skipped key with the reason."""

    source: str
    layout: str
    total: int  # tensors in the target model's state dict
    matched: list[str] = field(default_factory=list)  # target keys that received a tensor
    missing: list[str] = field(default_factory=list)  # target keys absent from the source
    unexpected: list[str] = field(default_factory=list)  # source keys that no target key uses
    shape_mismatch: list[tuple[str, tuple[int, ...], tuple[int, ...]]] = field(default_factory=list)
    legacy_merging: bool | None = None  # patch merging the Swin model uses after loading (None: not Swin)

    @property
    def fraction(self) -> float:
        """Share of the target model's tensors that were loaded."""
        return len(self.matched) / self.total if self.total else 0.0

    def summary(self, max_keys: int = 5) -> str:
        """A few human-readable lines: counts, then the first skipped keys of each kind."""
        lines = [f"weights: {self.source}", f"layout: {self.layout}",
                 f"matched {len(self.matched)}/{self.total} target tensors ({100 * self.fraction:.1f}%); "
                 f"missing {len(self.missing)}, shape mismatch {len(self.shape_mismatch)}, "
                 f"unexpected {len(self.unexpected)}"]
        if self.legacy_merging is not None:
            lines.append(f"patch merging: {'MONAI 1.3.0 (legacy)' if self.legacy_merging else 'MONAI >= 1.4'}")
        for name, keys in (("missing (kept initialisation)", self.missing),
                           ("unexpected (ignored)", self.unexpected)):
            if keys:
                lines.append(f"{name}: " + ", ".join(keys[:max_keys]) + (" ..." if len(keys) > max_keys else ""))
        for key, want, got in self.shape_mismatch[:max_keys]:
            lines.append(f"shape mismatch (kept initialisation): {key} model {list(want)} file {list(got)}")
        return "\n".join(lines)

    def as_dict(self) -> dict:
        """Plain data for JSON output and model-package metadata."""
        return {"source": self.source, "layout": self.layout, "total": self.total, "matched": len(self.matched),
                "fraction": round(self.fraction, 4), "missing": self.missing, "unexpected": self.unexpected,
                "shape_mismatch": [[k, list(a), list(b)] for k, a, b in self.shape_mismatch],
                "legacy_merging": self.legacy_merging}


def match_weights(model: nn.Module, source: WeightSource) -> tuple[dict[str, torch.Tensor], LoadReport]:
    """Pair the model's state-dict keys with source tensors; returns the model's updated state and the report.

    Our part is naming: each target key's source key under the known prefixes (:func:`find_source_key`). The
    shape-checked copy is MONAI's ``copy_model_state`` on the source renamed to target keys (its own ``mapping``
    argument would copy mismatched shapes with only a warning, so the renaming happens here).
    """
    from monai.networks.utils import copy_model_state

    target = model.state_dict()
    keys = set(source.tensors)
    report = LoadReport(source.path, source.layout, total=len(target))
    renamed, used = {}, set()
    for key, tensor in target.items():
        src = find_source_key(key, keys)
        if src is None:
            report.missing.append(key)
            continue
        used.add(src)
        renamed[key] = source.tensors[src]
        if tuple(renamed[key].shape) != tuple(tensor.shape):
            report.shape_mismatch.append((key, tuple(tensor.shape), tuple(renamed[key].shape)))
    # copy_model_state logs "'dst' model updated: N of M variables" at INFO on MONAI's own stdout handler, which
    # basicConfig levels do not reach; the report carries that count, so only INFO from that logger is dropped here.
    monai_log = logging.getLogger("monai.networks.utils")
    monai_log.addFilter(_warnings_only)
    try:
        state, updated, _ = copy_model_state(target, renamed, inplace=False)
    finally:
        monai_log.removeFilter(_warnings_only)
    report.matched = list(updated)
    report.unexpected = sorted(keys - used)
    return state, report


def _warnings_only(record: logging.LogRecord) -> bool:
    """Logging filter that keeps only warnings and errors."""
    return record.levelno >= logging.WARNING


def is_swin(model: nn.Module) -> bool:
    """True when the model contains MONAI Swin patch merging (SwinUNETR or its encoder)."""
    from monai.networks.nets.swin_unetr import PatchMerging

    return any(isinstance(m, PatchMerging) for m in model.modules())


def set_patch_merging(model: nn.Module, legacy: bool) -> None:
    """Switch every patch merging in ``model`` to the MONAI 1.3.0 order (``legacy``) or the current one."""
    from monai.networks.nets.swin_unetr import PatchMerging

    if legacy:
        use_legacy_merging(model)
        return
    for sub in model.modules():
        if type(sub) is LegacyPatchMerging:
            sub.__class__ = PatchMerging


def load_weights(model: nn.Module, path: str | os.PathLike, min_fraction: float = DEFAULT_MIN_FRACTION,
                 legacy_merging: bool | None = None) -> LoadReport:
    """Copy matching tensors from weight file ``path`` into ``model`` and return the :class:`LoadReport`.

    Raises VoCoError naming the file when fewer than ``min_fraction`` of the model's tensors match. For Swin
    models the patch merging follows ``legacy_merging`` if given, else what the file records, else MONAI 1.3.0
    (files without a record are official releases, trained with MONAI 1.3.0).
    """
    source = read_weights(path)
    state, report = match_weights(model, source)
    if report.fraction < min_fraction:
        raise VoCoError(_refusal(model, source, report, min_fraction), path)
    model.load_state_dict(state)
    if is_swin(model):
        legacy = legacy_merging if legacy_merging is not None else (
            source.legacy_merging if source.legacy_merging is not None else True)
        set_patch_merging(model, legacy)
        report.legacy_merging = legacy
    return report


def _refusal(model: nn.Module, source: WeightSource, report: LoadReport, min_fraction: float) -> str:
    """Why the file does not fit the model, as specific as the file allows."""
    text = (f"only {len(report.matched)} of the model's {report.total} tensors match these weights "
            f"({100 * report.fraction:.1f}% < {100 * min_fraction:.0f}%); layout: {source.layout}")
    have, want = feature_size_of(source.tensors), feature_size_of(model.state_dict())
    if have is not None and want is not None and have != want:
        text += f"; the file has feature size {have} but the model {want}"
    elif have is None and not report.matched:
        text += f"; no key in common (first file keys: {sorted(source.tensors)[:3]})"
    return text + ". Pick a model of the same architecture and feature size."
