"""``vococore export-encoder``: the release file of a pretraining checkpoint (MONAI SwinUNETR encoder keys)."""

from __future__ import annotations

import argparse


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("export-encoder", help="write the pretrained encoder as a flat MONAI-named fp32 dict "
                                              "(145 tensors for Swin), loadable by SwinUNETR and the official code")
    p.add_argument("checkpoint", help="a vococore pretraining checkpoint (e.g. output/checkpoints/last.pt)")
    p.add_argument("out", help="output .pt file")
    p.add_argument("--overwrite", action="store_true", help="replace an existing output file")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from vococore.pretraining.export import export_encoder
    from vococore.utils.atomic import check_writable, refuse_inputs_as_outputs

    refuse_inputs_as_outputs([args.checkpoint], [args.out])
    check_writable(args.out, args.overwrite)  # before the checkpoint is read

    print(export_encoder(args.checkpoint, args.out, overwrite=args.overwrite).text())
    return 0
