"""VoCoSlicerLib.device: architecture matching, the device choice on this CPU-only machine, and time estimates
that reproduce the measured timings they are built from."""

from __future__ import annotations

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
    # 160x160x128 at 1.5 mm, overlap 0.5: the measured 172.4 s (fs 48) and 67.3 s (fs 12) on 2 threads
    args = dict(shape=(160, 160, 128), spacing=(1.5, 1.5, 1.5), overlap=0.5, threads=2)
    assert device.estimate_inference_s(feature_size=48, **args) == pytest.approx(172.4)
    assert device.estimate_inference_s(feature_size=12, **args) == pytest.approx(67.3)
    assert device.estimate_inference_s(feature_size=48, **{**args, "threads": 4}) == pytest.approx(86.2)
    assert device.estimate_inference_s(feature_size=96, **args) == pytest.approx(4 * 172.4)
    # a 3 mm CT of 122x101x112 resamples to 244x202x224 at 1.5 mm
    assert device.resampled_shape((122, 101, 112), (3, 3, 3), (1.5, 1.5, 1.5)) == (244, 202, 224)
    assert device.estimate_training_s(10, 11, feature_size=48, threads=2) == pytest.approx(10 * 11 * 8.48)


def test_memory_estimate_grows_with_model_and_window():
    base = device.inference_memory_gb(48)
    assert base == pytest.approx(72e6 * 4 / 2**30 + 2.7)
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
    seconds = device.estimate_inference_s(volume.shape, volume.spacing)
    assert logic.segmentation_estimate(node).startswith(f"about {device.format_duration(seconds)} ")
    # v2 preset: 2 volumes x (9 bases + 2 targets) crops of 64^3 per step with the fs-48 Swin backbone
    seconds = device.estimate_training_s(100, 22, (64, 64, 64), 48)
    assert logic.training_estimate(100, "v2").startswith(f"about {device.format_duration(seconds)} ")
    assert logic.training_estimate(100, "small").startswith("no measured rate")  # the CNN preset: not measured
