"""Swin window attention forward + backward on CPU with a learnable bias: PyTorch's
``scaled_dot_product_attention`` (the baseline: with a bias that needs a gradient it runs the math path) against
``vococore.networks.window_attention.ChunkedWindowAttention`` (the training path of ``fast_training``), float32,
same inputs, alternating one call of each per round. Shapes: the first stage of a feature-size-12 Swin on 5 crops
of 64³ (625 windows of 7³ = 343 tokens, 3 heads of 4), without and with the shifted-window mask. Prints one JSON
line per case: medians, the median of the per-round ratios, and the largest difference of output and gradients
relative to each tensor's largest value.

    python benchmarks/bench_window_attention.py [--rounds 5] [--threads 1]
"""

from __future__ import annotations

import argparse
import json
import statistics
import time

import torch

from vococore.networks.window_attention import ChunkedWindowAttention


def sdpa(q, k, v, bias, mask, scale):
    """The previous training path: one SDPA call with the bias (and mask) expanded to every window."""
    b, h, n, _ = q.shape
    if mask is None:
        add = bias.unsqueeze(0)
    else:
        windows = mask.shape[0]
        add = (bias.view(1, 1, h, n, n) + mask.view(1, windows, 1, n, n)).expand(b // windows, windows, h, n, n)
        add = add.reshape(b, h, n, n)
    return torch.nn.functional.scaled_dot_product_attention(q, k, v, attn_mask=add, scale=scale)


def one_call(attention, tensors, mask, grad):
    """Forward + backward; the seconds and (output, gradients)."""
    leaves = [t.detach().requires_grad_() for t in tensors]
    start = time.perf_counter()
    out = attention(*leaves[:3], leaves[3], mask, 0.5)
    out.backward(grad)
    return time.perf_counter() - start, [out.detach()] + [t.grad for t in leaves]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    crops, windows, heads, n, d = 5, 125, 3, 343, 4
    gen = torch.Generator().manual_seed(0)
    tensors = [torch.randn(crops * windows, heads, n, d, generator=gen) for _ in range(3)]
    tensors.append(torch.randn(heads, n, n, generator=gen))
    grad = torch.randn(tensors[0].shape, generator=gen)
    shifted = (torch.rand(windows, n, n, generator=gen) < 0.3).float() * -100.0
    for name, mask in (("windows", None), ("shifted windows", shifted)):
        times = {"sdpa": [], "chunked": []}
        for _ in range(args.rounds):
            t_ref, ref = one_call(sdpa, tensors, mask, grad)
            t_ours, ours = one_call(ChunkedWindowAttention.apply, tensors, mask, grad)
            times["sdpa"].append(t_ref)
            times["chunked"].append(t_ours)
        diff = max(float((a - b).abs().max() / b.abs().max()) for a, b in zip(ours, ref))
        print(json.dumps({"case": name, "threads": args.threads, "rounds": args.rounds,
                          "sdpa_s": round(statistics.median(times["sdpa"]), 3),
                          "chunked_s": round(statistics.median(times["chunked"]), 3),
                          "speedup": round(statistics.median(a / b for a, b in zip(times["sdpa"], times["chunked"])), 2),
                          "max_rel_diff": float(f"{diff:.1e}")}), flush=True)


if __name__ == "__main__":
    main()
