"""Model packages: one ``.vocomodel`` file holding a segmentation network and everything needed to run it.

Format: a safetensors file. The tensors are the model's state dict (fp32 or fp16 as saved); the safetensors
metadata has one entry, ``vococore_package``, a JSON object with ``format``/``format_version``, ``backbone``
(BackboneSpec fields incl. ``legacy_merging``), ``out_channels``, ``preprocess`` (PreprocessConfig fields),
``roi_size``, ``overlap``, ``labels`` (``[{"value", "name", "color", "terminology"}]``; value = output channel; terminology as
:meth:`Terminology.to_json` or null),
``vococore_version``, ``weights_sha256`` (see :func:`weights_digest`), ``description`` and free ``extra`` data.
Safetensors cannot execute code when read, so packages from others are safe to open.
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import torch
from torch import nn

from vococore.utils.atomic import atomic_path
from vococore.utils.config import from_dict, to_dict
from vococore.utils.errors import VoCoError, file_kind, first_line
from vococore.io.labels import LabelInfo, Terminology, make_label
from vococore.networks.backbones import BackboneSpec, build_inference_segmenter, build_segmenter
from vococore.networks.weights_layouts import PACKAGE_METADATA_KEY
from vococore.preprocessing.preprocessor import PreprocessConfig

FORMAT = "vococore-model"
FORMAT_VERSION = 1
SUFFIX = ".vocomodel"


@dataclass
class ModelPackage:
    """What a packaged model is and how to use it: architecture, preprocessing, window and labels."""

    backbone: BackboneSpec
    labels: list[LabelInfo]  # one per foreground output channel; LabelInfo.value is the channel index
    preprocess: PreprocessConfig = field(default_factory=PreprocessConfig)
    roi_size: tuple[int, int, int] = (96, 96, 96)
    overlap: float = 0.5
    description: str = ""
    extra: dict[str, Any] = field(default_factory=dict)
    vococore_version: str = ""
    weights_sha256: str = ""

    @property
    def out_channels(self) -> int:
        """Background plus one channel per label."""
        return len(self.labels) + 1

    def check(self, path: str | os.PathLike | None = None) -> None:
        """Refuse labels that are not exactly the channels 1..N."""
        values = sorted(li.value for li in self.labels)
        if values != list(range(1, len(values) + 1)):
            raise VoCoError(f"label values must be the output channels 1..{len(values)}, got {values}", path)

    def to_json(self) -> dict[str, Any]:
        """The metadata object stored in the file."""
        data = to_dict(self)
        data["labels"] = [{"value": li.value, "name": li.name, "color": list(li.color),
                           "terminology": li.terminology.to_json() if li.terminology else None}
                          for li in self.labels]
        return {"format": FORMAT, "format_version": FORMAT_VERSION, "out_channels": self.out_channels, **data}

    @classmethod
    def from_json(cls, data: dict[str, Any], path: str | os.PathLike | None = None) -> "ModelPackage":
        """Parse the stored metadata (unknown keys are errors, so a damaged header is caught)."""
        if data.get("format") != FORMAT:
            raise VoCoError(f"not a vococore model package (format {data.get('format')!r})", path)
        if int(data.get("format_version", 0)) > FORMAT_VERSION:
            raise VoCoError(f"package format {data['format_version']} is newer than this vococore supports "
                            f"({FORMAT_VERSION}); update vococore", path)
        body = {k: v for k, v in data.items() if k not in ("format", "format_version", "out_channels")}
        labels = [_label_from_json(li) for li in body.pop("labels", [])]
        package = from_dict(cls, {**body, "labels": []}, path, "package")
        package.labels = labels
        package.check(path)
        return package


def _label_from_json(item: dict[str, Any]) -> LabelInfo:
    """A stored label (terminology null: none); packages written before labels carried terminology get the
    standard term of their name."""
    color = tuple(float(c) for c in item["color"])
    if "terminology" in item:
        term = item["terminology"]
        return LabelInfo(int(item["value"]), str(item["name"]), color, term and Terminology.from_json(term))
    return make_label(int(item["value"]), str(item["name"]), color)  # type: ignore[arg-type]


def weights_digest(state: dict[str, torch.Tensor]) -> str:
    """SHA-256 over the tensors in key order (name, dtype, shape, bytes): identifies the weights, not the file."""
    digest = hashlib.sha256()
    for key in sorted(state):
        tensor = state[key].detach().cpu().contiguous()
        digest.update(f"{key}|{tensor.dtype}|{list(tensor.shape)}\n".encode())
        digest.update(tensor.view(torch.uint8).numpy().tobytes() if tensor.numel() else b"")
    return digest.hexdigest()


def save_package(model: nn.Module, package: ModelPackage, path: str | os.PathLike, overwrite: bool = False,
                 half: bool = False) -> Path:
    """Write ``model`` and ``package`` to one file atomically; ``half`` stores float tensors as fp16."""
    from safetensors.torch import save_file

    from vococore import __version__

    package.check(path)
    state = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    if half:
        state = {k: v.half() if v.is_floating_point() else v for k, v in state.items()}
    package.vococore_version = __version__
    package.weights_sha256 = weights_digest(state)
    with atomic_path(path, overwrite=overwrite, suffix=".tmp") as tmp:
        save_file(state, str(tmp), metadata={PACKAGE_METADATA_KEY: json.dumps(package.to_json())})
    return Path(path)


def read_package_info(path: str | os.PathLike) -> ModelPackage:
    """Only the metadata of a package (fast: the weights are not read)."""
    from safetensors import safe_open

    path = Path(path)
    if not path.is_file():
        raise VoCoError("model package not found", path)
    if file_kind(path) == "torch":
        raise VoCoError("is a torch checkpoint, not a model package (.vocomodel); fine-tuning writes one as "
                        "best.vocomodel", path)
    try:
        with safe_open(str(path), framework="pt") as fh:
            meta = fh.metadata() or {}
    except Exception as exc:  # safetensors raises its own error type for non-safetensors input
        raise VoCoError(f"not a model package (safetensors) file or damaged ({first_line(exc)})", path) from None
    if PACKAGE_METADATA_KEY not in meta:
        raise VoCoError("a safetensors file without vococore package metadata; load it as weights instead", path)
    try:
        data = json.loads(meta[PACKAGE_METADATA_KEY])
    except json.JSONDecodeError as exc:
        raise VoCoError(f"package metadata is not valid JSON ({exc})", path) from None
    return ModelPackage.from_json(data, path)


def load_package(path: str | os.PathLike, device: str | torch.device = "cpu", inference: bool = False
                 ) -> tuple[nn.Module, ModelPackage]:
    """Build the packaged network, load and verify its weights (SHA-256), and return it in eval mode;
    ``inference`` builds it with :func:`build_inference_segmenter` (a small CNN without importing MONAI)."""
    from safetensors.torch import load_file

    package = read_package_info(path)
    state = load_file(str(path))
    if weights_digest(state) != package.weights_sha256:
        raise VoCoError("weights do not match the SHA-256 recorded in the package; the file is damaged", path)
    # gradient checkpointing only matters for training
    build = build_inference_segmenter if inference else build_segmenter
    model = build(replace(package.backbone, use_checkpoint=False), package.out_channels)
    try:
        model.load_state_dict({k: v.float() if v.is_floating_point() else v for k, v in state.items()}, strict=True)
    except RuntimeError as exc:
        raise VoCoError(f"weights do not fit the recorded architecture ({str(exc).splitlines()[0]})", path) from None
    return model.to(device).eval(), package
