"""Chunked CPU window attention (vococore.networks.window_attention) against PyTorch's own attention in float64:
output and the gradients of q, k, v and the bias, with and without the shifted-window mask, with chunks that stay
inside one crop and chunks that cross from one crop's windows to the next."""

from __future__ import annotations

import pytest
import torch

import vococore.networks.window_attention as window_attention
from vococore.networks.window_attention import ChunkedWindowAttention


def sdpa_reference(q, k, v, bias, mask, scale):
    """torch's scaled_dot_product_attention with the per-window additive bias spelled out for every batch row."""
    b, h, n, _ = q.shape
    add = bias.expand(b, h, n, n)
    if mask is not None:  # batch rows are (crop, window), windows inner
        windows = mask.shape[0]
        add = add + mask.repeat(b // windows, 1, 1).unsqueeze(1)
    return torch.nn.functional.scaled_dot_product_attention(q, k, v, attn_mask=add, scale=scale)


@pytest.mark.parametrize("masked", [False, True])
@pytest.mark.parametrize("rows_per_chunk", [1, 2, 64])  # 2: chunks [4, 6) cross from crop 0 to crop 1
def test_output_and_gradients_equal_torch_attention(masked, rows_per_chunk, monkeypatch):
    crops, windows, heads, n, d = 3, 5, 3, 27, 4
    monkeypatch.setattr(window_attention, "CHUNK_BYTES", rows_per_chunk * heads * n * n * 4)
    gen = torch.Generator().manual_seed(0)
    q, k, v = (torch.randn(crops * windows, heads, n, d, dtype=torch.float64, generator=gen) for _ in range(3))
    bias = torch.randn(heads, n, n, dtype=torch.float64, generator=gen)
    mask = (torch.rand(windows, n, n, generator=gen) < 0.3).double() * -100.0 if masked else None
    grad = torch.randn(q.shape, dtype=torch.float64, generator=gen)
    results = []
    for attention in (sdpa_reference, ChunkedWindowAttention.apply):
        leaves = [t.clone().requires_grad_() for t in (q, k, v, bias)]
        out = attention(*leaves[:3], leaves[3], mask, 0.5)
        out.backward(grad)
        results.append([out.detach()] + [t.grad for t in leaves])
    for name, ours, ref in zip(("out", "q", "k", "v", "bias"), results[1], results[0]):
        torch.testing.assert_close(ours, ref, rtol=1e-12, atol=1e-12, msg=name)
