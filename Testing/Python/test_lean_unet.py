"""The MONAI-free BasicUNet computes MONAI's BasicUNet with the trained demo weights, and inference of a small
CNN package (library and CLI) does not import MONAI."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest
import torch

from seg_model import trained_run
from vococore.io import read_volume
from vococore.preprocessing.lean import preprocess_for_inference
from vococore.segmentation.package import load_package


@pytest.mark.parametrize("shape", [(32, 32, 32), (37, 34, 33)])
def test_lean_unet_equals_monai_basic_unet_with_trained_weights(sample, shape):
    # (37, 34, 33): odd sizes after pooling, where the upsampled features are replicate-padded by one voxel
    from vococore.networks.lean_unet import LeanBasicUNet

    path = trained_run() / "best.vocomodel"
    monai_net, package = load_package(path)
    lean, _ = load_package(path, inference=True)
    assert isinstance(lean, LeanBasicUNet) and type(monai_net).__module__.startswith("monai.")
    image = preprocess_for_inference(read_volume(sample("TotalSegCT")), package.preprocess).image
    window = image[None, :, 10:10 + shape[0], 8:8 + shape[1], 12:12 + shape[2]]
    with torch.inference_mode():
        ours, theirs = lean(window), monai_net(window)
    assert ours.shape == theirs.shape == (1, package.out_channels, *shape)
    assert float((ours - theirs).abs().max()) < 1e-4 * float(theirs.abs().max())
    assert len(torch.unique(theirs.argmax(1))) > 1  # a window holding organs, not only background


def test_small_cnn_inference_does_not_import_monai(sample, tmp_path):
    package = trained_run() / "best.vocomodel"
    out = tmp_path / "seg.nii.gz"
    code = ("import sys\nfrom vococore.cli import main\n"
            f"rc = main(['infer', '--model', {str(package)!r}, '--input', {str(sample('TotalSegCTSmall'))!r}, "
            f"'--output', {str(out)!r}])\n"
            "print('LOADED', sorted(m for m in sys.modules if m.split('.')[0] in ('monai', 'matplotlib')), rc)")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert proc.stdout.strip().splitlines()[-1] == "LOADED [] 0", (proc.stdout, proc.stderr[-2000:])
    labels = read_volume(out)
    assert labels.shape == read_volume(sample("TotalSegCTSmall")).shape and (labels.array == 1).any()
    assert set(np.unique(labels.array)) <= {0, 1, 2, 3, 4}
