"""Training-time versions of the inference kernel choices (:mod:`vococore.networks.fast_inference`) that keep
forward and backward equal to PyTorch's default path to float32 rounding.

- 3D convolutions on CPU go to oneDNN (``mkldnn_convolution``, which has its own backward) also while a gradient
  is recorded (PyTorch picks its im2col kernel for a batch of one), on channels-last copies of input and weight.
- In-place activations (MONAI's ``LeakyReLU(inplace=True)`` after instance norm) run out of place. In place on
  the view that instance norm returns, autograd records a ``CopySlices`` node that copies the whole feature map
  back in the backward pass; measured on the small pretraining step (CNN fs 4, 22 crops of 32³, 1 thread) these
  copies were 27 % of the step (0.45 of 1.64 s). Out of place gives bit-identical values.
- Swin window attention uses ``scaled_dot_product_attention`` in training too (MONAI switches it on only without a
  gradient). On CUDA this is the fused kernel; on CPU a learnable bias falls back to PyTorch's math path, about as
  fast as MONAI's (measured 1.15x for one attention call), same numbers.
"""

from __future__ import annotations

import contextlib
import types
from collections.abc import Iterator

import torch
from torch import nn

from vococore.networks.fast_inference import _routable_conv, _window_attention


def _channels_last_forward(self: nn.Conv3d, x: torch.Tensor) -> torch.Tensor:
    """oneDNN on channels-last (NDHWC) copies of input and weight for float32 CPU convolutions, with or without a
    gradient, output back in PyTorch's default layout; PyTorch's own path otherwise (other devices, autocast,
    which casts inputs only for ``conv3d``). Channels-last made forward + backward of the small CNN's full-size
    layers (4-24 channels, 32³) about 2x faster than oneDNN's default layout on this project's CPU."""
    if (x.device.type != "cpu" or x.dtype != torch.float32 or self.weight.dtype != torch.float32
            or torch.is_autocast_enabled("cpu")):
        return type(self).forward(self, x)
    last = torch.channels_last_3d
    out = torch.mkldnn_convolution(x.contiguous(memory_format=last), self.weight.contiguous(memory_format=last),
                                   self.bias, self.padding, self.stride, self.dilation, self.groups)
    return out.contiguous()


def _sdpa_window_attention(self: nn.Module, x: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
    """MONAI ``WindowAttention`` forward with the attention as one SDPA call, with or without a gradient: the
    relative position bias (and the shifted-window mask) is the additive ``attn_mask``."""
    b, n, c = x.shape
    qkv = self.qkv(x).reshape(b, n, 3, self.num_heads, c // self.num_heads).permute(2, 0, 3, 1, 4)
    q, k, v = qkv[0], qkv[1], qkv[2]
    index = self.relative_position_index[:n, :n].reshape(-1)
    bias = self.relative_position_bias_table[index].reshape(n, n, -1).permute(2, 0, 1)
    if mask is not None:
        windows = mask.shape[0]
        bias = bias.view(1, 1, self.num_heads, n, n) + mask.reshape(1, windows, 1, n, n)
        bias = bias.expand(b // windows, windows, self.num_heads, n, n).reshape(b, self.num_heads, n, n)
    else:
        bias = bias.unsqueeze(0)
    dropout = self.attn_drop.p if self.training else 0.0
    out = torch.nn.functional.scaled_dot_product_attention(q, k, v, attn_mask=bias.to(q.dtype), dropout_p=dropout,
                                                           scale=self.scale)
    return self.proj_drop(self.proj(out.transpose(1, 2).reshape(b, n, c)))


def _inplace_activation(module: nn.Module) -> bool:
    """An activation or dropout module that currently writes in place (``inplace=True``)."""
    return isinstance(module, (nn.LeakyReLU, nn.ReLU, nn.ReLU6, nn.ELU, nn.SELU, nn.CELU, nn.SiLU, nn.Hardswish,
                               nn.Hardtanh, nn.Dropout, nn.Dropout3d)) and getattr(module, "inplace", False)


@contextlib.contextmanager
def fast_training(network: nn.Module) -> Iterator[dict[str, int]]:
    """While active, ``network`` trains with the kernel choices above; everything is restored on exit.

    Yields how many layers were switched: ``{"conv3d": n, "attention": m, "activation": k}``.
    """
    modules = list(network.modules())
    convs = [m for m in modules if _routable_conv(m)]
    attentions = [m for m in modules if _window_attention(m) and "forward" not in vars(m)]
    activations = [m for m in modules if _inplace_activation(m)]
    for module in convs:
        module.forward = types.MethodType(_channels_last_forward, module)
    for module in attentions:
        module.forward = types.MethodType(_sdpa_window_attention, module)
    for module in activations:
        module.inplace = False
    try:
        yield {"conv3d": len(convs), "attention": len(attentions), "activation": len(activations)}
    finally:
        for module in convs + attentions:
            del module.forward
        for module in activations:
            module.inplace = True
