"""The background half of a segmentation: turn a downloaded official checkpoint into a model package when that
has not happened yet (a minute of CPU and the full weights in memory: never in Slicer's process), then run
``vococore infer``. Run as ``python segment_job.py MODELS_JSON CACHE_DIR MODEL_ID PACKAGE -- <infer arguments>``."""

from __future__ import annotations

import sys
from pathlib import Path


def main(argv: list[str]) -> int:
    """Convert if the package is missing (JSON progress stage ``convert``), then ``vococore infer``."""
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    from vococore.cli import main as vococore_main
    from vococore.utils.errors import VoCoError
    from vococore.utils.progress import Progress

    from VoCoSlicerLib.convert import package_official_model
    from VoCoSlicerLib.registry import ModelRegistry

    split = argv.index("--")
    models_json, cache_dir, model_id, package = argv[:split]
    if not Path(package).is_file():
        try:
            registry = ModelRegistry(models_json, cache_dir)
            entry = registry.get(model_id)
            weights = registry.local_path(entry)
            if weights is None:
                raise VoCoError(f"model {model_id!r} is not downloaded")
            with Progress("convert", 1, json_lines=True) as progress:
                package_official_model(entry, weights, Path(package))
                progress.update(1)
        except VoCoError as exc:
            print(f"vococore convert: error: {exc}", file=sys.stderr)
            return 2
    return vococore_main(["infer", *argv[split + 1:]])


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
