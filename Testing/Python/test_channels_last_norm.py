"""Channels-last instance norm (vococore.networks.channels_last_norm): output and gradients of x, weight and bias
equal PyTorch's own instance norm computed in float64, for row widths of 64, 8 and 1 voxels, with and without the
affine part, from channels-last and from default-layout input; the output is channels-last."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from vococore.networks.channels_last_norm import ChannelsLastInstanceNorm

LAST = torch.channels_last_3d


def _relative(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a.double() - b).norm() / b.norm())


@pytest.mark.parametrize("shape, affine, layout", [
    ((2, 16, 16, 16, 16), True, LAST),  # 4096 voxels: rows of 64
    ((3, 8, 6, 4, 2), True, LAST),  # 48 voxels: rows of 16
    ((2, 24, 7, 5, 3), True, torch.contiguous_format),  # 105 voxels: rows of 1, input in the default layout
    ((2, 4, 8, 8, 8), False, LAST),  # no affine part (MONAI's default InstanceNorm3d)
])
def test_matches_pytorchs_instance_norm_in_float64(shape, affine, layout):
    gen = torch.Generator().manual_seed(0)
    channels = shape[1]
    # an offset per channel larger than the spread: a one-pass variance (E[x²] − mean²) loses digits here
    x = torch.randn(shape, generator=gen, dtype=torch.float64) * 0.5 + torch.linspace(-8, 8, channels).view(
        1, channels, 1, 1, 1).double()
    weight = torch.rand(channels, generator=gen, dtype=torch.float64) + 0.5 if affine else None
    bias = torch.randn(channels, generator=gen, dtype=torch.float64) if affine else None
    upstream = torch.randn(shape, generator=gen, dtype=torch.float64)

    ref_inputs = [t.clone().requires_grad_() for t in (x, weight, bias) if t is not None]
    ref = F.instance_norm(ref_inputs[0], weight=ref_inputs[1] if affine else None,
                          bias=ref_inputs[2] if affine else None, eps=1e-5)
    ref.backward(upstream)

    ours_inputs = [x.float().contiguous(memory_format=layout).requires_grad_()]
    ours_inputs += [t.float().requires_grad_() for t in (weight, bias) if t is not None]
    out = ChannelsLastInstanceNorm.apply(ours_inputs[0], ours_inputs[1] if affine else None,
                                         ours_inputs[2] if affine else None, 1e-5)
    assert out.is_contiguous(memory_format=LAST) and out.dtype == torch.float32
    out.backward(upstream.float().contiguous(memory_format=LAST))

    assert _relative(out.detach(), ref.detach()) < 1e-6
    for ours, theirs in zip(ours_inputs, ref_inputs):
        assert _relative(ours.grad, theirs.grad) < 1e-5
