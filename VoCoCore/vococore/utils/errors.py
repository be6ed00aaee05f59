"""The one exception type for problems a user can fix (bad file, bad config, too-small volume), and the helpers
that turn third-party errors (OS, ITK, torch) into its one line."""

from __future__ import annotations

import os
import re


class VoCoError(Exception):
    """A user-facing error: the message names the file (when there is one) and what is wrong with it.

    The CLI prints it without a traceback; the Slicer module shows it in an error dialog.
    """

    def __init__(self, message: str, path: str | os.PathLike | None = None) -> None:
        self.path = None if path is None else os.fspath(path)
        message = " ".join(str(message).split())  # always one line, whatever a library put in it
        super().__init__(f"{self.path}: {message}" if self.path else message)


def first_line(exc: BaseException) -> str:
    """The most telling line of a (possibly multi-line) library error: ITK's "Description:", else the last."""
    lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
    for line in reversed(lines):
        if line.lower().startswith("description:"):
            return line.split(":", 1)[1].strip()
    return lines[-1] if lines else type(exc).__name__


def os_error_text(exc: OSError) -> str:
    """An OSError's cause in words, without repeating its file name (the caller names the file)."""
    return exc.strerror or first_line(exc)


_GLOBAL = re.compile(r"GLOBAL ([\w.]+)")


def torch_load_problem(exc: BaseException, pickled: bool = False) -> str:
    """Why ``torch.load(weights_only=True)`` refused a file, in our words: never torch's advice to unpickle.
    ``pickled``: the file is a pickle stream (so an unpickling error means it holds more than tensors)."""
    text = str(exc)
    found = _GLOBAL.search(text)
    if found:
        return f"refuses to unpickle: the file asks for {found.group(1)}, not plain tensors"
    line = next((ln.strip() for ln in text.splitlines() if ln.strip() and "weights_only" not in ln), "")
    if pickled and type(exc).__name__ == "UnpicklingError" and "truncated" not in text:
        return f"refuses to unpickle: the file holds more than plain tensors ({line})"
    return f"not a torch file, or damaged or truncated ({type(exc).__name__}{': ' + line if line else ''})"


def file_kind(path: str | os.PathLike) -> str | None:
    """``"package"`` for a safetensors file (our .vocomodel), ``"torch"`` for a torch zip file, ``"pickle"`` for a
    pickle stream, else None: lets a
    loader say "a model package where a checkpoint is expected" instead of a parser error."""
    try:
        with open(path, "rb") as fh:
            head = fh.read(9)
    except OSError:
        return None
    if head[:4] == b"PK\x03\x04":
        return "torch"
    if len(head) == 9 and head[8:9] == b"{" and 0 < int.from_bytes(head[:8], "little") < os.path.getsize(path):
        return "package"
    if head[:1] == b"\x80":  # pickle protocol 2 and later: a legacy torch file or a plain pickle
        return "pickle"
    return None
