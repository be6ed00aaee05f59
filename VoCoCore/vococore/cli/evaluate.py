"""``vococore evaluate``: Dice and HD95 (mm) per label between a predicted and a reference labelmap."""

from __future__ import annotations

import argparse
import json

from vococore.cli.options import label_id, label_map

TABLE_HELP = "'totalseg', a JSON file {id: name}, or a model package (.vocomodel) whose labels the map carries"


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("evaluate", help="Dice and HD95 (mm) per label of a prediction against a reference",
                       description="Compares in world coordinates: when the grids differ the prediction is "
                       "resampled onto the reference grid by world position (nearest neighbour). Prediction "
                       "labels are matched to reference labels by value, by --map, or by name when both sides "
                       "have names (--pred-labels, --ref-labels). A label only in the prediction is reported as "
                       "absent from the reference and left out of the mean.")
    p.add_argument("--pred", required=True, help="predicted labelmap (.nii.gz, .nrrd, .seg.nrrd, ...)")
    p.add_argument("--ref", required=True, help="reference labelmap")
    p.add_argument("--labels", type=label_id, nargs="+", help="reference label values to score (default: all "
                                                               "present)")
    p.add_argument("--label-table", help=f"names for the label values of both maps: {TABLE_HELP}")
    p.add_argument("--pred-labels", help=f"names of the prediction's values: {TABLE_HELP}")
    p.add_argument("--ref-labels", help=f"names of the reference's values: {TABLE_HELP}")
    p.add_argument("--map", type=label_map, nargs="+", action="extend", default=[], metavar="PRED:REF",
                   help="score prediction value PRED as reference value REF, e.g. --map 1:5 2:1")
    p.add_argument("--json", action="store_true", help="print one JSON object")
    p.set_defaults(func=run)


def _names(table: str | None) -> dict[int, str] | None:
    """Label names from a table argument (see TABLE_HELP)."""
    if table is None:
        return None
    if table.endswith(".vocomodel"):
        from vococore.segmentation.label_checks import package_label_names

        return package_label_names(table)
    from vococore.segmentation.data import label_table

    return label_table(table)


def run(args: argparse.Namespace) -> int:
    from vococore.segmentation.evaluate import evaluate_files, format_scores, scores_as_dicts
    from vococore.segmentation.label_checks import names_to_map
    from vococore.utils.errors import VoCoError

    shared = _names(args.label_table)
    pred_names, ref_names = _names(args.pred_labels) or shared, _names(args.ref_labels) or shared
    pred_map = dict(args.map)
    if len(pred_map) != len(args.map):
        raise VoCoError("--map names one prediction value twice")
    if not pred_map and args.pred_labels and ref_names:
        pred_map = names_to_map(pred_names or {}, ref_names)
    scores = evaluate_files(args.pred, args.ref, args.labels, ref_names, pred_map=pred_map)
    if args.json:
        print(json.dumps({"pred": args.pred, "ref": args.ref, "map": pred_map, "labels": scores_as_dicts(scores)}))
    else:
        print(format_scores(scores))
    return 0
