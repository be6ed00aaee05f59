"""The CLI starts without the heavy packages: building every subcommand's parser imports no torch, MONAI,
SimpleITK or nibabel (they load inside the command that needs them), so --help and --version answer at once; and
a command that needs MONAI imports it without matplotlib and scipy.signal (vococore.utils.monai_extras)."""

from __future__ import annotations

import json
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


def _label_file(path, offset: int):
    """A 12³ label volume (1 mm, identity affine) with a 4³ cube of label 1 starting at ``offset``."""
    import nibabel as nib
    import numpy as np

    labels = np.zeros((12, 12, 12), np.uint8)
    labels[offset:offset + 4, 4:8, 4:8] = 1
    nib.save(nib.Nifti1Image(labels, np.eye(4)), path)
    return str(path)


def test_cli_imports_monai_without_pyplot_and_scipy_signal_which_still_import_later(tmp_path):
    """A command that uses MONAI (evaluate's metrics) runs with MONAI imported while matplotlib and scipy.signal
    read as absent (about 1 s of MONAI's 2 s import); afterwards both import as usual, and the Dice is right:
    cubes of 64 voxels overlapping in 3 x 4 x 4 give 2 * 48 / 128 = 0.75."""
    pred, ref = _label_file(tmp_path / "pred.nii.gz", 3), _label_file(tmp_path / "ref.nii.gz", 4)
    code = ("import json, sys\nfrom vococore.cli import main\n"
            f"rc = main(['evaluate', '--pred', {pred!r}, '--ref', {ref!r}, '--labels', '1', '--json'])\n"
            "during = sorted(m for m in ('monai', 'matplotlib', 'scipy.signal', 'scipy.stats') if m in sys.modules)\n"
            "from monai.utils import jupyter_utils\n"
            "import matplotlib.pyplot, scipy.signal\n"
            "print('STATE', json.dumps([rc, during, jupyter_utils.has_matplotlib, type(sys.modules['monai'].__loader__).__name__]))")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    lines = proc.stdout.strip().splitlines()
    state = json.loads(lines[-1].removeprefix("STATE "))
    assert state == [0, ["monai"], False, "SourceFileLoader"], state
    scores = json.loads("\n".join(lines[:-1]))["labels"]
    assert [round(s["dice"], 6) for s in scores] == [0.75], scores


def test_a_library_import_of_vococore_leaves_monai_as_it_is():
    """Only the processes vococore starts hold the packages back: a program that imports vococore and then MONAI
    keeps MONAI's plotting helpers."""
    code = ("import sys, vococore, vococore.io, vococore.networks.backbones\nimport monai\n"
            "from monai.utils import jupyter_utils\nprint(jupyter_utils.has_matplotlib, 'matplotlib.pyplot' in sys.modules)")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert proc.stdout.split() == ["True", "True"], (proc.stdout, proc.stderr[-2000:])
