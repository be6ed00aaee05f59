"""Training kernels (vococore.networks.fast_training): the exact path gives the default path's losses and gradients
to float32 rounding, its kernel choices are in effect (oneDNN for a batch-1 Conv3d above 4³, a one-thread backward
for the one-channel first layer, no in-place activation, the CNN's activations and instance norms channels-last, no
replicate pad in the decoder unless an edge is odd, CPU window attention in cache-sized chunks with a gradient), layers
are restored on exit, and the shared loop uses it by default, with a fused AdamW that makes the default AdamW's
updates to float32 rounding."""

from __future__ import annotations

import contextlib
import copy
import math
import tempfile

import pytest
import torch
from torch import nn

from vococore.networks.backbones import BackboneSpec, build_segmenter
from vococore.networks.fast_training import fast_training

needs_onednn = pytest.mark.skipif(not torch.backends.mkldnn.is_available(), reason="PyTorch built without oneDNN")


def _step(net: nn.Module, x: torch.Tensor, fast: bool) -> tuple[torch.Tensor, dict[str, torch.Tensor], set]:
    """Loss (mean square of the output against a fixed target), gradients by name and the ops of the forward;
    each convolution kernel also as ``(kernel, voxels per channel of its input)``."""
    target = torch.linspace(-1, 1, x[:, :1].numel()).reshape(x[:, :1].shape)
    net.zero_grad(set_to_none=True)
    with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU], record_shapes=True) as prof:
        if fast:
            with fast_training(net) as switched:
                out = net(x)
            assert sum(switched.values()) > 0
        else:
            out = net(x)
    loss = ((out[:, :1] - target) ** 2).mean()
    loss.backward()
    grads = {name: p.grad.clone() for name, p in net.named_parameters() if p.grad is not None}
    grids = {(e.name, math.prod(e.input_shapes[0][2:])) for e in prof.events()
             if e.name in CONV_KERNELS and e.input_shapes and len(e.input_shapes[0]) == 5}
    return loss.detach(), grads, {event.key for event in prof.key_averages()} | _backward_nodes(loss) | grids


CONV_KERNELS = ("aten::mkldnn_convolution", "aten::slow_conv3d_forward")


def _grids(ops: set, kernel: str) -> set[int]:
    """Voxels per channel of the inputs that ``kernel`` convolved (from :func:`_step`'s ops)."""
    return {op[1] for op in ops if isinstance(op, tuple) and op[0] == kernel}


def _backward_nodes(loss: torch.Tensor) -> set[str]:
    """Names of the autograd nodes that computed ``loss`` (what the backward pass ran)."""
    seen, todo, names = set(), [loss.grad_fn], set()
    while todo:
        node = todo.pop()
        if node is None or node in seen:
            continue
        seen.add(node)
        names.add(type(node).__name__)
        todo.extend(next_node for next_node, _ in node.next_functions)
    return names


def _assert_same_gradients(fast: dict[str, torch.Tensor], default: dict[str, torch.Tensor],
                           tol: float = 1e-4) -> None:
    """All gradients together within 1e-4 of the default path's (relative, in norm), and each one that is not
    near zero (above 1% of the largest) within ``tol``: float32 rounding, which grows with depth."""
    assert fast.keys() == default.keys()
    a = torch.cat([g.flatten() for g in default.values()])
    b = torch.cat([fast[name].flatten() for name in default])
    assert float((b - a).norm() / a.norm()) < 1e-4
    largest = max(float(g.norm()) for g in default.values())
    checked = [name for name, g in default.items() if float(g.norm()) > 1e-2 * largest]
    for name in checked:
        assert float((fast[name] - default[name]).norm() / default[name].norm()) < tol, name
    assert len(checked) > 10


def _input_off_the_kinks(net: nn.Module, shape: tuple[int, ...], seeds: range = range(1, 9)) -> torch.Tensor:
    """The first input (by seed) on which every LeakyReLU input has the same signs on both paths. A pre-activation
    within float32 rounding of the kink lands on either side by the kernels' summation order, and the gradient
    behind it then differs by (1 - slope) of that voxel's: seen once in 16384 (5e-6 from zero, PyTorch's 2-thread
    instance norm on a Xeon), 3e-4 of all gradients, a tie and not a kernel's error."""
    for seed in seeds:
        x = torch.rand(*shape, generator=torch.Generator().manual_seed(seed))
        signs: list[list[torch.Tensor]] = []
        for fast in (False, True):
            seen: list[torch.Tensor] = []
            hooks = [m.register_forward_pre_hook(lambda m, args: seen.append(args[0].detach() > 0))
                     for m in net.modules() if isinstance(m, nn.LeakyReLU)]
            with fast_training(net) if fast else contextlib.nullcontext():
                net(x)
            for hook in hooks:
                hook.remove()
            signs.append(seen)
        if len(signs[0]) == len(signs[1]) > 10 and all(map(torch.equal, *signs)):
            return x
    raise AssertionError(f"every seed of {seeds} puts a pre-activation on opposite sides of the kink")


@needs_onednn
def test_cnn_exact_path_same_loss_and_gradients_with_the_fast_kernels():
    torch.manual_seed(0)
    net = build_segmenter(BackboneSpec(arch="cnn", feature_size=8), 3).train()
    threads = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        x = _input_off_the_kinks(net, (1, 1, 32, 32, 32))
        loss, grads, default_ops = _step(net, x, fast=False)
        fast_loss, fast_grads, fast_ops = _step(net, x, fast=True)
        assert torch.get_num_threads() == 2  # the one-channel convolution's backward (one thread) restored it
    finally:
        torch.set_num_threads(threads)
    assert "aten::slow_conv3d_forward" in default_ops and "aten::leaky_relu_" in default_ops  # PyTorch's picks
    # oneDNN from 8³ up; on the 4³ and 2³ grids PyTorch's own pick (its im2col kernel, faster there)
    assert _grids(default_ops, "aten::slow_conv3d_forward") == {32**3, 16**3, 8**3, 4**3, 2**3}
    assert _grids(fast_ops, "aten::mkldnn_convolution") == {32**3, 16**3, 8**3}
    assert _grids(fast_ops, "aten::slow_conv3d_forward") == {4**3, 2**3}
    # the decoder's replicate pad where the shapes match already (a copy forward and back) is skipped
    assert "aten::replication_pad3d" in default_ops and "aten::replication_pad3d" not in fast_ops
    assert "_SingleChannelConvBackward" in fast_ops and "_SingleChannelConvBackward" not in default_ops  # 1st layer
    assert "aten::leaky_relu_" not in fast_ops and "aten::leaky_relu" in fast_ops
    # instance norm on the channels-last activations, not PyTorch's (batch-norm based) one on copies
    assert "aten::native_batch_norm" in default_ops and "aten::native_batch_norm" not in fast_ops
    assert "ChannelsLastInstanceNormBackward" in fast_ops
    torch.testing.assert_close(fast_loss, loss, rtol=1e-5, atol=0)
    assert fast_grads.keys() == grads.keys() and len(grads) > 30
    _assert_same_gradients(fast_grads, grads)
    assert not any("forward" in vars(m) for m in net.modules())  # restored
    assert all(m.inplace for m in net.modules() if isinstance(m, nn.LeakyReLU))


def test_decoder_pads_odd_edges_as_monai_does_with_the_default_paths_gradients():
    """36³: the 9³ encoder map meets an 8³ upsampled one, which MONAI's decoder pads; the fast path keeps that
    pad (once) and computes the default path's loss and gradients."""
    torch.manual_seed(0)
    net = build_segmenter(BackboneSpec(arch="cnn", feature_size=4), 2).train()
    x = _input_off_the_kinks(net, (1, 1, 36, 36, 36), range(2, 10))
    loss, grads, default_ops = _step(net, x, fast=False)
    fast_loss, fast_grads, fast_ops = _step(net, x, fast=True)
    assert "aten::replication_pad3d" in fast_ops and "ReplicationPad3DBackward0" in fast_ops
    torch.testing.assert_close(fast_loss, loss, rtol=1e-5, atol=0)
    _assert_same_gradients(fast_grads, grads)


@needs_onednn
def test_cnn_activations_stay_channels_last_from_convolution_to_convolution():
    """Every instance norm of the fast CNN sees channels-last input (no copy between layers) and the network's
    output comes back in the default layout."""
    net = build_segmenter(BackboneSpec(arch="cnn", feature_size=4), 2).train()
    seen: list[bool] = []
    hooks = [m.register_forward_hook(lambda m, args, out: seen.append(
        args[0].is_contiguous(memory_format=torch.channels_last_3d) and args[0].shape[1] > 1))
        for m in net.modules() if isinstance(m, nn.InstanceNorm3d)]
    with fast_training(net) as switched:
        out = net(torch.rand(2, 1, 32, 32, 32))
    for hook in hooks:
        hook.remove()
    assert switched["norm"] == len(hooks) > 10 and len(seen) >= len(hooks) and all(seen)  # (once per part)
    assert out.is_contiguous() and out.shape == (2, 2, 32, 32, 32)


def test_swin_training_attention_runs_chunked_with_a_gradient_and_same_gradients():
    torch.manual_seed(0)
    net = build_segmenter(BackboneSpec(arch="swin", feature_size=12, use_checkpoint=False), 2).train()
    x = torch.rand(1, 1, 64, 32, 32, generator=torch.Generator().manual_seed(3))  # bottleneck 2x1x1
    loss, grads, default_ops = _step(net, x, fast=False)
    fast_loss, fast_grads, fast_ops = _step(net, x, fast=True)
    assert "aten::scaled_dot_product_attention" not in default_ops  # MONAI's SDPA switch: inference only
    assert {"ChunkedWindowAttention", "ChunkedWindowAttentionBackward"} <= fast_ops  # CPU training: chunked
    torch.testing.assert_close(fast_loss, loss, rtol=1e-5, atol=0)
    bias_grads = [n for n in grads if n.endswith("relative_position_bias_table")]
    assert len(bias_grads) == 8
    _assert_same_gradients(fast_grads, grads, tol=1e-2)  # 1.3e-3 seen deep in the Swin (2e-5 overall)
    assert not any("forward" in vars(m) for m in net.modules())  # restored


def test_shared_loop_uses_the_kernels_by_default_with_the_same_losses():
    from vococore.pretraining.model import VoCoModel
    from vococore.pretraining.pretext import RECIPES, PretextSampler, collate
    from vococore.pretraining.run import voco_step
    from vococore.training.distributed import DistInfo
    from vococore.training.loop import LoopConfig, Trainer

    import numpy as np

    recipe, spec = RECIPES["small"], BackboneSpec(arch="cnn", feature_size=4)
    torch.manual_seed(0)
    model = VoCoModel(spec, recipe)
    rng = np.random.default_rng(0)
    sampler = PretextSampler(recipe)
    batch = collate([sampler(torch.rand(1, *recipe.region_size), rng) for _ in range(2)])
    assert LoopConfig().fast_kernels
    parts, ops, trained = {}, {}, {}
    threads = torch.get_num_threads()
    torch.set_num_threads(2)  # as on a 2-core machine: the fast path splits the backbone's 22 crops over 2 threads
    with tempfile.TemporaryDirectory() as tmp:
        for fast in (False, True):
            trainer = Trainer(copy.deepcopy(model), voco_step, LoopConfig(steps=1, lr=1e-3, fast_kernels=fast), tmp,
                              DistInfo(device=torch.device("cpu")), backbone=spec, tensorboard=False)
            torch.manual_seed(5)
            with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU]) as prof:
                parts[fast] = trainer.train_step(batch)
            ops[fast] = {event.key for event in prof.key_averages()}
            trained[fast] = {name: p.detach() for name, p in trainer.model.named_parameters()}
            grads = {name: p.grad for name, p in trainer.model.named_parameters() if p.grad is not None}
    torch.set_num_threads(threads)
    assert parts[False].keys() == parts[True].keys()
    for name, value in parts[False].items():  # the inter loss is a difference of similarities: 1e-5 seen
        assert parts[True][name] == pytest.approx(value, rel=1e-4, abs=1e-7), name
    assert "aten::_fused_adamw_" in ops[True] and "aten::_fused_adamw_" not in ops[False]  # fused AdamW in effect
    assert "_ThreadShardsBackward" in ops[True] and "_ThreadShardsBackward" not in ops[False]  # the batch split
    # The same weights after the step. Adam's first step moves a weight by about lr * sign(gradient), so where a
    # gradient is zero up to rounding (a conv bias before instance norm, the odd element of any tensor) either path
    # moves it by a sign of rounding noise. Compared: each element of a tensor whose gradient is not near zero
    # (as in _assert_same_gradients) whose own gradient is above 1e-3 of its tensor's RMS, to 1e-3 of lr.
    largest = max(float(g.norm()) for g in grads.values())
    checked = {name: g for name, g in grads.items() if float(g.norm()) > 1e-2 * largest}
    assert len(checked) > 20
    before = dict(model.named_parameters())
    for name, g in checked.items():
        clear = g.abs() > 1e-3 * g.square().mean().sqrt()
        assert float(clear.float().mean()) > 0.9, name
        moved = (trained[False][name] - before[name].detach())[clear]
        assert float(moved.abs().min()) > 0.5e-3, name  # the step (lr 1e-3) moved each of them
        torch.testing.assert_close(trained[True][name][clear], trained[False][name][clear], rtol=0, atol=1e-6)


def test_fused_optimizer_same_updates_as_the_default_adamw():
    from vococore.training.loop import make_optimizer

    torch.manual_seed(0)
    nets = {fused: build_segmenter(BackboneSpec(arch="cnn", feature_size=4), 2) for fused in (False, True)}
    nets[True].load_state_dict(nets[False].state_dict())
    optimizers = {fused: make_optimizer(net, lr=1e-2, weight_decay=0.05, fused=fused) for fused, net in nets.items()}
    assert optimizers[True].defaults["fused"] and not optimizers[False].defaults["fused"]
    start = {name: p.detach().clone() for name, p in nets[False].named_parameters()}
    generator = torch.Generator().manual_seed(1)
    for _ in range(3):  # amsgrad keeps the largest second moment: three steps of differing gradients use it
        grads = {name: torch.randn(p.shape, generator=generator) * 10 ** float(torch.randint(-3, 2, (1,),
                 generator=generator)) for name, p in nets[False].named_parameters()}
        for fused, net in nets.items():
            for name, p in net.named_parameters():
                p.grad = grads[name].clone()
            optimizers[fused].step()
    for name, p in nets[True].named_parameters():
        reference = dict(nets[False].named_parameters())[name].detach()
        assert float((reference - start[name]).abs().max()) > 1e-3, name  # each weight moved
        torch.testing.assert_close(p, reference, rtol=1e-6, atol=1e-7)


def test_resume_keeps_this_runs_optimizer_choice(tmp_path):
    from vococore.training.distributed import DistInfo
    from vococore.training.loop import LoopConfig, Trainer

    spec = BackboneSpec(arch="cnn", feature_size=4)
    torch.manual_seed(0)
    net = build_segmenter(spec, 2)

    def trainer(fast: bool) -> Trainer:
        return Trainer(copy.deepcopy(net), lambda model, batch: {}, LoopConfig(steps=2, fast_kernels=fast), tmp_path,
                       DistInfo(device=torch.device("cpu")), backbone=spec, kind="finetune", tensorboard=False)

    for saved, resumed in ((True, False), (False, True)):
        trainer(saved).save()
        again = trainer(resumed)
        again.resume()
        assert all(bool(group["fused"]) is resumed for group in again.optimizer.param_groups)


def test_loop_step_with_gradient_checkpointing_gets_the_default_paths_gradients(tmp_path):
    """The Swin recomputes each checkpointed block's forward in the backward pass; the loop keeps the kernels on
    until then, so the recomputed forward is the one that ran. With them switched off before the backward, the
    gradients were off far beyond rounding: 6e-4 in norm here, 22 % on the attention weights of a 4-crop encoder
    step."""
    from vococore.training.distributed import DistInfo
    from vococore.training.loop import LoopConfig, Trainer

    spec = BackboneSpec(arch="swin", feature_size=12, use_checkpoint=True)
    torch.manual_seed(0)
    net = build_segmenter(spec, 2)
    x = torch.rand(1, 1, 64, 32, 32, generator=torch.Generator().manual_seed(3))
    target = torch.linspace(-1, 1, 2 * x.numel()).reshape(1, 2, 64, 32, 32)

    def step(model: nn.Module, batch: torch.Tensor) -> dict[str, torch.Tensor]:
        return {"total": ((model(batch) - target) ** 2).mean()}

    grads = {}
    for fast in (False, True):
        trainer = Trainer(copy.deepcopy(net), step, LoopConfig(steps=1, lr=1e-3, fast_kernels=fast), tmp_path,
                          DistInfo(device=torch.device("cpu")), backbone=spec, kind="finetune", tensorboard=False)
        trainer.train_step(x)
        grads[fast] = {name: p.grad.clone() for name, p in trainer.model.named_parameters() if p.grad is not None}
    assert any(n.endswith("attn.qkv.weight") for n in grads[False])
    _assert_same_gradients(grads[True], grads[False], tol=1e-2)
