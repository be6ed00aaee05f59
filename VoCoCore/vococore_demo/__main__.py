"""``python -m vococore_demo``: run the main job (pretrain, fine-tune, infer, evaluate, positions, report)."""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

from vococore.utils.errors import VoCoError
from vococore.utils.monai_extras import hold_back_monai_extras
from vococore_demo.pipeline import DemoSettings, run_demo


def main(argv: list[str] | None = None) -> int:
    hold_back_monai_extras()  # MONAI without pyplot and scipy.signal; the report imports pyplot itself later
    parser = argparse.ArgumentParser(prog="python -m vococore_demo", description=__doc__)
    parser.add_argument("--output", type=Path, default=Path("output/demo"), help="output folder (default: %(default)s)")
    parser.add_argument("--quick", action="store_true", help="smallest settings: a few steps per stage (tests)")
    parser.add_argument("--pretrain-steps", type=int, help="override the pretraining steps")
    parser.add_argument("--finetune-steps", type=int, help="override the fine-tuning steps of each run")
    parser.add_argument("--device", default="auto", help="auto | cpu | cuda (default: auto)")
    parser.add_argument("--overwrite", action="store_true", help="replace an existing output folder")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    make = DemoSettings.quick if args.quick else DemoSettings
    settings = make(output=args.output, device=args.device, overwrite=args.overwrite)
    if args.pretrain_steps:
        settings.pretrain_steps = args.pretrain_steps
    if args.finetune_steps:
        settings.finetune_steps = args.finetune_steps
    try:
        run_demo(settings)
    except VoCoError as exc:
        print(f"demo: error: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
