"""``vococore info``: geometry, HU statistics and crop-region fit of CT files or DICOM folders."""

from __future__ import annotations

import argparse
import json


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("info", help="show geometry, HU range and VoCo crop-region fit of CT volumes")
    p.add_argument("paths", nargs="+", help="CT files (.nii/.nii.gz/.nrrd/.nhdr/.mha/.mhd) or DICOM folders")
    p.add_argument("--series-uid", help="DICOM SeriesInstanceUID to read when a folder holds several")
    p.add_argument("--json", action="store_true", help="print one JSON object per volume")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from vococore.io import read_volume
    from vococore.preprocessing.describe import describe, format_info

    for i, path in enumerate(args.paths):
        info = describe(read_volume(path, series_uid=args.series_uid))
        if args.json:
            print(json.dumps(info.as_dict()))
        else:
            print(("\n" if i else "") + format_info(info))
    return 0
