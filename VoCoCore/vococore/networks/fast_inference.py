"""Faster kernels for inference that compute the same numbers as the default ones (to float32 rounding).

- 3D convolutions on CPU: PyTorch picks its convolution kernel with a heuristic written for 2D images, so a Conv3d
  on one window with few channels (batch 1, ``N*C*D*H`` below 20480) runs the slow im2col kernel
  (``slow_conv3d_forward``) instead of oneDNN. Most layers of a small CNN on a 64³ window fall under that rule;
  oneDNN computes them about twice as fast on this project's CPU, so they are routed to it explicitly.
- Swin window attention: MONAI's ``WindowAttention`` can use ``scaled_dot_product_attention`` when no gradient is
  recorded (``use_flash_attention``), which skips materialising the softmax input and runs ~1.5-1.8x faster here.
"""

from __future__ import annotations

import contextlib
import types
from collections.abc import Callable, Iterator

import torch
from torch import nn


def cpu_float32(x: torch.Tensor) -> bool:
    """A float32 tensor on CPU outside CPU autocast: the case every CPU kernel choice of inference and training
    is made for (autocast would change the dtypes the kernels see)."""
    return x.device.type == "cpu" and x.dtype == torch.float32 and not torch.is_autocast_enabled("cpu")


def _onednn_forward(self: nn.Conv3d, x: torch.Tensor) -> torch.Tensor:
    """oneDNN for float32 CPU inference (no autograd, no autocast); PyTorch's own choice otherwise."""
    if cpu_float32(x) and self.weight.dtype == torch.float32 and not torch.is_grad_enabled():
        return torch.mkldnn_convolution(x, self.weight, self.bias, self.padding, self.stride, self.dilation,
                                        self.groups)
    return type(self).forward(self, x)


def _routable_conv(module: nn.Module) -> bool:
    """A plain Conv3d (a subclass must not change what forward computes) with explicit zero padding (what
    ``mkldnn_convolution`` computes), not already patched."""
    cls = type(module)
    return (torch.backends.mkldnn.is_available() and isinstance(module, nn.Conv3d)
            and cls.forward is nn.Conv3d.forward and cls._conv_forward is nn.Conv3d._conv_forward
            and module.padding_mode == "zeros" and isinstance(module.padding, tuple) and "forward" not in vars(module))


def _window_attention(module: nn.Module) -> bool:
    """A MONAI Swin ``WindowAttention`` that has the SDPA switch (MONAI 1.5+) and does not use it yet."""
    return type(module).__name__ == "WindowAttention" and getattr(module, "use_flash_attention", True) is False


@contextlib.contextmanager
def fast_inference(network: nn.Module | Callable[[torch.Tensor], torch.Tensor]) -> Iterator[dict[str, int]]:
    """While active, ``network`` uses the faster inference kernels above; everything is restored on exit.

    Yields how many layers were switched: ``{"conv3d": n, "attention": m}`` (zeros for a plain callable).
    Both switches act only when no gradient is recorded, so training keeps PyTorch's default path; the
    convolutions also keep it under autocast.
    """
    modules = list(network.modules()) if isinstance(network, nn.Module) else []
    convs = [m for m in modules if _routable_conv(m)]
    attentions = [m for m in modules if _window_attention(m)]
    for module in convs:
        module.forward = types.MethodType(_onednn_forward, module)
    for module in attentions:
        module.use_flash_attention = True
    try:
        yield {"conv3d": len(convs), "attention": len(attentions)}
    finally:
        for module in convs:
            del module.forward
        for module in attentions:
            module.use_flash_attention = False
