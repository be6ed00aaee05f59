"""The one exception type for problems a user can fix (bad file, bad config, too-small volume)."""

from __future__ import annotations

import os


class VoCoError(Exception):
    """A user-facing error: the message names the file (when there is one) and what is wrong with it.

    The CLI prints it without a traceback; the Slicer module shows it in an error dialog.
    """

    def __init__(self, message: str, path: str | os.PathLike | None = None) -> None:
        self.path = None if path is None else os.fspath(path)
        super().__init__(f"{self.path}: {message}" if self.path else message)
