"""Faster inference kernels: oneDNN Conv3d on CPU and MONAI's SDPA window attention give the default path's
outputs, the slow kernels are no longer called, training and autocast are untouched, and layers are restored."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from vococore.networks.backbones import BackboneSpec, build_segmenter
from vococore.networks.fast_inference import fast_inference
from vococore.segmentation.sliding_window import sliding_window_scores

needs_onednn = pytest.mark.skipif(not torch.backends.mkldnn.is_available(), reason="PyTorch built without oneDNN")


def _kernels(fn) -> set[str]:
    """Names of the ops that ``fn()`` ran."""
    with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU]) as prof:
        fn()
    return {event.key for event in prof.key_averages()}


def _net(arch: str, feature_size: int) -> nn.Module:
    torch.manual_seed(0)
    return build_segmenter(BackboneSpec(arch=arch, feature_size=feature_size, use_checkpoint=False), 3).eval()


@needs_onednn
def test_cnn_same_output_with_onednn_kernel_for_a_batch_one_window():
    net = _net("cnn", 8)
    x = torch.rand(1, 1, 32, 32, 32, generator=torch.Generator().manual_seed(1))
    with torch.inference_mode():
        reference = net(x)
        assert "aten::slow_conv3d_forward" in _kernels(lambda: net(x))  # PyTorch's heuristic at batch 1
        with fast_inference(net) as switched:
            assert switched["conv3d"] == sum(isinstance(m, nn.Conv3d) for m in net.modules()) > 10
            fast = net(x)
            kernels = _kernels(lambda: net(x))
    assert "aten::slow_conv3d_forward" not in kernels and "aten::mkldnn_convolution" in kernels
    torch.testing.assert_close(fast, reference, rtol=1e-5, atol=1e-5)
    assert not any("forward" in vars(m) for m in net.modules())  # restored


def test_swin_same_output_with_sdpa_window_attention():
    net = _net("swin", 12)
    x = torch.rand(1, 1, 64, 64, 64, generator=torch.Generator().manual_seed(3))
    with torch.inference_mode():
        reference = net(x)
        with fast_inference(net) as switched:
            assert switched["attention"] == 8  # 2 blocks in each of the 4 Swin stages
            fast = net(x)
            kernels = _kernels(lambda: net(x))
    assert "aten::scaled_dot_product_attention" in kernels and "aten::_softmax" not in kernels
    torch.testing.assert_close(fast, reference, rtol=1e-4, atol=1e-4)
    assert not any(getattr(m, "use_flash_attention", False) for m in net.modules())  # restored


@needs_onednn
def test_training_autocast_and_special_padding_keep_the_default_path():
    net = _net("cnn", 8).train()
    x = torch.rand(1, 1, 32, 32, 32)
    with fast_inference(net):
        assert "aten::slow_conv3d_forward" in _kernels(lambda: net(x).sum().backward())  # PyTorch's choice
        assert all(p.grad is not None for p in net.parameters() if p.requires_grad)
        with torch.inference_mode(), torch.autocast("cpu", dtype=torch.bfloat16):
            assert net.eval()(x).dtype == torch.bfloat16
    class Standardised(nn.Conv3d):  # a subclass that changes what the convolution computes
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self._conv_forward(x, self.weight - self.weight.mean(), self.bias)

    odd = nn.Sequential(nn.Conv3d(1, 2, 3, padding="same"), nn.Conv3d(2, 2, 3, padding=1, padding_mode="reflect"),
                        Standardised(2, 2, 3, padding=1))
    with fast_inference(odd) as switched:
        assert switched == {"conv3d": 0, "attention": 0}
    with fast_inference(lambda t: t) as switched:  # any callable is accepted, nothing to switch
        assert switched == {"conv3d": 0, "attention": 0}


def test_sliding_window_scores_unchanged_by_the_fast_kernels():
    net = _net("cnn", 8)
    image = torch.rand(1, 1, 40, 48, 36, generator=torch.Generator().manual_seed(2))
    fast = sliding_window_scores(net, image, (32, 32, 32), overlap=0.5, accumulate_dtype=torch.float32)

    def default_path(batch: torch.Tensor) -> torch.Tensor:  # a plain callable gets no fast kernels
        return net(batch)

    reference = sliding_window_scores(default_path, image, (32, 32, 32), overlap=0.5, accumulate_dtype=torch.float32)
    torch.testing.assert_close(fast, reference, rtol=1e-5, atol=1e-5)
