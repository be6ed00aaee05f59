"""BasicUNet's last decoder step with its upsampling and the convolution after it composed into one transposed
convolution, for float32 CPU training (:mod:`vococore.networks.fast_training`).

MONAI's ``UpCat`` upsamples ``x`` with a 2×2×2 stride-2 transposed convolution, concatenates the skip connection
``x_e`` and convolves both with a 3×3×3 kernel. The convolution is linear in each part of the concatenation:
``conv(cat(x_e, up(x)), W) = conv(x_e, W_e) + conv(up(x), W_u)``, and ``conv(up(x), W_u)`` is itself one transposed
convolution of ``x`` with stride 2 and a 4×4×4 kernel built from the two kernels (:func:`composed_kernel`). The
upsampling's bias becomes one more input channel of ones: its zero padding outside the grid is then the zero
padding the 3×3×3 convolution sees at the fine grid's edge, so edge voxels are exact too. Same numbers to float32
rounding, in a different order of the sums.

Why: in BasicUNet fs 8 the step's 3×3×3 convolution reads 24 channels (8 skip + 16 upsampled) on the full 32³
grid and writes 8; oneDNN pads 8 output channels to its 16-wide vectors, so it ran at half the throughput of the
16-channel layers. Composed, the 16 upsampled channels cost 36 M instead of 121 M multiply-adds per 32³ crop, and
forward + backward of the step's upsampling and convolution took 48 against 81 ms (4 crops, one thread, this
project's AMD EPYC Zen 4; BENCHMARKS.md, "Training kernels on CPU").
"""

from __future__ import annotations

import functools

import torch
import torch.nn.functional as F
from torch import nn

_LAST = torch.channels_last_3d
# Composed only where it at least halves the multiply-adds of the parts it replaces (the upsampling and the
# convolution of its output). In BasicUNet that is the last step, whose upsampling keeps its channels: 0.29 of
# them at fs 8. The other steps halve their channels first (0.56-0.59 of them), and their 16- to 64-channel
# convolutions already run at full vector width.
MAX_COST = 0.5


@functools.cache
def _tap_map() -> torch.Tensor:
    """``A[k, t, p]`` = 1 where tap ``t`` of the 3×3×3 convolution (offsets -1, 0, 1) reads what tap ``p`` of the
    stride-2 upsampling wrote into tap ``k`` of the composed 4×4×4 transposed convolution (padding 1): per axis
    ``k = p - t + 2``; the 3-D map is the product over the three axes, flattened to (64, 27, 8)."""
    axis = torch.zeros(4, 3, 2)
    for t in range(3):
        for p in range(2):
            axis[p - t + 2, t, p] = 1.0
    return torch.einsum("atp,buq,cvr->abctuvpqr", axis, axis, axis).reshape(64, 27, 8)


def composed_kernel(conv_weight: torch.Tensor, up_weight: torch.Tensor, up_bias: torch.Tensor | None) -> torch.Tensor:
    """The 4×4×4 transposed-convolution kernel ``(in + 1 with a bias, out, 4, 4, 4)`` of a 3×3×3 convolution
    (``conv_weight``: ``(out, mid, 3, 3, 3)``) after a 2×2×2 stride-2 transposed convolution (``up_weight``:
    ``(in, mid, 2, 2, 2)``), differentiable in both; the bias, if any, is the kernel of an input of ones."""
    out, mid = conv_weight.shape[:2]
    up = up_weight.reshape(up_weight.shape[0], mid, 8)
    if up_bias is not None:
        up = torch.cat([up, up_bias.reshape(1, mid, 1).expand(1, mid, 8)])
    taps = _tap_map().to(conv_weight)
    per_tap = torch.einsum("oct,ktp->ockp", conv_weight.reshape(out, mid, 27), taps)
    return torch.einsum("ockp,ecp->eok", per_tap, up).reshape(up.shape[0], out, 4, 4, 4)


def _upsampling(upcat: nn.Module) -> nn.ConvTranspose3d | None:
    """``upcat``'s upsampling when it is a plain 2×2×2 stride-2 transposed convolution (MONAI's ``deconv``)."""
    deconv = getattr(upcat.upsample, "deconv", None)
    plain = (isinstance(deconv, nn.ConvTranspose3d) and deconv.kernel_size == (2, 2, 2)
             and deconv.stride == (2, 2, 2) and deconv.padding == (0, 0, 0) and deconv.output_padding == (0, 0, 0)
             and deconv.dilation == (1, 1, 1) and deconv.groups == 1 and len(upcat.upsample) == 1)
    return deconv if plain else None


def composable(upcat: nn.Module) -> bool:
    """Whether :func:`composed_upcat` applies to this ``UpCat`` (a plain upsampling, a 3×3×3 same-size
    convolution of the skip connection and the upsampled map) and pays (:data:`MAX_COST`)."""
    deconv, conv = _upsampling(upcat), upcat.convs.conv_0.conv
    if deconv is None or not (isinstance(conv, nn.Conv3d) and conv.kernel_size == (3, 3, 3)
                              and conv.stride == (1, 1, 1) and conv.padding == (1, 1, 1)
                              and conv.dilation == (1, 1, 1) and conv.groups == 1
                              and conv.in_channels > deconv.out_channels):
        return False
    inputs, mid, out = deconv.in_channels, deconv.out_channels, conv.out_channels
    # multiply-adds per coarse voxel: composed (a 4³ kernel scattered per input voxel) against the upsampling
    # (2³ outputs) plus the 3³ convolution of the upsampled channels at 8 fine voxels
    composed = (inputs + (deconv.bias is not None)) * out * 64
    replaced = inputs * mid * 8 + 8 * mid * out * 27
    return composed <= MAX_COST * replaced


def composed_upcat(upcat: nn.Module, x: torch.Tensor, x_e: torch.Tensor) -> torch.Tensor:
    """``upcat(x, x_e)`` with the upsampling and the first convolution composed (module docstring), for a skip
    connection ``x_e`` twice the size of ``x``; its convolutions run channels-last, as the rest of the fast CNN."""
    deconv, conv = upcat.upsample.deconv, upcat.convs.conv_0.conv
    skip = x_e.shape[1]
    if deconv.bias is not None:
        x = torch.cat([x, x.new_ones(x.shape[0], 1, *x.shape[2:])], dim=1)
    kernel = composed_kernel(conv.weight[:, skip:], deconv.weight, deconv.bias)
    upsampled = F.conv_transpose3d(x.contiguous(memory_format=_LAST), kernel.contiguous(memory_format=_LAST),
                                   None, stride=2, padding=1)
    own = torch.mkldnn_convolution(x_e.contiguous(memory_format=_LAST),
                                   conv.weight[:, :skip].contiguous(memory_format=_LAST), conv.bias,
                                   conv.padding, conv.stride, conv.dilation, conv.groups)
    return upcat.convs.conv_1(upcat.convs.conv_0.adn(own + upsampled))
