"""Who may use the studio and which paths it accepts: an access token whenever the server listens beyond this
machine, and one-line reasons for paths that do not exist, cannot be read, or would overwrite a file unasked."""

from __future__ import annotations

import hmac
import os
import secrets
from pathlib import Path
from typing import Any

from vococore.utils.errors import VoCoError

LOCAL_HOSTS = frozenset({"127.0.0.1", "localhost", "::1"})
COOKIE = "voco_studio_token"


def needs_token(host: str) -> bool:
    """True when ``host`` makes the server reachable from other machines."""
    return host not in LOCAL_HOSTS


def new_token() -> str:
    """A fresh unguessable token (generated at every start, printed once)."""
    return secrets.token_urlsafe(24)


def token_middleware(token: str) -> Any:
    """aiohttp middleware: a request passes with ``?token=`` (which also sets a cookie for the page's later requests,
    the websocket included) or with that cookie; any other request gets 403."""
    from aiohttp import web

    @web.middleware
    async def check(request: web.Request, handler: Any) -> web.StreamResponse:
        given = request.query.get("token") or request.cookies.get(COOKIE) or ""
        if not hmac.compare_digest(given.encode(), token.encode()):
            return web.Response(status=403, text="VoCo Studio: this server needs the access token printed at start "
                                                 "(open the URL with ?token=...)\n")
        response = await handler(request)
        if request.query.get("token") and isinstance(response, web.Response):
            response.set_cookie(COOKIE, token, httponly=True, samesite="Strict")
        return response

    return check


def readable_file(text: str, what: str = "input") -> Path:
    """The existing, readable file a user typed, or a one-line VoCoError naming it and the problem."""
    if not text or not text.strip():
        raise VoCoError(f"{what}: no path given")
    path = Path(text.strip()).expanduser()
    if not path.exists():
        raise VoCoError(f"{path}: no such file")
    if not path.is_file():
        raise VoCoError(f"{path}: not a file")
    if not os.access(path, os.R_OK):
        raise VoCoError(f"{path}: not readable")
    return path


def writable_output(text: str, overwrite: bool = False, suffix: str = "") -> Path:
    """An output path whose folder exists and is writable, refusing an existing file unless ``overwrite``."""
    if not text or not text.strip():
        raise VoCoError("output: no path given")
    path = Path(text.strip()).expanduser()
    if suffix and not path.name.endswith(suffix):
        raise VoCoError(f"{path}: the output must end in {suffix}")
    if path.exists() and not overwrite:
        raise VoCoError(f"{path}: already exists; tick 'overwrite' to replace it")
    if path.is_dir():
        raise VoCoError(f"{path}: is a folder")
    if not path.parent.is_dir() or not os.access(path.parent, os.W_OK):
        raise VoCoError(f"{path.parent}: folder missing or not writable")
    return path
