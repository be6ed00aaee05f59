"""Shared by the VoCo Studio browser tests: start the real server (``python -m VoCoStudio``) in a subprocess and
drive Debian's Chromium through Playwright. Under CI=true nothing here skips: a missing piece fails the test."""

from __future__ import annotations

import os
import re
import shutil
import socket
import subprocess
import sys
import time
from contextlib import contextmanager
from pathlib import Path

import pytest

CHROMIUM = os.environ.get("VOCO_STUDIO_CHROMIUM", "/usr/bin/chromium")
SCREENSHOTS = Path(__file__).resolve().parents[2] / "output" / "studio-screenshots"  # kept after the run
URL_LINE = re.compile(r"VoCo Studio: (http://\S+)")


def in_ci() -> bool:
    """True on CI (CI=true), where the browser tests must run."""
    return os.environ.get("CI", "").lower() in ("1", "true", "yes")


def require_browser_stack() -> None:
    """Skip (outside CI only) with a one-line reason when trame-slicer, Playwright or Chromium is missing."""
    missing = []
    for module in ("trame_slicer", "playwright"):
        try:
            __import__(module)
        except ImportError:
            missing.append(f"python package {module}")
    if not (Path(CHROMIUM).is_file() or shutil.which(CHROMIUM)):
        missing.append(f"Debian chromium at {CHROMIUM}")
    if missing:
        reason = ("VoCo Studio browser tests need " + ", ".join(missing)
                  + " (python packages: requirements/ci.txt; chromium: .ci/run on CI)")
        if in_ci():
            pytest.fail(reason)
        pytest.skip(reason, allow_module_level=True)


def free_port() -> int:
    """A TCP port nobody listens on now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


REPO = Path(__file__).resolve().parents[2]


def studio_env(**extra: str) -> dict[str, str]:
    """The environment a user's ``make studio`` gives: this checkout's VoCoSlicer and VoCoCore on the path."""
    path = os.pathsep.join([str(REPO / "VoCoSlicer"), str(REPO / "VoCoCore"), os.environ.get("PYTHONPATH", "")])
    return {**os.environ, "PYTHONPATH": path.rstrip(os.pathsep), **extra}


@contextmanager
def studio_server(tmp_path: Path, *args: str, timeout_s: float = 180.0):
    """Run ``python -m VoCoStudio ARGS`` until the block ends; yields (process, url printed at start)."""
    log = open(tmp_path / "studio.log", "w+")
    env = studio_env(OMP_WAIT_POLICY="PASSIVE", OMP_NUM_THREADS="1")
    proc = subprocess.Popen([sys.executable, "-m", "VoCoStudio", "--work-dir", str(tmp_path / "work"),
                             "--models-dir", str(tmp_path / "models"), *args],  # imports never reach ~/.cache
                            stdout=log, stderr=subprocess.STDOUT, env=env, start_new_session=True)
    try:
        deadline, url = time.monotonic() + timeout_s, None
        while url is None:
            if proc.poll() is not None or time.monotonic() > deadline:
                log.seek(0)
                raise AssertionError(f"VoCo Studio did not start (exit {proc.poll()}):\n{log.read()[-3000:]}")
            log.seek(0)
            match = URL_LINE.search(log.read())
            url = match.group(1) if match else None
            time.sleep(0.2)
        yield proc, url
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        log.close()


@contextmanager
def browser_page(url: str, width: int = 1400, height: int = 800):
    """A page of headless Chromium (Debian's binary, no browser download) opened at ``url``."""
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox", "--disable-gpu"])
        try:
            page = browser.new_page(viewport={"width": width, "height": height})
            page.goto(url)
            yield page
        finally:
            browser.close()


def screenshot(page, name: str) -> Path:
    """Save the page (kept in output/studio-screenshots) and return the file."""
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    path = SCREENSHOTS / f"{name}.png"
    page.screenshot(path=str(path))
    return path


def wait_text(page, selector: str, pattern: str, timeout_s: float = 120.0) -> str:
    """Wait until the element's text matches ``pattern`` (regex); returns the text."""
    deadline, text = time.monotonic() + timeout_s, ""
    while time.monotonic() < deadline:
        element = page.query_selector(selector)
        text = element.inner_text() if element is not None else ""
        if re.search(pattern, text):
            return text
        page.wait_for_timeout(250)
    error = page.query_selector("#error")
    raise AssertionError(f"{selector}: {text!r} never matched {pattern!r}; page error: "
                         f"{error.inner_text() if error else ''!r}")


def view_image(page, index: int):
    """The ``index``-th streamed view image (0: axial, 1: 3D) once it shows a frame."""
    page.wait_for_function(f"document.querySelectorAll('#views img')[{index}]?.src?.startsWith('blob:')",
                           timeout=180_000)
    return page.query_selector_all("#views img")[index]
