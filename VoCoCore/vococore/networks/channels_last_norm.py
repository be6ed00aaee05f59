"""Instance norm of channels-last (NDHWC) feature maps, forward and backward, for float32 CPU training of the CNN.

Why: oneDNN's convolutions run on channels-last tensors, and PyTorch's ``instance_norm`` only on the default layout,
so each layer of the small CNN copied its activations out of channels-last and back, forward and backward: those
layout copies were 17 % of a fine-tuning step on one thread (BENCHMARKS.md, "Training kernels on CPU"). Computed
here on the channels-last memory itself, the activations stay channels-last from one convolution to the next.
PyTorch's own reductions over the voxels of a channels-last tensor (``var_mean``) were slower than the whole
default-layout norm, so the statistics are plain sums and dot products over the voxel axis.

The numbers are instance norm's (two-pass variance, biased, as PyTorch), to float32 rounding.
"""

from __future__ import annotations

import torch
from torch.autograd.function import once_differentiable

_LAST = torch.channels_last_3d


def _rows_of(voxels: int) -> int:
    """Voxels per row of the elementwise passes: the largest power of two up to 64 that divides ``voxels``.
    A per-channel factor broadcast along rows of 64 voxels x C channels vectorises; along rows of C floats (8 to
    24 here) each pass was about 1.5x slower."""
    width = 64
    while voxels % width:
        width //= 2
    return width


def _wide(vector: torch.Tensor, width: int) -> torch.Tensor:
    """A per-(sample, channel) ``(n, c)`` vector repeated for ``width`` voxels: ``(n, 1, width * c)``. (An expanded
    view copied by ``reshape``: 4.7 us against 9.4 us for ``repeat`` on (2, 8) x 64, five times per norm.)"""
    n, c = vector.shape
    return vector.unsqueeze(1).expand(n, width, c).reshape(n, 1, width * c)


class ChannelsLastInstanceNorm(torch.autograd.Function):
    """``instance_norm(x, weight, bias, eps)`` of a 5-D ``x``, computed and returned channels-last."""

    @staticmethod
    def forward(ctx, x: torch.Tensor, weight: torch.Tensor | None, bias: torch.Tensor | None,
                eps: float) -> torch.Tensor:
        """Mean and variance per sample and channel over the voxels; the output is channels-last."""
        n, c = x.shape[:2]
        x = x.contiguous(memory_format=_LAST)  # no copy when it is channels-last already
        voxels = x.numel() // (n * c)
        width = _rows_of(voxels)
        rows = x.permute(0, 2, 3, 4, 1).reshape(n, voxels, c)  # a view: (sample, voxel, channel)
        mean = rows.sum(1) / voxels
        centred = rows.view(n, voxels // width, width * c) - _wide(mean, width)
        flat = centred.view(n, voxels, c)
        rstd = (torch.linalg.vecdot(flat, flat, dim=1) / voxels + eps).rsqrt()
        scale = rstd if weight is None else rstd * weight
        shift = torch.zeros_like(mean) if bias is None else bias.expand(n, c)
        out = torch.addcmul(_wide(shift, width), centred, _wide(scale, width))
        ctx.save_for_backward(centred, rstd, scale)
        ctx.sizes, ctx.width, ctx.affine = x.shape, width, (weight is not None, bias is not None)
        return out.view(n, *x.shape[2:], c).permute(0, 4, 1, 2, 3)

    @staticmethod
    @once_differentiable
    def backward(ctx, grad: torch.Tensor):
        """dx = w·r·(g − mean(g) − x̂·mean(g·x̂)) per sample and channel, with r = 1/sqrt(var + eps)."""
        centred, rstd, scale = ctx.saved_tensors
        width, (has_weight, has_bias) = ctx.width, ctx.affine
        n, c = ctx.sizes[:2]
        voxels = centred.numel() // (n * c)
        rows = grad.contiguous(memory_format=_LAST).permute(0, 2, 3, 4, 1).reshape(n, voxels, c)
        total = rows.sum(1)  # sum of g
        along = torch.linalg.vecdot(rows, centred.view(n, voxels, c), dim=1)  # sum of g·(x − mean)
        offset = -scale * total / voxels
        slope = -scale * rstd * rstd * along / voxels
        dx = torch.addcmul(_wide(offset, width), rows.view(n, voxels // width, width * c), _wide(scale, width))
        dx.addcmul_(centred, _wide(slope, width))
        grad_x = dx.view(n, *ctx.sizes[2:], c).permute(0, 4, 1, 2, 3)
        grad_weight = (along * rstd).sum(0) if has_weight and ctx.needs_input_grad[1] else None
        grad_bias = total.sum(0) if has_bias and ctx.needs_input_grad[2] else None
        return grad_x, grad_weight, grad_bias, None
