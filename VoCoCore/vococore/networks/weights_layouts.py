"""Reading weight files safely and undoing the key layouts that VoCo, VoComni, MONAI and vococore write.

Known layouts (voco-spec section 3): flat ``swinViT.*``/``encoder*`` dicts (VoCo_*_SSL_head.pt, VoCo_10k.pt, our
exported encoders), full SwinUNETR dicts (VoComni, MONAI checkpoints), training checkpoints wrapped in
``state_dict``/``net``/``network_weights``/``model``/``student`` with ``module.``/``backbone.``/``student.`` prefixes
and the old ``swin_vit`` name, our training checkpoints (``model`` + ``backbone`` spec) and model packages
(safetensors). Nothing is unpickled beyond plain tensors and containers (``torch.load(weights_only=True)``).
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from vococore.utils.errors import VoCoError

# Wrapper keys tried, in this order, when a file's top level is not itself a state dict.
WRAPPER_KEYS = ("state_dict", "network_weights", "net", "model", "student", "network")
# Prefixes under which a target key may appear in a source file, most specific source first.
# ``student.`` (v1 training checkpoints) wins over ``teacher.``, which is never used.
SOURCE_PREFIXES = ("", "backbone.", "student.")
RENAMES = (("swin_vit.", "swinViT."),)
PACKAGE_METADATA_KEY = "vococore_package"
SIDECAR_FORMAT = "vococore-encoder-export"  # the "format" of the JSON beside an export-encoder file


@dataclass
class WeightSource:
    """Tensors read from a weight file, with the layout found and what the file says about its training."""

    path: str
    tensors: dict[str, torch.Tensor]
    layout: str
    legacy_merging: bool | None = None  # None: the file does not record it
    backbone: dict[str, Any] | None = None  # recorded BackboneSpec fields (our checkpoints and packages)
    metadata: dict[str, Any] = field(default_factory=dict)


def read_weights(path: str | os.PathLike) -> WeightSource:
    """Read any supported weight file into a flat ``{key: tensor}`` dict with wrappers and ``module.`` removed."""
    path = Path(path)
    if not path.is_file():
        raise VoCoError("weight file not found", path)
    if _is_safetensors(path):
        return _read_safetensors(path)
    from vococore.utils.torchload import load_weights_only

    obj = load_weights_only(path, "a weights file (torch or safetensors)")
    return _with_export_sidecar(_unwrap(obj, path), path)


def sidecar_path(weights: str | os.PathLike) -> Path:
    """Where ``export-encoder`` describes an exported encoder file: ``<file>.json`` beside it."""
    weights = Path(weights)
    return weights.with_name(weights.name + ".json")


def _with_export_sidecar(source: WeightSource, path: Path) -> WeightSource:
    """Take the backbone (patch merging included) from ``<file>.json`` written by ``export-encoder``, if it
    describes exactly this file (same SHA-256); a stale or foreign sidecar is ignored and said so."""
    from vococore.utils.downloads import sha256_of

    sidecar = sidecar_path(path)
    if source.backbone is not None or not sidecar.is_file():
        return source
    try:
        info = json.loads(sidecar.read_text())
    except (OSError, ValueError):
        info = None
    if not isinstance(info, dict) or info.get("format") != SIDECAR_FORMAT or not isinstance(info.get("backbone"),
                                                                                           dict):
        return source
    if info.get("weights_sha256") != sha256_of(path):
        source.layout += f"; {sidecar.name} ignored (it describes another file: SHA-256 differs)"
        return source
    source.backbone = info["backbone"]
    source.legacy_merging = bool(info["backbone"].get("legacy_merging"))
    source.metadata.update({k: info[k] for k in ("recipe", "step") if k in info})
    source.layout += f"; backbone from {sidecar.name}"
    return source


def _is_safetensors(path: Path) -> bool:
    """safetensors files start with an 8-byte little-endian header length followed by a JSON object."""
    with open(path, "rb") as fh:
        head = fh.read(9)
    if len(head) < 9:
        return False
    size = int.from_bytes(head[:8], "little")
    return head[8:9] == b"{" and 0 < size < path.stat().st_size


def _read_safetensors(path: Path) -> WeightSource:
    from safetensors import safe_open

    try:
        with safe_open(str(path), framework="pt") as fh:
            meta = fh.metadata() or {}
            tensors = {k: fh.get_tensor(k) for k in fh.keys()}
    except Exception as exc:  # safetensors raises SafetensorError / OSError for damaged files
        raise VoCoError(f"cannot read safetensors file, damaged or truncated? ({exc})", path) from None
    info = json.loads(meta[PACKAGE_METADATA_KEY]) if PACKAGE_METADATA_KEY in meta else {}
    backbone = info.get("backbone")
    source = WeightSource(str(path), {}, "vococore model package" if info else "safetensors",
                          legacy_merging=None if backbone is None else bool(backbone.get("legacy_merging")),
                          backbone=backbone, metadata=info)
    source.tensors, notes = _normalise_keys(tensors)
    source.layout += notes
    return source


def _unwrap(obj: Any, path: Path) -> WeightSource:
    """Descend through wrapper dicts to the state dict; keep what our checkpoints record about the backbone."""
    if not isinstance(obj, dict):
        raise VoCoError(f"holds a {type(obj).__name__}, not a dict of tensors", path)
    backbone = obj.get("backbone") if isinstance(obj.get("backbone"), dict) and not _is_state_dict(
        obj.get("backbone")) else None
    layout, node = [], obj
    while not _is_state_dict(node):
        key = next((k for k in WRAPPER_KEYS if isinstance(node.get(k), dict)), None)
        if key is None:
            raise VoCoError(f"no state dict found: top-level keys {sorted(map(str, node))[:12]}; expected "
                            f"tensors or one of the wrappers {list(WRAPPER_KEYS)}", path)
        layout.append(f"'{key}' wrapper")
        node = node[key]
    tensors = {str(k): v for k, v in node.items() if isinstance(v, torch.Tensor)}
    tensors, notes = _normalise_keys(tensors)
    kind = "vococore checkpoint" if obj.get("format") == "vococore-checkpoint" or backbone else "torch file"
    text = kind + (" (" + ", ".join(layout) + ")" if layout else ", flat") + notes
    return WeightSource(str(path), tensors, text,
                        legacy_merging=None if backbone is None else bool(backbone.get("legacy_merging")),
                        backbone=backbone, metadata={k: v for k, v in obj.items() if k in ("recipe", "step", "kind")})


def _is_state_dict(node: Any) -> bool:
    return isinstance(node, dict) and bool(node) and any(isinstance(v, torch.Tensor) for v in node.values())


def _normalise_keys(tensors: dict[str, torch.Tensor]) -> tuple[dict[str, torch.Tensor], str]:
    """Strip DDP's ``module.`` and rename ``swin_vit`` → ``swinViT`` wherever they occur."""
    notes = []
    if any(k.startswith("module.") for k in tensors):
        tensors = {k.removeprefix("module."): v for k, v in tensors.items()}
        notes.append("'module.' stripped")
    for old, new in RENAMES:
        if any(old in k for k in tensors):
            tensors = {k.replace(old, new): v for k, v in tensors.items()}
            notes.append(f"'{old[:-1]}' renamed to '{new[:-1]}'")
    return tensors, ("; " + ", ".join(notes)) if notes else ""


def find_source_key(target_key: str, source_keys: set[str]) -> str | None:
    """The source key holding ``target_key`` under one of :data:`SOURCE_PREFIXES`, or None."""
    for prefix in SOURCE_PREFIXES:
        if prefix + target_key in source_keys:
            return prefix + target_key
    return None


def feature_size_of(tensors: dict[str, torch.Tensor]) -> int | None:
    """Swin feature size recorded by the patch embedding (or first CNN conv) of a source, if present."""
    for key, tensor in tensors.items():
        if key.endswith(("swinViT.patch_embed.proj.weight", "conv_0.conv_0.conv.weight")) and tensor.ndim == 5:
            return int(tensor.shape[0])
    return None
