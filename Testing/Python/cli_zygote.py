"""Runs ``vococore`` command lines in forked child processes of one warm interpreter, for the bad-input corpus.

Each case is a real process (own exit status, own stdout/stderr files, own working folder) entering the same
``vococore.cli.main`` as the console script; forking from a parent that already imported torch, MONAI and ITK
(and ran nothing with them, so no OpenMP pool exists to break in the child) saves about 5 s of start-up per case.
Protocol: one JSON object per line on stdin ({"argv", "cwd", "stdout", "stderr", "env"}), one {"rc"} back.
"""

from __future__ import annotations

import json
import os
import sys
import traceback


def _child(case: dict) -> int:
    os.chdir(case["cwd"])
    os.environ.update(case.get("env", {}))
    for fd, name in ((1, case["stdout"]), (2, case["stderr"])):
        os.dup2(os.open(name, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644), fd)
    from vococore.cli import main

    try:
        rc = main(case["argv"])
    except SystemExit as exc:  # argparse exits itself (usage errors, --help)
        rc = exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
    except BaseException:  # what the console script would print: a traceback, status 1
        traceback.print_exc()
        rc = 1
    sys.stdout.flush()
    sys.stderr.flush()
    return rc


def serve() -> None:
    """Answer cases from stdin until it closes."""
    import SimpleITK  # noqa: F401  (warm imports only: nothing is computed before forking)
    import monai  # noqa: F401
    import nibabel  # noqa: F401
    import torch  # noqa: F401

    import vococore.cli  # noqa: F401
    import vococore.segmentation.inference  # noqa: F401
    import vococore.pretraining.run  # noqa: F401

    for line in sys.stdin:
        case = json.loads(line)
        sys.stdout.flush()
        pid = os.fork()
        if pid == 0:
            os._exit(_child(case))
        _, status = os.waitpid(pid, 0)
        rc = os.waitstatus_to_exitcode(status)
        sys.stdout.write(json.dumps({"rc": rc}) + "\n")
        sys.stdout.flush()


if __name__ == "__main__":
    serve()
