"""Who may reach VoCo Studio: bound beyond localhost, the real server refuses requests without the token printed at
start; the paths a user types get one-line reasons and never overwrite a file unasked."""

from __future__ import annotations

import re
import urllib.error
import urllib.request

import pytest

from vococore.utils.errors import VoCoError


def _status(url: str, cookie: str | None = None) -> int:
    request = urllib.request.Request(url, headers={"Cookie": cookie} if cookie else {})
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            return response.status
    except urllib.error.HTTPError as error:
        return error.code


def test_server_beyond_localhost_refuses_requests_without_the_token(tmp_path):
    from studio_harness import free_port, require_browser_stack, studio_server

    require_browser_stack()
    port = free_port()
    with studio_server(tmp_path, "--host", "0.0.0.0", "--port", str(port), "--sample", "") as (_, url):
        token = re.search(r"\?token=(\S+)$", url).group(1)
        base = f"http://127.0.0.1:{port}"
        assert _status(f"{base}/") == 403
        assert _status(f"{base}/index.html") == 403
        assert _status(f"{base}/ws") == 403  # the websocket that drives the app, too
        assert _status(f"{base}/?token=wrong{token}") == 403
        assert _status(f"{base}/?token={token}") == 200
        assert _status(f"{base}/index.html", cookie=f"voco_studio_token={token}") == 200


def test_localhost_needs_no_token_and_any_other_address_does():
    from VoCoStudio.access import needs_token

    assert not needs_token("127.0.0.1") and not needs_token("localhost")
    assert needs_token("0.0.0.0") and needs_token("192.168.1.20")


def test_typed_paths_are_checked(tmp_path):
    from VoCoStudio.access import readable_file, writable_output

    with pytest.raises(VoCoError, match="no such file"):
        readable_file(str(tmp_path / "missing.nii.gz"))
    with pytest.raises(VoCoError, match="not a file"):
        readable_file(str(tmp_path))
    existing = tmp_path / "seg.seg.nrrd"
    existing.write_bytes(b"mine")
    with pytest.raises(VoCoError, match="already exists"):
        writable_output(str(existing))
    assert writable_output(str(existing), overwrite=True) == existing
    with pytest.raises(VoCoError, match="must end in .seg.nrrd"):
        writable_output(str(tmp_path / "out.nrrd"), suffix=".seg.nrrd")
    with pytest.raises(VoCoError, match="folder missing"):
        writable_output(str(tmp_path / "nowhere" / "a.seg.nrrd"))
    assert existing.read_bytes() == b"mine"


def test_unknown_sample_is_one_line_and_exit_2():
    import subprocess
    import sys

    from studio_harness import studio_env

    proc = subprocess.run([sys.executable, "-m", "VoCoStudio", "--sample", "NoSuchSample"], capture_output=True,
                          text=True, timeout=120, env=studio_env())
    assert proc.returncode == 2
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and "unknown sample dataset 'NoSuchSample'" in lines[0], proc.stderr
