"""VoCoSlicerLib.device: architecture matching, the device choice on this CPU-only machine, and time estimates
that reproduce the measured timings they are built from."""

from __future__ import annotations

import os

import pytest

from VoCoSlicerLib import device


@pytest.mark.parametrize("capability, archs, ok", [
    ((9, 0), ["sm_80", "sm_86", "sm_90"], True),
    ((8, 9), ["sm_80", "sm_86"], True),            # same major, newer minor runs sm_86 binaries
    ((12, 0), ["sm_80", "sm_86", "sm_90"], False),  # Blackwell on a cu124 build: the sm_120 reports
    ((12, 0), ["sm_90", "compute_90"], True),       # PTX is JIT-compiled for newer GPUs
    ((7, 0), ["sm_80", "compute_80"], False),
])
def test_arch_supported(capability, archs, ok):
    assert device.arch_supported(capability, archs) is ok


def test_check_device_on_this_machine():
    import torch

    assert device.check_device("cpu", 100.0) == device.DeviceCheck("cpu", True)
    bad = device.check_device("gpu", 1.0)
    assert not bad.ok and "unknown device 'gpu'" in bad.reason
    if torch.cuda.is_available():
        pytest.skip("CPU-only checks")
    assert device.check_device("auto", 4.0).device == "cpu"
    cuda = device.check_device("cuda", 4.0)
    assert not cuda.ok and "CPU-only build" in cuda.reason and torch.__version__ in cuda.reason


def test_window_count_matches_monai():
    import torch
    from monai.inferers import sliding_window_inference

    calls = []
    image = torch.zeros(1, 1, 160, 160, 128)
    sliding_window_inference(image, (96, 96, 96), 1, lambda x: calls.append(1) or x, overlap=0.5)
    assert device.window_count((160, 160, 128), (96, 96, 96), 0.5) == len(calls) == 18


def test_estimates_reproduce_the_measurements():
    """The estimates give back the raw measurements they come from (device.py's header): 172.4 s and 67.3 s for
    the 18 windows of a 160x160x128 grid at 1.5 mm on 2 threads, 8.48 s for one 64^3 fs-48 training crop."""
    args = dict(shape=(160, 160, 128), spacing=(1.5, 1.5, 1.5), overlap=0.5, threads=2)
    assert device.estimate_inference_s(feature_size=48, **args) == pytest.approx(172.4)
    assert device.estimate_inference_s(feature_size=12, **args) == pytest.approx(67.3)
    assert device.estimate_inference_s(feature_size=48, **{**args, "threads": 4}) == pytest.approx(172.4 / 2)
    # the same CT stored at 3 mm (80x80x64 voxels) is the same work once resampled to 1.5 mm
    assert device.estimate_inference_s(feature_size=48, **{**args, "shape": (80, 80, 64), "spacing": (3, 3, 3)}) \
        == pytest.approx(172.4)
    assert device.estimate_training_s(1, 1, feature_size=48, threads=2) == pytest.approx(8.48)
    assert device.estimate_training_s(1, 1, feature_size=12, threads=2) == pytest.approx(2.69)


def test_memory_estimate_grows_with_model_and_window():
    """The weight part is about the real SwinUNETR's fp32 parameters (counted on the MONAI network); weights plus
    one 96^3 window is the 3.5 GB peak measured at feature size 48 less the 0.5 GB Python process."""
    from monai.networks.nets import SwinUNETR

    params = sum(p.numel() for p in SwinUNETR(in_channels=1, out_channels=14, feature_size=48).parameters())
    weights_only = device.inference_memory_gb(48, (1, 1, 1))
    assert weights_only == pytest.approx(params * 4 / 2**30, rel=0.2)
    assert device.inference_memory_gb(48) == pytest.approx(3.5 - 0.5, abs=0.05)
    base = device.inference_memory_gb(48)
    assert device.inference_memory_gb(96) > 2 * base - 0.1 and device.inference_memory_gb(48, (64, 64, 64)) < base


def test_format_duration():
    assert [device.format_duration(s) for s in (12, 600, 5 * 3600, 5 * 86400)] == \
        ["12 s", "10 min", "5.0 h", "5.0 days"]


def test_logic_estimates_use_the_node_grid(mrml, sample, tmp_path):
    from vococore.io import read_volume
    from VoCoSlicerLib import nodes
    from VoCoSlicerLib.logic import VoCoLogic

    volume = read_volume(sample("TotalSegCT"))
    node = nodes.node_from_volume(volume, mrml.scene, "CT")
    logic = VoCoLogic(mrml.scene, work_dir=tmp_path)
    per_thread = 2 / min(os.cpu_count() or 1, 32)  # the rates were measured on 2 threads
    # 122x101x112 at 3 mm is 244x202x224 at 1.5 mm: MONAI's sliding_window_inference visits 336 windows of 96^3
    # there at overlap 0.75 (counted once with a counting predictor), each 172.4 / 18 s at feature size 48
    seconds = 336 * 172.4 / 18 * per_thread
    assert logic.segmentation_estimate(node).startswith(f"about {device.format_duration(seconds)} ")
    # v2 preset: 2 volumes x (9 bases + 2 targets) crops of 64^3 per step with the fs-48 Swin backbone, 8.48 s each
    seconds = 100 * 22 * 8.48 * per_thread
    assert logic.training_estimate(100, "v2").startswith(f"about {device.format_duration(seconds)} ")
    assert logic.training_estimate(100, "small").startswith("no measured rate")  # the CNN preset: not measured
