"""``vococore evaluate``: Dice and HD95 (mm) per label between a predicted and a reference labelmap."""

from __future__ import annotations

import argparse
import json

from vococore.cli.options import label_id, label_map


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("evaluate", help="Dice and HD95 (mm) per label of a prediction against a reference",
                       description="Compares in world coordinates: when the grids differ the prediction is "
                       "resampled onto the reference grid by world position (nearest neighbour).")
    p.add_argument("--pred", required=True, help="predicted labelmap (.nii.gz, .nrrd, .seg.nrrd, ...)")
    p.add_argument("--ref", required=True, help="reference labelmap")
    p.add_argument("--labels", type=label_id, nargs="+", help="label values to score (default: all present)")
    p.add_argument("--label-table", help="names for label values: 'totalseg' or a JSON file {id: name}")
    p.add_argument("--json", action="store_true", help="print one JSON object")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from vococore.segmentation.evaluate import evaluate_files, format_scores, scores_as_dicts

    names = None
    if args.label_table:
        from vococore.segmentation.data import label_table

        names = label_table(args.label_table)
    scores = evaluate_files(args.pred, args.ref, args.labels, names)
    if args.json:
        print(json.dumps({"pred": args.pred, "ref": args.ref, "labels": scores_as_dicts(scores)}))
    else:
        print(format_scores(scores))
    return 0
