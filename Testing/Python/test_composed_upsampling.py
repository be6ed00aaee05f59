"""BasicUNet's last decoder step under the training kernels: the upsampling and the convolution after it run as one
4×4×4 transposed convolution (vococore.networks.composed_upsampling), and MONAI's own UpCat, run as PyTorch runs
it, gives the same output and gradients to float32 rounding, edge voxels and the upsampling's bias included."""

from __future__ import annotations

import pytest
import torch
from monai.networks.nets import BasicUNet
from monai.networks.nets.basic_unet import UpCat

from vococore.networks.composed_upsampling import composable
from vococore.networks.fast_training import fast_training


def _upcat(halves: bool) -> UpCat:
    """BasicUNet fs 8's last decoder step (16 channels in, 8 from the skip, 8 out), or a halving one."""
    torch.manual_seed(0)
    step = UpCat(3, 16, 8, 8, ("LeakyReLU", {"negative_slope": 0.1, "inplace": True}),
                 ("instance", {"affine": True}), True, 0.0, "deconv", halves=halves)
    with torch.no_grad():  # a large upsampling bias: wrong edge voxels would show in the output
        step.upsample.deconv.bias.uniform_(-3.0, 3.0)
    return step.train()


def _run(step: UpCat, x: torch.Tensor, skip: torch.Tensor, fast: bool):
    """Output, the gradients of the inputs and parameters, and the weight shapes of the convolutions it ran."""
    x, skip = x.clone().requires_grad_(), skip.clone().requires_grad_()
    step.zero_grad(set_to_none=True)
    with torch.profiler.profile(record_shapes=True) as prof:
        if fast:
            with fast_training(step):
                out = step(x, skip)
        else:
            out = step(x, skip)
    weights = {tuple(e.input_shapes[1]) for e in prof.events()
               if e.name in ("aten::convolution", "aten::mkldnn_convolution") and e.input_shapes}
    target = torch.linspace(-1, 1, out.numel()).reshape(out.shape)
    ((out - target) ** 2).mean().backward()
    grads = {"x": x.grad, "skip": skip.grad, **{n: p.grad for n, p in step.named_parameters()}}
    return out.detach(), grads, weights


def test_decoder_step_composed_gives_monais_output_and_gradients():
    step = _upcat(halves=False)
    assert composable(step)
    gen = torch.Generator().manual_seed(1)
    x, skip = torch.randn(2, 16, 8, 8, 8, generator=gen), torch.randn(2, 8, 16, 16, 16, generator=gen)
    out, grads, weights = _run(step, x, skip, fast=False)
    fast_out, fast_grads, fast_weights = _run(step, x, skip, fast=True)
    assert (16, 16, 2, 2, 2) in weights and (8, 24, 3, 3, 3) in weights  # MONAI: upsample, concatenate, convolve
    assert (17, 8, 4, 4, 4) in fast_weights  # composed: 16 channels and the bias's ones in, 8 out
    assert (16, 16, 2, 2, 2) not in fast_weights and (8, 24, 3, 3, 3) not in fast_weights
    torch.testing.assert_close(fast_out, out, rtol=1e-5, atol=1e-5)
    for name, grad in grads.items():
        if name.endswith(".conv.bias"):  # before an instance norm: zero up to rounding on both paths
            assert float(grad.abs().max()) < 1e-6 and float(fast_grads[name].abs().max()) < 1e-6
            continue
        assert float((fast_grads[name] - grad).norm() / grad.norm()) < 1e-5, name


@pytest.mark.parametrize("case", ["halving step", "odd edge"])
def test_other_decoder_steps_stay_monais(case):
    """A step that halves its channels does not pay (0.59 of the work it would replace); an upsampled map that
    does not fill the skip connection's grid is padded by MONAI's own forward: neither is composed."""
    step = _upcat(halves=case == "halving step")
    gen = torch.Generator().manual_seed(2)
    size = 17 if case == "odd edge" else 16  # MONAI pads an upsampled 16³ map by one voxel to 17³
    x, skip = torch.randn(1, 16, 8, 8, 8, generator=gen), torch.randn(1, 8, size, size, size, generator=gen)
    if case == "halving step":
        assert not composable(step)
    out, grads, _ = _run(step, x, skip, fast=False)
    fast_out, fast_grads, fast_weights = _run(step, x, skip, fast=True)
    assert not any(w[2:] == (4, 4, 4) for w in fast_weights)
    torch.testing.assert_close(fast_out, out, rtol=1e-5, atol=1e-5)
    for name, grad in grads.items():
        if not name.endswith(".conv.bias"):
            assert float((fast_grads[name] - grad).norm() / grad.norm()) < 1e-5, name


def test_basic_unet_fs8_composes_only_its_last_step():
    net = BasicUNet(spatial_dims=3, in_channels=1, out_channels=5, features=(8, 8, 16, 32, 64, 8))
    assert [composable(m) for m in (net.upcat_4, net.upcat_3, net.upcat_2, net.upcat_1)] == [False] * 3 + [True]
