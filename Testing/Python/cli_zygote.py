"""Runs ``vococore`` command lines in forked child processes of one warm interpreter, for the suite's CLI tests.

Each command is a real process (own pid, exit status, stdout/stderr files, working folder and environment)
entering the same ``vococore.cli.main`` as the console script; forking from a parent that already imported torch,
MONAI and ITK (and ran nothing with them, so no OpenMP pool exists to break in the child) saves the 2.5-3 s of
start-up each ``python -m vococore`` pays on the 2-core CI machine. What a library reads only when it loads
(``OMP_*`` for libgomp, torch's thread count) comes from the environment the server started with, which is the
test process's own. Tests of signals, streamed output, torchrun and the console script itself start real
``python -m vococore`` processes instead.

Protocol: one JSON object per line on stdin ({"argv", "cwd", "stdout", "stderr", "env"}); the server answers
{"pid"} once the child runs and {"rc"} when it ended. :func:`warm_cli` is the client.
"""

from __future__ import annotations

import atexit
import contextlib
import functools
import json
import os
import select
import signal
import subprocess
import sys
import tempfile
import traceback
from pathlib import Path


def _child(case: dict) -> int:
    os.chdir(case["cwd"])
    os.environ.clear()
    os.environ.update(case["env"])
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
    atexit._run_exitfuncs()  # what the interpreter runs at exit (os._exit below skips it)
    sys.stdout.flush()
    sys.stderr.flush()
    return rc


def serve() -> None:
    """Answer cases from stdin until it closes."""
    import SimpleITK  # noqa: F401  (warm imports only: nothing is computed before forking)
    import nibabel  # noqa: F401
    import torch  # noqa: F401

    from vococore.utils.monai_extras import hold_back_monai_extras

    hold_back_monai_extras()  # MONAI as the console script imports it
    import monai  # noqa: F401

    import vococore.cli  # noqa: F401
    import vococore.pretraining.run  # noqa: F401
    import vococore.segmentation.inference  # noqa: F401

    for line in sys.stdin:
        case = json.loads(line)
        sys.stdout.flush()
        pid = os.fork()
        if pid == 0:
            os._exit(_child(case))
        sys.stdout.write(json.dumps({"pid": pid}) + "\n")
        sys.stdout.flush()
        _, status = os.waitpid(pid, 0)
        sys.stdout.write(json.dumps({"rc": os.waitstatus_to_exitcode(status)}) + "\n")
        sys.stdout.flush()


class WarmCli:
    """A running server (see the module docstring); :meth:`run` is ``subprocess.run(["vococore", ...])``."""

    def __init__(self) -> None:
        here = str(Path(__file__).resolve().parent)
        env = {**os.environ, "PYTHONPATH": os.pathsep.join([here, os.environ.get("PYTHONPATH", "")])}
        # unbuffered bytes: a buffered reader could take both reply lines at once, and select would then wait on
        # an empty pipe for the second
        self.server = subprocess.Popen([sys.executable, __file__], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                       bufsize=0, env=env)

    def _reply(self, timeout: float | None) -> dict:
        ready, _, _ = select.select([self.server.stdout], [], [], timeout)
        if not ready:
            raise TimeoutError
        line = self.server.stdout.readline()  # raw: byte by byte, nothing read past the line
        if not line:
            raise RuntimeError(f"the warm vococore server ended (status {self.server.poll()})")
        return json.loads(line)

    def run(self, argv: list[str], cwd: str | os.PathLike | None = None, env: dict[str, str] | None = None,
            timeout: float = 600) -> subprocess.CompletedProcess:
        """Run ``vococore ARGV`` in a forked child: its exit status and its whole stdout and stderr as text."""
        with tempfile.TemporaryDirectory(prefix="vococore-cli-") as folder:
            out, err = Path(folder, "stdout"), Path(folder, "stderr")
            case = {"argv": [str(a) for a in argv], "cwd": str(cwd or os.getcwd()), "stdout": str(out),
                    "stderr": str(err), "env": dict(os.environ if env is None else env)}
            command = ["vococore", *case["argv"]]
            line = memoryview((json.dumps(case) + "\n").encode())
            while line:  # a raw pipe may take a long line in parts
                line = line[self.server.stdin.write(line):]
            pid = self._reply(60)["pid"]
            try:
                rc = self._reply(timeout)["rc"]
            except TimeoutError:
                with contextlib.suppress(ProcessLookupError):  # it may have ended meanwhile
                    os.kill(pid, signal.SIGKILL)
                self._reply(60)
                raise subprocess.TimeoutExpired(command, timeout) from None
            return subprocess.CompletedProcess(command, rc, out.read_text(), err.read_text())

    def close(self) -> None:
        self.server.stdin.close()
        self.server.wait(timeout=60)


@functools.lru_cache(maxsize=1)
def warm_cli() -> WarmCli:
    """This test process's server, started on first use and stopped when the process exits."""
    cli = WarmCli()
    atexit.register(cli.close)
    return cli


if __name__ == "__main__":
    serve()
