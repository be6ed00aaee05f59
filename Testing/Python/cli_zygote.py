"""Runs ``vococore`` command lines in forked child processes of one warm interpreter, for the suite's CLI tests.

Each command is a real process (own pid, exit status, stdout/stderr files, working folder and environment)
entering the same ``vococore.cli.main`` as the console script; forking from a parent that already imported torch,
MONAI and ITK (and ran nothing with them, so no OpenMP pool exists to break in the child) saves the 2.5-3 s of
start-up each ``python -m vococore`` pays on the 2-core CI machine. What a library reads only when it loads
(``OMP_*`` for libgomp) comes from the environment the server started with, which is the test process's own;
a case's ``OMP_NUM_THREADS`` still sets torch's thread count, as it would in a fresh process.
:meth:`WarmCli.start` streams a child's stdout through a named pipe while it runs, for the tests that send it a
real signal midway. Tests of torchrun, of the Slicer runner and of the console script itself
start real ``python -m vococore`` processes instead.

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
import threading
import traceback
from pathlib import Path


def _child(case: dict) -> int:
    # the output files first (absolute paths), so that whatever fails after lands in the child's own stderr and a
    # reader waiting on a named-pipe stdout meets its writer; stdout last: a named pipe waits for its reader
    for fd, name in ((2, case["stderr"]), (1, case["stdout"])):
        os.dup2(os.open(name, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644), fd)
    try:
        os.chdir(case["cwd"])
        os.environ.clear()
        os.environ.update(case["env"])
        if "OMP_NUM_THREADS" in case["env"]:  # what a fresh process's OpenMP would take from it when it loads
            import torch

            torch.set_num_threads(int(case["env"]["OMP_NUM_THREADS"]))
        from vococore.cli import main

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
    import torch._dynamo  # noqa: F401  (each torch.optim step imports it: 2.1 s of a training child's start-up)

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
            rc = 1
            try:
                rc = _child(case)
            finally:  # whatever failed, the fork never returns to this loop
                os._exit(rc)
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

    def _send(self, argv: list[str], cwd: str | os.PathLike | None, env: dict[str, str] | None, out: Path,
              err: Path) -> int:
        """Hand one command line to the server; the child's pid."""
        case = {"argv": [str(a) for a in argv], "cwd": str(cwd or os.getcwd()), "stdout": str(out),
                "stderr": str(err), "env": dict(os.environ if env is None else env)}
        line = memoryview((json.dumps(case) + "\n").encode())
        while line:  # a raw pipe may take a long line in parts
            line = line[self.server.stdin.write(line):]
        return self._reply(60)["pid"]

    def _wait(self, pid: int, command: list[str], timeout: float) -> int:
        """The child's exit status; past ``timeout`` it is killed and ``TimeoutExpired`` raised."""
        try:
            return self._reply(timeout)["rc"]
        except TimeoutError:
            with contextlib.suppress(ProcessLookupError):  # it may have ended meanwhile
                os.kill(pid, signal.SIGKILL)
            self._reply(60)
            raise subprocess.TimeoutExpired(command, timeout) from None

    def run(self, argv: list[str], cwd: str | os.PathLike | None = None, env: dict[str, str] | None = None,
            timeout: float = 600) -> subprocess.CompletedProcess:
        """Run ``vococore ARGV`` in a forked child: its exit status and its whole stdout and stderr as text."""
        command = ["vococore", *map(str, argv)]
        with tempfile.TemporaryDirectory(prefix="vococore-cli-") as folder:
            out, err = Path(folder, "stdout"), Path(folder, "stderr")
            rc = self._wait(self._send(argv, cwd, env, out, err), command, timeout)
            return subprocess.CompletedProcess(command, rc, out.read_text(), err.read_text())

    def start(self, argv: list[str], env: dict[str, str] | None = None) -> WarmProcess:
        """Start ``vococore ARGV`` in a forked child and return while it runs, its stdout readable line by line
        (``subprocess.Popen`` with ``stdout=PIPE, text=True``). The server runs one child at a time."""
        return WarmProcess(self, argv, env)

    def close(self) -> None:
        self.server.stdin.close()
        self.server.wait(timeout=60)


class WarmProcess:
    """A running child of :meth:`WarmCli.start`: ``pid``, ``stdout`` (a named pipe), ``send_signal``,
    ``communicate`` and ``returncode``, as on ``subprocess.Popen``."""

    def __init__(self, cli: WarmCli, argv: list[str], env: dict[str, str] | None) -> None:
        self._cli, self.args, self.returncode = cli, ["vococore", *map(str, argv)], None
        self._folder = tempfile.TemporaryDirectory(prefix="vococore-cli-")
        out, self._err = Path(self._folder.name, "stdout"), Path(self._folder.name, "stderr")
        os.mkfifo(out)
        self.pid = cli._send(argv, None, env, out, self._err)
        self.stdout = open(out, encoding="utf-8")  # meets the child's open for writing

    def send_signal(self, sig: int) -> None:
        """``os.kill`` the child, as ``Popen.send_signal``."""
        os.kill(self.pid, sig)

    def communicate(self, timeout: float = 600) -> tuple[str, str]:
        """The rest of stdout and the whole of stderr once the child ended; sets :attr:`returncode`."""
        # past the timeout the child is killed, which ends the pipe; its status is then -9 (SIGKILL)
        deadline = threading.Timer(timeout, self.send_signal, (signal.SIGKILL,))
        deadline.start()
        try:
            rest = self.stdout.read()  # to the end of the pipe: the child closed it by ending
        finally:
            deadline.cancel()
        self.stdout.close()
        self.returncode = self._cli._wait(self.pid, self.args, timeout)
        err = self._err.read_text()
        self._folder.cleanup()
        return rest, err


@functools.lru_cache(maxsize=1)
def warm_cli() -> WarmCli:
    """This test process's server, started on first use and stopped when the process exits."""
    cli = WarmCli()
    atexit.register(cli.close)
    return cli


if __name__ == "__main__":
    serve()
