"""A backbone's training batch split across CPU threads (vococore.networks.thread_shards, switched on by
fast_training): the parts run in the pool's threads forward and backward, the loss and every gradient (parameters
and input) equal the default path's to float32 rounding, a run repeats bit for bit, the caller's thread count is
restored, and networks that mix samples (batch norm) or draw random numbers (dropout) are left alone."""

from __future__ import annotations

import threading

import pytest
import torch
from torch import nn

from vococore.networks.backbones import BackboneSpec, build_encoder, build_segmenter
from vococore.networks.fast_training import fast_training


@pytest.fixture()
def threads():
    """Run the test with ``n`` intra-op threads (the suite's workers use one), restored after."""
    before = torch.get_num_threads()
    yield torch.set_num_threads
    torch.set_num_threads(before)


def _watch(layer: nn.Module) -> list[tuple[str, str, int]]:
    """Record (pass, thread name, batch size) of every forward and backward through ``layer``."""
    seen: list[tuple[str, str, int]] = []
    layer.register_forward_hook(lambda m, i, o: seen.append(("forward", threading.current_thread().name,
                                                             o.shape[0])))
    layer.register_full_backward_hook(lambda m, gi, go: seen.append(("backward", threading.current_thread().name,
                                                                     go[0].shape[0])))
    return seen


def _watched_encoder(crops: int, seed: int, layer: str) -> tuple[nn.Module, torch.Tensor, list]:
    """The small CNN encoder in training mode, ``crops`` random crops of 32³, and the record of ``layer``."""
    torch.manual_seed(0)
    net = build_encoder(BackboneSpec(arch="cnn", feature_size=4)).train()
    x = torch.rand(crops, 1, 32, 32, 32, generator=torch.Generator().manual_seed(seed))
    return net, x, _watch(getattr(net, layer))


def _step(net: nn.Module, x: torch.Tensor, fast: bool) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """Loss against a fixed target, the gradients of every parameter and of the input."""
    net.zero_grad(set_to_none=True)
    x = x.clone().requires_grad_()
    if fast:
        with fast_training(net) as switched:
            out = net(x)
        assert switched["threads"] == 1
    else:
        out = net(x)
    target = torch.linspace(-1, 1, out.numel()).reshape(out.shape)
    loss = ((out - target) ** 2).mean()
    loss.backward()
    grads = {name: p.grad.clone() for name, p in net.named_parameters() if p.grad is not None}
    return loss.detach(), {**grads, "input": x.grad.clone()}


def test_parts_run_in_threads_with_the_default_paths_loss_and_gradients(threads):
    net, x, seen = _watched_encoder(5, seed=1, layer="down_2")
    threads(2)
    loss, grads = _step(net, x, fast=False)
    default_seen = list(seen)
    seen.clear()
    fast_loss, fast_grads = _step(net, x, fast=True)
    assert torch.get_num_threads() == 2  # restored
    assert [(p, n.startswith("vococore-shard"), b) for p, n, b in default_seen] == [("forward", False, 5),
                                                                                  ("backward", False, 5)]
    assert sorted((p, n.startswith("vococore-shard"), b) for p, n, b in seen) == [
        ("backward", True, 2), ("backward", True, 3), ("forward", True, 2), ("forward", True, 3)]
    assert len({n for _, n, _ in seen}) == 2  # two threads
    torch.testing.assert_close(fast_loss, loss, rtol=1e-5, atol=0)
    assert fast_grads.keys() == grads.keys() and len(grads) > 20
    # Each gradient (a sum over the samples) to float32 rounding; a conv bias before instance norm has a gradient
    # of rounding noise (1e-7), so only those above 1 % of the largest are compared one by one.
    largest = max(float(g.norm()) for g in grads.values())
    checked = [name for name, g in grads.items() if float(g.norm()) > 1e-2 * largest]
    assert len(checked) > 10 and "input" in checked
    for name in checked:
        assert float((fast_grads[name] - grads[name]).norm() / grads[name].norm()) < 1e-4, name
    assert not any("forward" in vars(m) for m in net.modules())  # restored


def test_a_split_step_repeats_bit_for_bit(threads):
    torch.manual_seed(0)
    net = build_segmenter(BackboneSpec(arch="cnn", feature_size=4), 3).train()
    x = torch.rand(6, 1, 32, 32, 32, generator=torch.Generator().manual_seed(2))
    threads(3)  # three parts: a sum in completion order would differ between runs
    runs = [_step(net, x, fast=True)[1] for _ in range(4)]
    for run in runs[1:]:
        for name, g in runs[0].items():
            assert torch.equal(run[name], g), name


@pytest.mark.parametrize("mixing", ["batch_norm", "dropout"])
def test_networks_that_mix_samples_or_draw_random_numbers_stay_whole(threads, mixing):
    from monai.networks.nets import BasicUNet

    torch.manual_seed(0)
    kwargs = {"norm": "batch"} if mixing == "batch_norm" else {"dropout": 0.2}
    net = BasicUNet(spatial_dims=3, in_channels=1, out_channels=2, features=(4, 4, 8, 8, 16, 4), **kwargs).train()
    seen = _watch(net.down_1)
    threads(2)
    with fast_training(net) as switched:
        net(torch.rand(4, 1, 32, 32, 32)).sum().backward()
    assert switched["threads"] == 0
    assert [(p, n.startswith("vococore-shard"), b) for p, n, b in seen] == [("forward", False, 4),
                                                                          ("backward", False, 4)]


def test_v1_encoder_is_split_although_it_carries_a_batch_norm_projector(threads):
    from vococore.pretraining.model import VoCoModel

    model = VoCoModel(BackboneSpec(arch="cnn", feature_size=4), "small").train()
    student = build_encoder(BackboneSpec(arch="cnn", feature_size=4))
    student.add_module("proj_head", model.student)  # the projector has batch norm, the encoder's forward skips it
    seen = _watch(student.down_1)
    threads(2)
    with fast_training(student) as switched:
        student(torch.rand(4, 1, 32, 32, 32)).sum().backward()
    assert switched["threads"] == 1
    assert sorted(b for _, n, b in seen if n.startswith("vococore-shard")) == [2, 2, 2, 2]


def test_a_training_part_has_two_samples_or_the_batch_stays_whole(threads):
    """With a gradient no part has a single sample (PyTorch would run its small convolutions' backward on the
    im2col kernel, several times slower than the whole batch): 3 crops on 2 threads stay whole, 4 go 2 + 2."""
    threads(2)
    whole = [("backward", False, 3), ("forward", False, 3)]
    halves = [("backward", True, 2), ("backward", True, 2), ("forward", True, 2), ("forward", True, 2)]
    for crops, expected in ((3, whole), (4, halves)):
        net, x, seen = _watched_encoder(crops, seed=3, layer="down_1")
        with fast_training(net) as switched:
            net(x).sum().backward()
        assert switched["threads"] == 1  # switched on in both cases
        assert sorted((p, n.startswith("vococore-shard"), b) for p, n, b in seen) == expected, crops


@pytest.mark.parametrize("crops, parts", [(4, [2, 2]), (3, [1, 2])])
def test_forward_without_a_gradient_is_split_too(threads, crops, parts):
    """The v1 teacher's pass: training mode, no gradient; here a part may hold one sample (the forward runs
    oneDNN at any batch size: 3 crops took 11-13 ms split 2 + 1 against 12-19 ms whole, 2 threads)."""
    net, x, seen = _watched_encoder(crops, seed=4, layer="down_1")
    threads(2)
    with torch.no_grad():
        whole = net(x)
        with fast_training(net):
            split = net(x)
    assert torch.get_num_threads() == 2
    assert sorted((n.startswith("vococore-shard"), b) for _, n, b in seen) == [(False, crops)] + [
        (True, b) for b in parts]
    torch.testing.assert_close(split, whole, rtol=1e-5, atol=1e-6)


def test_spinning_openmp_threads_keep_the_batch_whole(threads, monkeypatch):
    """With OMP_WAIT_POLICY=ACTIVE the caller's OpenMP team spins and takes the cores from the parts (a split
    fine-tuning step 0.41-0.50 s against 0.33-0.38 s whole, 2 threads): the batch stays whole."""
    net, x, seen = _watched_encoder(crops=4, seed=2, layer="down_1")
    threads(2)
    monkeypatch.setenv("OMP_WAIT_POLICY", "active")
    _step(net, x, fast=True)
    assert [(p, n.startswith("vococore-shard"), b) for p, n, b in seen] == [("forward", False, 4),
                                                                          ("backward", False, 4)]
