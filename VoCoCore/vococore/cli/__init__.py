"""The ``vococore`` command line: each subcommand lives in its own module with ``register(subparsers)``.

Commands parse arguments and call the library; a :class:`VoCoError`, an option the parser refuses, or an
operating-system error (read-only folder, full disk) is printed as one line, exit status 2. Command modules import
only the standard library at the top, and the heavy packages (torch, MONAI, SimpleITK) inside ``run``, so that
``--help`` and ``--version`` answer at once.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import os
import sys

# OpenMP threads sleep rather than spin while they wait (set before torch loads; a user's value is kept): spinning
# makes small networks many times slower on a busy or small CPU.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

from vococore.cli.options import OneLineParser
from vococore.utils.errors import VoCoError, os_error_text
from vococore.utils.monai_extras import hold_back_monai_extras

# Subcommand modules under vococore.cli, in the order --help lists them.
COMMANDS = ["info", "sample_data", "position", "pretrain", "export_encoder", "finetune", "infer", "evaluate"]


def build_parser() -> argparse.ArgumentParser:
    """The top-level parser with every subcommand registered."""
    from vococore import __version__

    parser = OneLineParser(prog="vococore", description="VoCo pretraining, fine-tuning and inference "
                                     "for 3D CT (MONAI). World coordinates are RAS mm.")
    parser.add_argument("--version", action="version", version=f"vococore {__version__}")
    parser.add_argument("-v", "--verbose", action="store_true", help="log debug messages")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name in COMMANDS:
        importlib.import_module(f"vococore.cli.{name}").register(sub)
    parser.set_defaults(subparsers=sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``vococore`` console script."""
    hold_back_monai_extras()  # a process the CLI runs: MONAI without pyplot and scipy.signal (1 s of start-up)
    parser = build_parser()
    args, extra = parser.parse_known_args(argv)
    if extra:  # said by the subcommand's parser, so the line names the command
        args.subparsers.choices[args.command].error(f"unrecognized arguments: {' '.join(extra)}")
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.INFO,
                        format="%(levelname)s %(name)s: %(message)s")
    # Library warnings (nibabel, PyYAML, MONAI, torch) go to the log, shown only with --verbose.
    logging.captureWarnings(True)
    logging.getLogger("py.warnings").setLevel(logging.DEBUG if args.verbose else logging.ERROR)
    try:
        return int(args.func(args) or 0)
    except VoCoError as exc:
        print(f"vococore {args.command}: error: {exc}", file=sys.stderr)
        return 2
    except OSError as exc:  # a write or read the library did not wrap: still one line naming the path
        where = exc.filename or exc.filename2
        print(f"vococore {args.command}: error: {where + ': ' if where else ''}{os_error_text(exc)}",
              file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"vococore {args.command}: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
