"""``vococore position``: predicted vs true base-crop overlaps of sub-volumes of a CT under a pretrained VoCo model."""

from __future__ import annotations

import argparse
import os

from vococore.cli.options import count, finite_float


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("position", help="predict where sub-volumes sit in the VoCo base-crop grid (JSON + PNG)",
                       description="For each sub-volume, the model's predicted overlap with every base crop (the "
                       "ReLU-cosine logits of training, each in [0, 1], not normalised to sum to 1) beside the true "
                       "overlap from the geometry.")
    p.add_argument("--model", required=True, help="VoCo pretraining checkpoint (keys model, backbone, recipe)")
    p.add_argument("--input", required=True, help="CT file or DICOM folder")
    p.add_argument("--point", nargs=3, type=finite_float, action="append", metavar=("R", "A", "S"), default=[],
                   help="centre of a sub-volume in RAS mm (repeatable)")
    p.add_argument("--random", type=count, default=0, metavar="N", help="also predict N random sub-volumes")
    p.add_argument("--seed", type=int, default=0, help="seed of the random sub-volumes (default 0)")
    p.add_argument("--output", required=True, help="folder for positions.json and position_NNN.png")
    p.add_argument("--overwrite", action="store_true", help="replace existing output files")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    import numpy as np

    from vococore.io import read_volume
    from vococore.pretraining.model import load_voco_model
    from vococore.pretraining.position import predict_positions, report_paths, write_position_report
    from vococore.utils.atomic import refuse_inputs_as_outputs

    refuse_inputs_as_outputs([args.model, args.input], [args.output])
    report_paths(args.output, len(args.point) + max(args.random, 0), args.overwrite)  # refuse before any work
    model = load_voco_model(args.model)
    volume = read_volume(args.input)
    result = predict_positions(model, volume, points_ras=np.array(args.point, dtype=np.float64).reshape(-1, 3),
                               n_random=args.random, seed=args.seed)
    run_info = {"model": os.path.abspath(args.model), "input": os.path.abspath(args.input),
                "points_ras": args.point, "random": args.random, "seed": args.seed}
    paths = write_position_report(result, args.output, overwrite=args.overwrite, extra={"run": run_info})
    for k, sub in enumerate(result.subvolumes):
        best = int(np.argmax(sub.predicted))
        print(f"sub-volume {k} at RAS {np.round(sub.center_ras, 1).tolist()}: predicted base {best} "
              f"({sub.predicted[best]:.3f}), true overlaps " +
              ", ".join(f"{i}:{v:.3f}" for i, v in enumerate(sub.true) if v > 0))
    print(f"wrote {paths[0]} and {len(paths) - 1} PNG(s)")
    return 0
