"""Pins on the private MONAI and PyTorch behaviour vococore relies on, so an upgrade that changes it fails here,
by name, rather than as wrong numbers elsewhere (and one on our own padding record that inference crops the
padding off with): CropForeground's overridable ``compute_bounding_box`` (the keep-whole fallback),
``torch.mkldnn_convolution``'s argument order (fast inference), the PatchMerging class swap (legacy merging), and
the deterministic-kernel flag that ``seed_everything`` sets without importing torch's compiler."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest
import torch
import torch.nn.functional as F


def test_unpadded_returns_the_real_grid():
    """Through the inference preprocessing: a 20-slice volume is padded to 64 slices; ``_unpadded`` gives back
    the 20 slices and an affine whose origin is the un-padded grid's."""
    from vococore.io.volume import Volume
    from vococore.preprocessing.lean import preprocess_for_inference
    from vococore.preprocessing.preprocessor import PreprocessConfig
    from vococore.segmentation.inference import _unpadded

    array = np.full((80, 80, 20), 100, dtype=np.int16)
    pre = preprocess_for_inference(Volume(array, np.diag([1.5, 1.5, 1.5, 1.0])),
                                   PreprocessConfig(spacing=None, foreground_threshold=None))
    assert tuple(pre.image.shape) == (1, 80, 80, 64) and pre.pads == ((0, 0), (0, 0), (22, 22))
    scores, affine = _unpadded(torch.zeros(2, 80, 80, 64), pre)
    assert tuple(scores.shape) == (2, 80, 80, 20)
    np.testing.assert_allclose(affine[:3, 3], [0.0, 0.0, 0.0], atol=1e-6)  # (64 - 20) / 2 = 22 slices before


def test_crop_foreground_box_is_overridable_and_empty_for_no_foreground():
    """MONAI's CropForeground computes an empty box for an image without foreground and crops with whatever
    ``compute_bounding_box`` returns, which is what our keep-whole subclass overrides."""
    from monai.transforms import CropForeground

    from vococore.preprocessing.preprocessor import _crop_foreground_or_keep

    blank = torch.zeros(1, 12, 10, 8)
    start, end = CropForeground(select_fn=lambda x: x > 0.5, allow_smaller=True).compute_bounding_box(blank)
    assert np.any(np.asarray(end) - np.asarray(start) <= 0)
    assert tuple(_crop_foreground_or_keep(0.5)(blank).shape) == (1, 12, 10, 8)
    image = blank.clone()
    image[0, 3:5, 2:7, 1:4] = 1.0
    assert tuple(_crop_foreground_or_keep(0.5)(image).shape) == (1, 2, 5, 3)


@pytest.mark.skipif(not torch.backends.mkldnn.is_available(), reason="PyTorch built without oneDNN")
@pytest.mark.parametrize("stride, padding, dilation, groups, bias", [
    ((1, 1, 1), (1, 1, 1), (1, 1, 1), 1, True), ((2, 1, 2), (0, 1, 2), (1, 1, 1), 1, False),
    ((1, 1, 1), (2, 2, 2), (2, 2, 2), 2, True)])
def test_mkldnn_convolution_argument_order_is_conv3d(stride, padding, dilation, groups, bias):
    """``torch.mkldnn_convolution(x, w, b, padding, stride, dilation, groups)``: the positional order that
    fast_inference calls it with computes F.conv3d."""
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(1, 4, 9, 10, 11, generator=gen)
    w = torch.randn(6, 4 // groups, 3, 3, 3, generator=gen)
    b = torch.randn(6, generator=gen) if bias else None
    got = torch.mkldnn_convolution(x, w, b, padding, stride, dilation, groups)
    want = F.conv3d(x, w, b, stride=stride, padding=padding, dilation=dilation, groups=groups)
    torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-4)


def test_patch_merging_class_swap_keeps_keys_and_monai_order():
    """MONAI's PatchMerging (1.4+) concatenates the parity sub-samples in the order below and then applies
    ``norm`` and ``reduction``, the attributes LegacyPatchMerging reuses; swapping ``__class__`` there and back
    keeps every state-dict key and restores MONAI's output."""
    from monai.networks.nets.swin_unetr import PatchMerging, SwinTransformer

    from vococore.networks.legacy_merging import LegacyPatchMerging
    from vococore.networks.weights import set_patch_merging

    torch.manual_seed(0)
    holder = SwinTransformer(in_chans=1, embed_dim=4, window_size=(2, 2, 2), patch_size=(2, 2, 2), depths=(1, 1),
                             num_heads=(1, 1), spatial_dims=3).eval()
    merging = holder.layers1[0].downsample
    assert type(merging) is PatchMerging
    x = torch.randn(1, 4, 6, 8, 4)
    order = [(0, 0, 0), (1, 0, 0), (0, 1, 0), (0, 0, 1), (1, 1, 0), (1, 0, 1), (0, 1, 1), (1, 1, 1)]
    by_hand = merging.reduction(merging.norm(torch.cat([x[:, i::2, j::2, k::2] for i, j, k in order], -1)))
    with torch.no_grad():
        before = merging(x)
        torch.testing.assert_close(before, by_hand)
        keys = set(merging.state_dict())
        set_patch_merging(holder, legacy=True)
        assert type(merging) is LegacyPatchMerging and set(merging.state_dict()) == keys
        assert not torch.allclose(merging(x), before)
        set_patch_merging(holder, legacy=False)
        assert type(merging) is PatchMerging
        torch.testing.assert_close(merging(x), before)


def test_deterministic_seeding_sets_torchs_flag_without_importing_its_compiler():
    """``seed_everything(..., deterministic=True)`` in a fresh process: torch's public getters report deterministic
    kernels in warn-only mode (what ``torch.use_deterministic_algorithms(True, warn_only=True)`` gives), and
    ``torch._inductor`` stayed unimported; ``deterministic=False`` leaves the flag off."""
    code = ("import sys, torch; from vococore.training.loop import seed_everything; "
            "print(torch.are_deterministic_algorithms_enabled(), end=' '); seed_everything(0, sys.argv[1] == '1'); "
            "print(torch.are_deterministic_algorithms_enabled(), torch.is_deterministic_algorithms_warn_only_enabled(),"
            " 'torch._inductor' in sys.modules)")
    for flag, expected in (("1", "False True True False"), ("0", "False False False False")):
        proc = subprocess.run([sys.executable, "-c", code, flag], capture_output=True, text=True, timeout=120)
        assert proc.returncode == 0, proc.stderr
        assert proc.stdout.split() == expected.split(), (flag, proc.stdout)
