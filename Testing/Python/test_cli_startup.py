"""The CLI starts without the heavy packages: building every subcommand's parser imports no torch, MONAI,
SimpleITK or nibabel (they load inside the command that needs them), so --help and --version answer at once."""

from __future__ import annotations

import subprocess
import sys

HEAVY = ["torch", "monai", "SimpleITK", "nibabel", "numpy", "scipy", "yaml", "safetensors"]


def test_parser_imports_no_heavy_package():
    code = ("import sys; from vococore.cli import build_parser; build_parser(); "
            f"print(sorted(m for m in {HEAVY!r} if m in sys.modules))")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=True)
    assert proc.stdout.strip() == "[]", proc.stdout


def test_version_and_help_work_without_heavy_imports():
    for args in (["--version"], ["--help"], ["infer", "--help"]):
        code = ("import sys\nfrom vococore.cli import main\ntry:\n    main(%r)\nexcept SystemExit:\n    pass\n"
                "print('HEAVY', sorted(m for m in %r if m in sys.modules))" % (args, HEAVY))
        proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
        assert proc.stdout.strip().splitlines()[-1] == "HEAVY []", (args, proc.stdout, proc.stderr)
        assert "vococore" in proc.stdout
