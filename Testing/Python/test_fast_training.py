"""Training kernels (vococore.networks.fast_training): the exact path gives the default path's losses and gradients
to float32 rounding, its kernel choices are in effect (oneDNN for a batch-1 Conv3d, no in-place activation, SDPA
window attention with a gradient), layers are restored on exit, and the shared loop uses it by default."""

from __future__ import annotations

import copy
import tempfile

import pytest
import torch
from torch import nn

from vococore.networks.backbones import BackboneSpec, build_segmenter
from vococore.networks.fast_training import fast_training

needs_onednn = pytest.mark.skipif(not torch.backends.mkldnn.is_available(), reason="PyTorch built without oneDNN")


def _step(net: nn.Module, x: torch.Tensor, fast: bool) -> tuple[torch.Tensor, dict[str, torch.Tensor], set[str]]:
    """Loss (mean square of the output against a fixed target), gradients by name and the ops of the forward."""
    target = torch.linspace(-1, 1, x[:, :1].numel()).reshape(x[:, :1].shape)
    net.zero_grad(set_to_none=True)
    with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU]) as prof:
        if fast:
            with fast_training(net) as switched:
                out = net(x)
            assert sum(switched.values()) > 0
        else:
            out = net(x)
    loss = ((out[:, :1] - target) ** 2).mean()
    loss.backward()
    grads = {name: p.grad.clone() for name, p in net.named_parameters() if p.grad is not None}
    return loss.detach(), grads, {event.key for event in prof.key_averages()}


def _assert_same_gradients(fast: dict[str, torch.Tensor], default: dict[str, torch.Tensor],
                           tol: float = 1e-4) -> None:
    """All gradients together within 1e-4 of the default path's (relative, in norm), and each one that is not
    near zero (above 1% of the largest) within ``tol``: float32 rounding, which grows with depth."""
    assert fast.keys() == default.keys()
    a = torch.cat([g.flatten() for g in default.values()])
    b = torch.cat([fast[name].flatten() for name in default])
    assert float((b - a).norm() / a.norm()) < 1e-4
    largest = max(float(g.norm()) for g in default.values())
    checked = [name for name, g in default.items() if float(g.norm()) > 1e-2 * largest]
    for name in checked:
        assert float((fast[name] - default[name]).norm() / default[name].norm()) < tol, name
    assert len(checked) > 10


@needs_onednn
def test_cnn_exact_path_same_loss_and_gradients_with_the_fast_kernels():
    torch.manual_seed(0)
    net = build_segmenter(BackboneSpec(arch="cnn", feature_size=8), 3).train()
    x = torch.rand(1, 1, 32, 32, 32, generator=torch.Generator().manual_seed(1))
    loss, grads, default_ops = _step(net, x, fast=False)
    fast_loss, fast_grads, fast_ops = _step(net, x, fast=True)
    assert "aten::slow_conv3d_forward" in default_ops and "aten::leaky_relu_" in default_ops  # PyTorch's picks
    assert "aten::slow_conv3d_forward" not in fast_ops and "aten::mkldnn_convolution" in fast_ops
    assert "aten::leaky_relu_" not in fast_ops and "aten::leaky_relu" in fast_ops
    torch.testing.assert_close(fast_loss, loss, rtol=1e-5, atol=0)
    assert fast_grads.keys() == grads.keys() and len(grads) > 30
    _assert_same_gradients(fast_grads, grads)
    assert not any("forward" in vars(m) for m in net.modules())  # restored
    assert all(m.inplace for m in net.modules() if isinstance(m, nn.LeakyReLU))


def test_swin_training_attention_runs_sdpa_with_a_gradient_and_same_gradients():
    torch.manual_seed(0)
    net = build_segmenter(BackboneSpec(arch="swin", feature_size=12, use_checkpoint=False), 2).train()
    x = torch.rand(1, 1, 64, 32, 32, generator=torch.Generator().manual_seed(3))  # bottleneck 2x1x1
    loss, grads, default_ops = _step(net, x, fast=False)
    fast_loss, fast_grads, fast_ops = _step(net, x, fast=True)
    assert "aten::scaled_dot_product_attention" not in default_ops  # MONAI's SDPA switch: inference only
    assert "aten::scaled_dot_product_attention" in fast_ops
    torch.testing.assert_close(fast_loss, loss, rtol=1e-5, atol=0)
    bias_grads = [n for n in grads if n.endswith("relative_position_bias_table")]
    assert len(bias_grads) == 8
    _assert_same_gradients(fast_grads, grads, tol=1e-2)  # 1.3e-3 seen deep in the Swin (2e-5 overall)
    assert not any("forward" in vars(m) for m in net.modules())  # restored


def test_shared_loop_uses_the_kernels_by_default_with_the_same_losses():
    from vococore.pretraining.model import VoCoModel
    from vococore.pretraining.pretext import RECIPES, PretextSampler, collate
    from vococore.pretraining.run import voco_step
    from vococore.training.distributed import DistInfo
    from vococore.training.loop import LoopConfig, Trainer

    import numpy as np

    recipe, spec = RECIPES["small"], BackboneSpec(arch="cnn", feature_size=4)
    torch.manual_seed(0)
    model = VoCoModel(spec, recipe)
    rng = np.random.default_rng(0)
    sampler = PretextSampler(recipe)
    batch = collate([sampler(torch.rand(1, *recipe.region_size), rng) for _ in range(2)])
    assert LoopConfig().fast_kernels
    parts = {}
    with tempfile.TemporaryDirectory() as tmp:
        for fast in (False, True):
            trainer = Trainer(copy.deepcopy(model), voco_step, LoopConfig(steps=1, fast_kernels=fast), tmp,
                              DistInfo(device=torch.device("cpu")), backbone=spec, tensorboard=False)
            torch.manual_seed(5)
            parts[fast] = trainer.train_step(batch)
    assert parts[False].keys() == parts[True].keys()
    for name, value in parts[False].items():  # the inter loss is a difference of similarities: 1e-5 seen
        assert parts[True][name] == pytest.approx(value, rel=1e-4, abs=1e-7), name
