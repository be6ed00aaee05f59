"""Turns a downloaded official VoComni checkpoint into a vococore model package (``.vocomodel``), once, using the
architecture, preprocessing and label names the registry records, so ``vococore infer`` can run it."""

from __future__ import annotations

from pathlib import Path

from vococore.utils.errors import VoCoError

from VoCoSlicerLib.registry import ModelEntry, ModelRegistry, sha256_of


def package_path(registry: ModelRegistry, entry: ModelEntry) -> Path:
    """Where the converted package of ``entry`` lives in the model cache."""
    return registry.cache_dir / f"{entry.id}.vocomodel"


def package_official_model(entry: ModelEntry, weights: Path, target: Path) -> Path:
    """Build the entry's network, load ``weights`` (any official layout, with the load report kept in the
    package) and save it with the entry's preprocessing, window and labels. Refuses a label/channel mismatch."""
    from vococore.io.labels import make_labels
    from vococore.networks.backbones import BackboneSpec, build_segmenter
    from vococore.networks.weights import load_weights
    from vococore.segmentation.package import ModelPackage, save_package
    from vococore.preprocessing.preprocessor import PreprocessConfig

    arch, pre = entry.extra.get("architecture"), entry.extra.get("preprocessing")
    if not arch or not pre:
        raise VoCoError(f"model {entry.id!r} has no architecture/preprocessing in the model list; import a "
                        ".vocomodel package instead")
    out_channels = int(arch["out_channels"])
    labels = make_labels(entry.labels)
    if [li.value for li in labels] != list(range(1, out_channels)):
        raise VoCoError(f"model {entry.id!r}: labels {[li.value for li in labels]} do not name the output channels "
                        f"1..{out_channels - 1}")
    legacy = bool(arch.get("monai_1_3_patch_merging", True))
    spec = BackboneSpec(arch="swin", feature_size=int(arch["feature_size"]), legacy_merging=legacy,
                        use_checkpoint=False, in_channels=int(arch.get("in_channels", 1)))
    model = build_segmenter(spec, out_channels)
    report = load_weights(model, weights, min_fraction=0.99, legacy_merging=legacy)
    package = ModelPackage(
        backbone=spec, labels=labels,
        preprocess=PreprocessConfig(orientation=pre.get("orientation", "RAS"), spacing=tuple(pre["spacing"]),
                                    hu_range=tuple(pre["hu_range"])),
        roi_size=tuple(pre["roi"]), overlap=float(pre["overlap"]), description=entry.title,
        extra={"source_url": entry.url, "source_sha256": sha256_of(weights), "license": entry.license,
               "load_report": report.as_dict()})
    return save_package(model, package, target)
