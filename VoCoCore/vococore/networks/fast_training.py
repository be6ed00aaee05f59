"""Training-time versions of the inference kernel choices (:mod:`vococore.networks.fast_inference`) that keep
forward and backward equal to PyTorch's default path to float32 rounding.

- 3D convolutions on CPU go to oneDNN (``mkldnn_convolution``, which has its own backward) also while a gradient
  is recorded (PyTorch picks its im2col kernel for a batch of one), on channels-last input and weight; on grids of
  at most 4³ voxels PyTorch's own pick is faster in training and is kept (see ``TINY_GRID``).
- Inside the CNN (BasicUNet, the CNN VoCo encoder) the activations stay channels-last from one convolution to the
  next: instance norm runs on that layout (:mod:`vococore.networks.channels_last_norm`) and only the network's
  output goes back to PyTorch's default layout. Elsewhere (the Swin) each convolution's output is copied back.
- A convolution of a one-channel input (the CNN's first layer) computes its backward on one thread (see
  :class:`_SingleChannelConv`: with two threads its weight gradient was up to 50x slower on this project's CPU).
- BasicUNet's decoder steps skip MONAI's replicate pad where it pads nothing (see :func:`_upcat_forward`), and the
  last one runs its upsampling and the convolution after it as one transposed convolution
  (:mod:`vococore.networks.composed_upsampling`).
- In-place activations (MONAI's ``LeakyReLU(inplace=True)`` after instance norm) run out of place. In place on
  the view that instance norm returns, autograd records a ``CopySlices`` node that copies the whole feature map
  back in the backward pass; measured on the small pretraining step (CNN fs 4, 22 crops of 32³, 1 thread) these
  copies were 27 % of the step (0.45 of 1.64 s). Out of place gives bit-identical values.
- Swin window attention uses ``scaled_dot_product_attention`` in training too (MONAI switches it on only without a
  gradient); on CUDA this is the fused kernel. On CPU in float32 a learnable bias would send SDPA to PyTorch's math
  path, which is memory-bound there (a Swin fs 12 step ran 0.91x the default path's speed with it), so float32 CPU
  training runs :class:`~vococore.networks.window_attention.ChunkedWindowAttention` instead: a few windows at a
  time, in cache.
- On CPU with several intra-op threads, each backbone (a VoCo encoder, BasicUNet, SwinUNETR) splits its training
  batch across the threads, one part per thread on one intra-op thread each (:mod:`vococore.networks.thread_shards`):
  the same numbers, gradients summed over the parts in a fixed order.
"""

from __future__ import annotations

import contextlib
import functools
import types
from collections.abc import Iterator

import torch
from torch import nn
from torch.autograd.function import once_differentiable

from vococore.networks.backbones import CNNEncoder, _PooledEncoder
from vococore.networks.channels_last_norm import ChannelsLastInstanceNorm
from vococore.networks.composed_upsampling import composable, composed_upcat
from vococore.networks.fast_inference import _routable_conv, _window_attention, cpu_float32
from vococore.networks.thread_shards import intra_op_threads, thread_shards
from vococore.networks.window_attention import ChunkedWindowAttention


# Grids of at most this many voxels per channel (the CNN's 4³ and 2³ layers) train with PyTorch's own convolution
# (its im2col kernel for these sizes) on the default layout: forward + backward of the 128 -> 128 layer at 2³ took
# 0.99 ms against 3.27 ms in oneDNN channels-last, 64 -> 64 at 4³ 0.99 against 1.34 ms; at 8³ both were equal
# (one thread, 2 crops). oneDNN's weight gradient for these grids runs a generic GEMM with weight reorders.
TINY_GRID = 64


def _fp32_cpu(conv: nn.Conv3d, x: torch.Tensor) -> bool:
    """A float32 convolution of float32 input on CPU outside autocast: the case the oneDNN routes below take."""
    return cpu_float32(x) and conv.weight.dtype == torch.float32


def _onednn_channels_last(conv: nn.Conv3d, x: torch.Tensor) -> torch.Tensor:
    """``conv`` of ``x`` by oneDNN on channels-last input and weight (no copy of what is channels-last already);
    the output is channels-last. Channels-last made forward + backward of the small CNN's full-size layers (4-24
    channels, 32³) about 2x faster than oneDNN's default layout on this project's CPU."""
    last = torch.channels_last_3d
    return torch.mkldnn_convolution(x.contiguous(memory_format=last), conv.weight.contiguous(memory_format=last),
                                    conv.bias, conv.padding, conv.stride, conv.dilation, conv.groups)


def _channels_last_forward(self: nn.Conv3d, x: torch.Tensor, keep_last: bool = False) -> torch.Tensor:
    """oneDNN for float32 CPU convolutions, with or without a gradient, output back in PyTorch's default layout
    or, with ``keep_last`` (a layer inside the CNN), left channels-last; PyTorch's own path otherwise (other
    devices, autocast, which casts inputs only for ``conv3d``)."""
    if not _fp32_cpu(self, x):
        return type(self).forward(self, x)
    if torch.is_grad_enabled() and x.shape[2:].numel() <= TINY_GRID:
        out = type(self).forward(self, x.contiguous())
        return out.contiguous(memory_format=torch.channels_last_3d) if keep_last else out
    out = _onednn_channels_last(self, x)
    return out if keep_last else out.contiguous()


def _instance_norm_forward(self: nn.InstanceNorm3d, x: torch.Tensor) -> torch.Tensor:
    """:class:`ChannelsLastInstanceNorm` for float32 CPU input (channels-last from the convolution before);
    PyTorch's own instance norm otherwise."""
    if not cpu_float32(x) or x.dim() != 5:
        return type(self).forward(self, x)
    return ChannelsLastInstanceNorm.apply(x, self.weight, self.bias, self.eps)


class _SingleChannelConv(torch.autograd.Function):
    """oneDNN convolution of a one-channel input whose backward runs on one thread.

    With two threads the weight gradient of a one-channel 3D convolution (the CNN's first layer) took 0.3-2.3 s
    for 22 crops of 32³ on this project's 2-core VM under load, against 0.04 s on one thread (oneDNN and PyTorch's
    own im2col kernel alike; forward and the other layers' backward are not affected), and it was 93 % of the
    two-thread ``small`` pretraining step."""

    @staticmethod
    def forward(ctx, x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None, conv: nn.Conv3d,
                keep_last: bool) -> torch.Tensor:
        """``conv``'s convolution of ``x`` by oneDNN (the kernel PyTorch picks for a batch of several crops), its
        output channels-last with ``keep_last``."""
        if keep_last:
            x, weight = _one_channel_as_last(x), _one_channel_as_last(weight)
        ctx.save_for_backward(x, weight)
        ctx.conv, ctx.has_bias, ctx.keep_last = conv, bias is not None, keep_last
        return torch.mkldnn_convolution(x, weight, bias, conv.padding, conv.stride, conv.dilation, conv.groups)

    @staticmethod
    @once_differentiable
    def backward(ctx, grad: torch.Tensor):
        """oneDNN's backward (the default path's) for the gradients that are needed, on one thread."""
        x, weight = ctx.saved_tensors
        conv = ctx.conv
        mask = [ctx.needs_input_grad[0], ctx.needs_input_grad[1], ctx.has_bias and ctx.needs_input_grad[2]]
        grad = grad.contiguous(memory_format=torch.channels_last_3d if ctx.keep_last else torch.contiguous_format)
        with intra_op_threads(1):
            gx, gw, gb = torch.ops.aten.convolution_backward(
                grad, x, weight, [weight.shape[0]] if ctx.has_bias else None, conv.stride, conv.padding,
                conv.dilation, False, [0, 0, 0], conv.groups, mask)
        return gx, gw, gb, None, None


def _one_channel_as_last(t: torch.Tensor) -> torch.Tensor:
    """A contiguous one-channel 5-D tensor given channels-last strides over the same memory (no copy). With one
    channel both layouts are the same bytes, ``contiguous(memory_format=channels_last_3d)`` keeps the default
    strides, and oneDNN then writes a default-layout output; with these strides it writes channels-last."""
    n, _, d, h, w = t.shape
    return t.as_strided(t.shape, (d * h * w, 1, h * w, w, 1))


def _single_channel_forward(self: nn.Conv3d, x: torch.Tensor, keep_last: bool = False) -> torch.Tensor:
    """:class:`_SingleChannelConv` for float32 CPU input with a gradient (output channels-last with
    ``keep_last``); :func:`_channels_last_forward` otherwise."""
    if not (_fp32_cpu(self, x) and torch.is_grad_enabled()):
        return _channels_last_forward(self, x, keep_last)
    return _SingleChannelConv.apply(x.contiguous(), self.weight.contiguous(), self.bias, self, keep_last)


def _sdpa_window_attention(self: nn.Module, x: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
    """MONAI ``WindowAttention`` forward with the attention as one SDPA call, with or without a gradient: the
    relative position bias (and the shifted-window mask) is the additive ``attn_mask``; chunked for float32 CPU
    training (see the module docstring)."""
    b, n, c = x.shape
    qkv = self.qkv(x).reshape(b, n, 3, self.num_heads, c // self.num_heads).permute(2, 0, 3, 1, 4)
    q, k, v = qkv[0], qkv[1], qkv[2]
    index = self.relative_position_index[:n, :n].reshape(-1)
    bias = self.relative_position_bias_table[index].reshape(n, n, -1).permute(2, 0, 1)
    dropout = self.attn_drop.p if self.training else 0.0
    if dropout == 0.0 and torch.is_grad_enabled() and cpu_float32(q):
        out = ChunkedWindowAttention.apply(q, k, v, bias.contiguous(), mask, self.scale)
        return self.proj_drop(self.proj(out.transpose(1, 2).reshape(b, n, c)))
    if mask is not None:
        windows = mask.shape[0]
        bias = bias.view(1, 1, self.num_heads, n, n) + mask.reshape(1, windows, 1, n, n)
        bias = bias.expand(b // windows, windows, self.num_heads, n, n).reshape(b, self.num_heads, n, n)
    else:
        bias = bias.unsqueeze(0)
    out = torch.nn.functional.scaled_dot_product_attention(q, k, v, attn_mask=bias.to(q.dtype), dropout_p=dropout,
                                                           scale=self.scale)
    return self.proj_drop(self.proj(out.transpose(1, 2).reshape(b, n, c)))


def _upcat_forward(self: nn.Module, x: torch.Tensor, x_e: torch.Tensor | None, compose: bool = False
                   ) -> torch.Tensor:
    """MONAI's ``UpCat`` (a BasicUNet decoder step) without its replicate pad where the upsampled map already has
    the skip connection's shape: there the pad changes nothing but is a copy of the map forward and back, and its
    backward first copied the channels-last gradient to the default layout (1.9 ms of a 0.15 s one-thread step of
    BasicUNet fs 8 at 16 x 32³). With ``compose`` (float32 on CPU, a skip connection twice the size of ``x``) the
    upsampling and the convolution after it run as one transposed convolution
    (:mod:`vococore.networks.composed_upsampling`). MONAI's own forward otherwise (odd edges, no skip connection),
    which upsamples again: a second upsampling only for odd-edged input, rather than a copy of MONAI's pad rule."""
    if (compose and x_e is not None and cpu_float32(x)
            and tuple(x_e.shape[2:]) == tuple(2 * size for size in x.shape[2:])):
        return composed_upcat(self, x, x_e)
    up = self.upsample(x)
    if x_e is None or x_e.shape[2:] != up.shape[2:]:
        return type(self).forward(self, x, x_e)
    return self.convs(torch.cat([x_e, up], dim=1))


def _inplace_activation(module: nn.Module) -> bool:
    """An activation or dropout module that currently writes in place (``inplace=True``)."""
    return isinstance(module, (nn.LeakyReLU, nn.ReLU, nn.ReLU6, nn.ELU, nn.SELU, nn.CELU, nn.SiLU, nn.Hardswish,
                               nn.Hardtanh, nn.Dropout, nn.Dropout3d)) and getattr(module, "inplace", False)


def _backbones(network: nn.Module) -> list[tuple[nn.Module, list[nn.Module]]]:
    """The outermost VoCo encoders, BasicUNets and SwinUNETRs in ``network`` (``network`` itself included), each
    with the modules its forward runs."""
    from monai.networks.nets import BasicUNet, SwinUNETR  # the networks were built with MONAI: already imported

    found: list[tuple[str, nn.Module]] = []
    for name, module in network.named_modules():
        inside = any(name.startswith(f"{outer}.") or not outer for outer, _ in found)
        if not inside and isinstance(module, (_PooledEncoder, BasicUNet, SwinUNETR)):
            found.append((name, module))
    return [(m, m.encoder_modules() if isinstance(m, _PooledEncoder) else [m]) for _, m in found]


def _channels_last_inside(backbones: list[tuple[nn.Module, list[nn.Module]]]) -> set[nn.Module]:
    """The modules of the CNN backbones (BasicUNet, the CNN encoder) whose outputs may stay channels-last: all
    but a BasicUNet's last convolution, whose output is the network's."""
    from monai.networks.nets import BasicUNet

    inside: set[nn.Module] = set()
    for backbone, _ in backbones:
        if isinstance(backbone, (BasicUNet, CNNEncoder)):
            inside.update(backbone.modules())
            if isinstance(backbone, BasicUNet):
                inside.discard(backbone.final_conv)
    return inside


@contextlib.contextmanager
def fast_training(network: nn.Module) -> Iterator[dict[str, int]]:
    """While active, ``network`` trains with the kernel choices above; everything is restored on exit.

    Yields how many layers were switched: ``{"conv3d": n, "norm": l, "attention": m, "activation": k,
    "decoder": u, "composed": v, "threads": b}`` (``conv3d`` counts the one-channel convolutions too; ``norm``:
    channels-last instance norms; ``decoder``: BasicUNet ``UpCat`` steps, ``composed`` of them with their
    upsampling; ``threads``: backbones whose batch is split across threads).
    """
    from monai.networks.nets.basic_unet import UpCat  # as in _backbones: MONAI is imported already

    backbones = _backbones(network)
    last = _channels_last_inside(backbones)
    modules = list(network.modules())
    convs = [m for m in modules if _routable_conv(m)]
    norms = [m for m in modules if m in last and type(m) is nn.InstanceNorm3d and not m.track_running_stats]
    attentions = [m for m in modules if _window_attention(m) and "forward" not in vars(m)]
    upcats = [m for m in modules if type(m) is UpCat and "forward" not in vars(m)]
    activations = [m for m in modules if _inplace_activation(m)]
    for module in convs:
        single = module.in_channels == 1 and module.groups == 1
        forward = _single_channel_forward if single else _channels_last_forward
        module.forward = types.MethodType(functools.partial(forward, keep_last=module in last), module)
    for module in norms:
        module.forward = types.MethodType(_instance_norm_forward, module)
    for module in attentions:
        module.forward = types.MethodType(_sdpa_window_attention, module)
    composed = [m for m in upcats if composable(m)]
    for module in upcats:
        module.forward = types.MethodType(functools.partial(_upcat_forward, compose=module in composed), module)
    for module in activations:
        module.inplace = False
    try:
        with thread_shards(backbones) as sharded:
            yield {"conv3d": len(convs), "norm": len(norms), "attention": len(attentions),
                   "activation": len(activations), "decoder": len(upcats), "composed": len(composed),
                   "threads": sharded}
    finally:
        for module in convs + norms + attentions + upcats:
            del module.forward
        for module in activations:
            module.inplace = True
