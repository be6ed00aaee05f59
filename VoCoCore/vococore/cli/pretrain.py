"""``vococore pretrain``: VoCo self-supervised pretraining from a YAML config (single process or torchrun)."""

from __future__ import annotations

import argparse
import json
import sys

from vococore.cli.options import positive_int
from vococore.utils.errors import VoCoError


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("pretrain", help="VoCo pretraining (resumable; torchrun for several GPUs/processes)",
                       description="Pretrain an encoder with VoCo. Multi-GPU: torchrun --nproc_per_node=N -m "
                                   "vococore pretrain --config FILE.yaml")
    p.add_argument("--config", required=True, help="YAML file, or a packaged one: pretrain_small, pretrain_v2_B, "
                                                    "pretrain_v1_B")
    add_overrides_argument(p, "steps=100 backbone.feature_size=L")
    p.add_argument("--resume", nargs="?", const=True, default=False, metavar="CKPT",
                   help="continue exactly from output_dir/checkpoints/last.pt (or from CKPT)")
    p.add_argument("--dry-run", action="store_true", help="measure a couple of real steps, print time and memory "
                                                          "estimates for the whole run, and exit")
    p.add_argument("--stop-after", type=positive_int, metavar="N", help="stop (with a checkpoint) after N steps of this call")
    p.add_argument("--overwrite", action="store_true", help="start over in an output_dir that holds a run (its "
                                                            "checkpoints, metrics and TensorBoard events are removed)")
    p.add_argument("--build-cache", action="store_true", help="only fill cache_dir with the preprocessed volumes and "
                   "exit (e.g. as a CPU job before the GPU job; under torchrun all ranks share the work)")
    p.add_argument("--json-progress", action="store_true", help="JSON lines progress on stdout")
    p.set_defaults(func=run)


def add_overrides_argument(parser: argparse.ArgumentParser, example: str) -> None:
    """``--set KEY=VALUE ...``, repeatable, the same for every command that reads a YAML config."""
    parser.add_argument("--set", dest="overrides", action="extend", nargs="+", default=[], metavar="KEY=VALUE",
                        help=f"override config entries (dotted keys, YAML values), one or more per --set and "
                             f"--set repeatable, e.g. --set {example}")


def parse_overrides(items: list[str]) -> dict[str, object]:
    """``key=value`` strings to a dict, values read as YAML (numbers, booleans, lists)."""
    import yaml

    out: dict[str, object] = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise VoCoError(f"--set expects KEY=VALUE, got {item!r}")
        try:
            out[key.strip()] = yaml.safe_load(value)
        except yaml.YAMLError as exc:
            raise VoCoError(f"--set {key.strip()}: the value {value!r} is not valid YAML "
                            f"({' '.join(str(getattr(exc, 'problem', None) or exc).split())})") from None
    return out


def run(args: argparse.Namespace) -> int:
    from vococore.utils.config import config_path, load_config
    from vococore.pretraining.run import DryRunReport, PretrainConfig, run_pretraining
    from vococore.utils.atomic import check_output_dir

    config = load_config(PretrainConfig, config_path(args.config, "pretrain"), parse_overrides(args.overrides))
    if not args.dry_run:  # a folder that cannot take output is refused before data is read or a model built
        check_output_dir(config.output_dir)
    result = run_pretraining(config, resume=args.resume, dry_run=args.dry_run, json_progress=args.json_progress,
                             stop_after=args.stop_after, overwrite=args.overwrite,
                             build_cache_only=args.build_cache)
    if args.build_cache:
        print(f"cache ready in {config.cache_dir}: {len(result)} usable volume(s)", file=sys.stderr)
        return 0
    if isinstance(result, DryRunReport):
        if args.json_progress:
            print(json.dumps({"event": "dry_run", **result.__dict__}))
        print(result.text(), file=sys.stderr if args.json_progress else sys.stdout)
        return 0
    if result.checkpoint is not None:
        how = "stopped" if result.stopped or result.step < config.steps else "finished"
        print(f"{how} at step {result.step}/{config.steps}; checkpoint {result.checkpoint}"
              + ("; continue with --resume" if how == "stopped" else ""), file=sys.stderr)
    return 0
