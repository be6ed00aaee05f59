"""``vococore sample-data``: list the registered real CT samples, or print a dataset's verified local path."""

from __future__ import annotations

import argparse



def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("sample-data", help="list or fetch the public sample CT (SHA-256 verified)")
    p.add_argument("name", nargs="?", help="dataset to fetch; omit to list all")
    p.add_argument("--mirror", help="local folder tried first (default: $VOCOCORE_SAMPLE_DATA_MIRROR)")
    p.add_argument("--no-download", action="store_true", help="fail instead of downloading")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from vococore.io import sampledata

    if args.name is None:
        for ds in sampledata.registry().values():
            size = sum(f.size for f in ds.files) / 1e6
            print(f"{ds.name:24s} {size:6.1f} MB  {ds.license:13s} {ds.description}")
        return 0
    print(sampledata.fetch(args.name, mirror=args.mirror, download=not args.no_download))
    return 0
