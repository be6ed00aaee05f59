"""Swin window attention with a learnable bias for CPU training, computed a few windows at a time.

Why: on CPU, ``scaled_dot_product_attention`` with a bias that needs a gradient runs PyTorch's math path, which
writes every window's n x n score matrix to memory several times over (scores, the safe-softmax checks, softmax,
and again in the backward). For 64³ crops the first Swin stage has 125 windows of 343 tokens per head: 220 M
scores for 5 crops (880 MB), so the step is bound by memory traffic. Measured on the Swin fs 12 encoder (5 crops
of 64³, forward + backward, 1 thread), attention was 17 of 25 s. Here each chunk's scores stay in cache: the
forward keeps no scores, and the backward recomputes each chunk's softmax. The products with the 4-12-wide head
vectors are written as (head_dim x n) @ (n x n), about 5x faster in MKL here than (n x n) @ (n x head_dim). Same
formula, float32 rounding apart; the figures are in BENCHMARKS.md ("Swin window attention on CPU").
"""

from __future__ import annotations

import torch
from torch.autograd.function import once_differentiable

CHUNK_BYTES = 4 << 20  # scores per chunk; fits this project's CPU cache (L2 1 MiB per core, L3 32 MiB)


def _chunks(batch: int, heads: int, tokens: int) -> list[slice]:
    """Batch slices whose scores (rows x heads x tokens²) fit :data:`CHUNK_BYTES`."""
    rows = max(1, CHUNK_BYTES // (heads * tokens * tokens * 4))
    return [slice(start, min(start + rows, batch)) for start in range(0, batch, rows)]


def _probabilities(qs: torch.Tensor, k: torch.Tensor, bias: torch.Tensor, mask: torch.Tensor | None,
                   rows: slice) -> torch.Tensor:
    """Softmax of ``qs k^T + bias (+ the mask of each row's window)`` for the batch ``rows``."""
    scores = torch.matmul(qs[rows], k[rows].transpose(-1, -2))
    scores += bias
    if mask is not None:  # batch row i is window i % nw of its crop
        scores += mask[torch.arange(rows.start, rows.stop, device=qs.device) % mask.shape[0]].unsqueeze(1)
    return scores.softmax(-1)


def _times(p: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """``p @ x`` for p (..., n, n) and x (..., n, head_dim), computed as ``(x^T p^T)^T``."""
    return torch.matmul(x.transpose(-1, -2), p.transpose(-1, -2)).transpose(-1, -2)


class ChunkedWindowAttention(torch.autograd.Function):
    """``softmax(scale q k^T + bias + mask) v`` over the batch in chunks; ``bias`` (heads, n, n) gets a gradient,
    ``mask`` (windows, n, n) of shifted windows does not."""

    @staticmethod
    def forward(ctx, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, bias: torch.Tensor,
                mask: torch.Tensor | None, scale: float) -> torch.Tensor:
        """q, k, v: (batch, heads, n, head_dim); the output has their shape."""
        qs, k, v = (q * scale).contiguous(), k.contiguous(), v.contiguous()
        out = torch.empty_like(qs)
        for rows in _chunks(*q.shape[:3]):
            out[rows] = _times(_probabilities(qs, k, bias, mask, rows), v[rows])
        ctx.save_for_backward(qs, k, v, bias, mask, out)
        ctx.scale = scale
        return out

    @staticmethod
    @once_differentiable
    def backward(ctx, grad: torch.Tensor):
        """Each chunk's softmax recomputed; the bias gradient summed over the chunks in order."""
        qs, k, v, bias, mask, out = ctx.saved_tensors
        grad = grad.contiguous()
        dot = (grad * out).sum(-1, keepdim=True)  # row sums of grad * probabilities @ v, for the softmax backward
        gq, gk, gv = torch.empty_like(qs), torch.empty_like(k), torch.empty_like(v)
        gbias = torch.zeros_like(bias)
        for rows in _chunks(*qs.shape[:3]):
            probs = _probabilities(qs, k, bias, mask, rows)
            g = grad[rows]
            gv[rows] = _times(probs.transpose(-1, -2), g)
            gs = torch.matmul(g, v[rows].transpose(-1, -2))
            gs -= dot[rows]
            gs *= probs  # the gradient of the scores before the softmax
            gbias += gs.sum(0)
            gq[rows] = _times(gs, k[rows])
            gk[rows] = _times(gs.transpose(-1, -2), qs[rows])
        return gq * ctx.scale, gk, gv, gbias, None, None
