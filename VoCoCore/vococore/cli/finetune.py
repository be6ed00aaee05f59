"""``vococore finetune``: train a segmentation model from VoCo weights (or from scratch) and package the best."""

from __future__ import annotations

import argparse
import json

from vococore.cli.pretrain import add_overrides_argument, parse_overrides


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("finetune", help="fine-tune a SwinUNETR/BasicUNet segmentation model from a YAML config",
                       description="Writes config.yaml, checkpoints/last.pt and best.pt, best.vocomodel, "
                       "metrics.jsonl, validation.jsonl and tensorboard/ into the config's output_dir.")
    p.add_argument("--config", required=True,
                   help="YAML file, or a packaged config name: finetune_small (CPU demo), finetune_swin_B")
    p.add_argument("--resume", action="store_true", help="continue from output_dir/checkpoints/last.pt")
    p.add_argument("--json-progress", action="store_true", help="print JSON progress lines on stdout")
    add_overrides_argument(p, "train.steps=20 output_dir=/tmp/run")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from vococore.segmentation.finetune import load_finetune_config, run_finetune
    from vococore.utils.atomic import check_output_dir

    config = load_finetune_config(args.config, parse_overrides(args.overrides))
    check_output_dir(config.output_dir)  # before data is read or a model built
    result = run_finetune(config, resume=args.resume, json_progress=args.json_progress)
    summary = {"event": "result", "step": result.step, "best_mean_dice": result.best_dice,
               "best_step": result.best_step, "package": str(result.package) if result.package else None,
               "last_checkpoint": str(result.last_checkpoint), "stopped": result.stopped}
    how = "stopped" if result.stopped else "finished"
    print(json.dumps(summary) if args.json_progress else
          f"{how} at step {result.step}; best mean Dice {result.best_dice:.4f} (step {result.best_step}); "
          f"package: {result.package}" + ("; continue with --resume" if result.stopped else ""))
    return 0
