"""Runs a ``vococore`` command in the background: reader threads feed a queue that the GUI drains from a timer
(or :meth:`BackgroundProcess.wait_for_completion` in scripts and tests); cancel ends the whole process tree.

No Qt here: the widget calls :meth:`BackgroundProcess.poll` from a QTimer, so callbacks run on the GUI thread.
Importable before vococore is installed (the module file imports it at load time).
"""

from __future__ import annotations

import enum
import json
import os
import queue
import re
import shutil
import subprocess
import threading
import time
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from VoCoSlicerLib.device import format_duration


class RunState(enum.Enum):
    """Where a background run stands."""

    NOT_STARTED = "not started"
    RUNNING = "running"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    CANCELLED = "cancelled"


@dataclass(frozen=True)
class ProgressEvent:
    """One JSON progress line of ``vococore ... --json-progress`` (format in ``vococore.utils.progress``)."""

    event: str
    stage: str
    step: int
    total: int
    elapsed_s: float
    eta_s: float | None
    metrics: dict[str, float] = field(default_factory=dict)

    @property
    def fraction(self) -> float:
        """Share of the stage done, 0..1 (0 when the total is unknown)."""
        return min(max(self.step / self.total, 0.0), 1.0) if self.total > 0 else 0.0

    def describe(self) -> str:
        """One line for the progress label, e.g. ``infer 12/40, about 3 min left``."""
        text = f"{self.stage} {self.step}/{self.total}" if self.total else self.stage
        if self.event == "end":
            return f"{text}, done in {format_duration(self.elapsed_s)}"
        return f"{text}, about {format_duration(self.eta_s)} left" if self.eta_s is not None else text

    def metric_text(self, *names: str) -> str:
        """The first of ``names`` present in the metrics, formatted (``-`` when none is reported)."""
        for name in names:
            if name in self.metrics:
                return f"{self.metrics[name]:.4g}"
        return "-"

    @classmethod
    def parse(cls, line: str) -> "ProgressEvent | None":
        """The event in ``line``, or None when the line is not a progress record (plain log output)."""
        text = line.strip()
        if not text.startswith("{"):
            return None
        try:
            data = json.loads(text)
        except ValueError:
            return None
        if not isinstance(data, dict) or data.get("event") not in ("start", "progress", "end"):
            return None
        eta = data.get("eta_s")
        return cls(event=data["event"], stage=str(data.get("stage", "")), step=int(data.get("step", 0)),
                   total=int(data.get("total", 0)), elapsed_s=float(data.get("elapsed_s", 0.0)),
                   eta_s=None if eta is None else float(eta),
                   metrics={str(k): float(v) for k, v in (data.get("metrics") or {}).items()})


# A tqdm progress-bar refresh on stderr, e.g. "pretrain:  50%|#####     | 1/2 [00:29<00:29, 29.0s/it]".
TQDM_BAR = re.compile(r"\|\s*\d+/\d+ \[")


def partial_files(path: Path) -> list[Path]:
    """Temporary files that vococore's atomic writer leaves beside ``path`` when it is killed mid-write."""
    return sorted(path.parent.glob(f".{path.name}.*.tmp*")) if path.parent.is_dir() else []


class BackgroundProcess:
    """A ``vococore`` subprocess whose stdout JSON progress and log lines reach callbacks when :meth:`poll` runs.

    ``outputs`` are files or folders the run creates: they must not exist beforehand, and after a cancel or
    failure neither they nor partial temporary files of vococore's atomic writer remain. ``prepare`` runs on a
    worker thread before the command starts (writing the exported CT, so the GUI thread does not wait on it; it
    must not touch VTK or MRML); ``temporary`` folders are removed when the run ends, after ``on_finished``.
    ``depends_on_scene`` marks runs whose result goes into the scene (closing the scene cancels only those).
    """

    def __init__(self, args: Sequence[str], outputs: Sequence[str | os.PathLike] = (),
                 on_progress: Callable[[ProgressEvent], None] | None = None,
                 on_log: Callable[[str], None] | None = None,
                 on_finished: Callable[[RunState], None] | None = None,
                 prepare: Callable[[], None] | None = None, temporary: Sequence[str | os.PathLike] = (),
                 env: dict[str, str] | None = None, depends_on_scene: bool = False) -> None:
        self.args = [str(a) for a in args]
        self.outputs = [Path(p) for p in outputs]
        self.prepare, self.env = prepare, env or {}
        self.temporary = [Path(p) for p in temporary]
        self.depends_on_scene = depends_on_scene
        self.on_progress, self.on_log, self.on_finished = on_progress, on_log, on_finished
        self.state = RunState.NOT_STARTED
        self.returncode: int | None = None
        self.stderr_tail: deque[str] = deque(maxlen=40)
        self._queue: queue.Queue[tuple[str, Any]] = queue.Queue()
        self._process: subprocess.Popen | None = None
        self._cancel_requested = False
        self._lock = threading.Lock()

    @property
    def pid(self) -> int | None:
        """Process id of the running command (None before start)."""
        return None if self._process is None else self._process.pid

    def start(self) -> "BackgroundProcess":
        """Launch the command; refuses when an output file already exists (it would be overwritten)."""
        from vococore.utils.errors import VoCoError

        if self.state is not RunState.NOT_STARTED:
            raise VoCoError(f"this run was already started ({self.state.value})")
        for path in self.outputs:
            if path.exists():
                raise VoCoError("output already exists; choose another name or delete it first", path)
        self.state = RunState.RUNNING
        threading.Thread(target=self._launch, daemon=True).start()
        return self

    def _launch(self) -> None:
        """Worker thread: ``prepare``, then the subprocess and its readers (unless cancelled meanwhile)."""
        try:
            if self.prepare is not None:
                self.prepare()
            with self._lock:
                if self._cancel_requested:
                    self._queue.put(("exit", -1))
                    return
                env = {**os.environ, "PYTHONUNBUFFERED": "1", **self.env}
                self._process = subprocess.Popen(self.args, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                                 stdin=subprocess.DEVNULL, text=True, bufsize=1, env=env,
                                                 start_new_session=os.name == "posix")
        except Exception as exc:  # reported on the GUI thread as a failed run with the reason
            self._queue.put(("err", f"could not start the run: {exc}"))
            self._queue.put(("exit", -1))
            return
        readers = [threading.Thread(target=self._read, args=(self._process.stdout, "out"), daemon=True),
                   threading.Thread(target=self._read, args=(self._process.stderr, "err"), daemon=True)]
        for reader in readers:
            reader.start()
        self._watch(readers)

    def _read(self, stream: Any, kind: str) -> None:
        for line in stream:
            self._queue.put((kind, line.rstrip("\n")))
        stream.close()

    def _watch(self, readers: list[threading.Thread]) -> None:
        assert self._process is not None
        code = self._process.wait()
        for reader in readers:
            reader.join()
        self._queue.put(("exit", code))

    def poll(self) -> bool:
        """Deliver everything the process printed since the last call; True while it is still running."""
        while True:
            try:
                kind, payload = self._queue.get_nowait()
            except queue.Empty:
                break
            if kind == "exit":
                self._finish(int(payload))
            elif kind == "out" and (event := ProgressEvent.parse(payload)) is not None:
                if self.on_progress:
                    self.on_progress(event)
            elif not TQDM_BAR.search(payload):  # the JSON lines already carry what the bar shows
                if kind == "err" and payload.strip():
                    self.stderr_tail.append(payload)
                if self.on_log and payload.strip():
                    self.on_log(payload)
        return self.state is RunState.RUNNING

    def _finish(self, code: int) -> None:
        self.returncode = code
        if self._cancel_requested:
            self.state = RunState.CANCELLED
        else:
            self.state = RunState.SUCCEEDED if code == 0 else RunState.FAILED
        if self.state is not RunState.SUCCEEDED:
            self._remove_outputs()
        try:
            if self.on_finished:
                self.on_finished(self.state)
        finally:
            for folder in self.temporary:
                shutil.rmtree(folder, ignore_errors=True)

    def cancel(self, timeout_s: float = 5.0) -> None:
        """End the process and all its children (terminate, then kill what is left) within ``timeout_s``."""
        import psutil

        if self.state is not RunState.RUNNING:
            return
        with self._lock:
            self._cancel_requested = True
            if self._process is None:  # still preparing: the worker thread ends without starting the command
                return
        try:
            parent = psutil.Process(self._process.pid)
            tree = parent.children(recursive=True) + [parent]
        except psutil.NoSuchProcess:
            tree = []
        for proc in tree:
            try:
                proc.terminate()
            except psutil.NoSuchProcess:
                pass
        _, alive = psutil.wait_procs(tree, timeout=timeout_s / 2)
        for proc in alive:
            try:
                proc.kill()
            except psutil.NoSuchProcess:
                pass
        psutil.wait_procs(alive, timeout=timeout_s / 2)
        self._remove_outputs()

    def _remove_outputs(self) -> None:
        for path in self.outputs:
            if path.is_dir():
                shutil.rmtree(path, ignore_errors=True)
            for leftover in [path, *partial_files(path)]:
                try:
                    leftover.unlink()
                except FileNotFoundError:
                    pass

    def wait_for_completion(self, timeout_s: float | None = None, interval_s: float = 0.05) -> RunState:
        """Block (polling) until the run ends, for scripts and tests; cancels it if ``timeout_s`` passes."""
        deadline = None if timeout_s is None else time.monotonic() + timeout_s
        while self.poll():
            if deadline is not None and time.monotonic() > deadline:
                self.cancel()
                deadline = None
            time.sleep(interval_s)
        return self.state

    def error_message(self) -> str:
        """What went wrong, for an error dialog: the last stderr lines of a failed run."""
        if self.state is not RunState.FAILED:
            return ""
        tail = "\n".join(list(self.stderr_tail)[-8:])
        return f"{' '.join(self.args[:4])} ... exited with status {self.returncode}:\n{tail}"
