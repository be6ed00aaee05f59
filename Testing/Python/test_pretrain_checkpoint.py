"""Checkpoints: exact round trip of model/optimizer/scheduler/RNG, atomic weights-only files, clear errors."""

from __future__ import annotations

import random

import numpy as np
import pytest
import torch

from vococore.utils.errors import VoCoError
from vococore.networks.backbones import BackboneSpec
from vococore.training.checkpoint import (build_checkpoint, checkpoint_backbone, load_checkpoint,
                                          restore_training_state, save_checkpoint)


def _setup(seed: int = 0):
    torch.manual_seed(seed)
    model = torch.nn.Sequential(torch.nn.Linear(4, 8), torch.nn.ReLU(), torch.nn.Linear(8, 1))
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3, amsgrad=True)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: min(1.0, (s + 1) / 3))
    return model, opt, sched


def _train(model, opt, sched, steps: int) -> list[float]:
    losses = []
    for _ in range(steps):
        x = torch.randn(5, 4) + float(np.random.rand()) + random.random()
        loss = torch.nn.functional.dropout(model(x), 0.3).pow(2).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
        sched.step()
        losses.append(loss.item())
    return losses


def test_checkpoint_resumes_exactly(tmp_path):
    torch.manual_seed(1)
    np.random.seed(1)
    random.seed(1)
    model, opt, sched = _setup()
    _train(model, opt, sched, 3)
    spec = BackboneSpec(arch="cnn", feature_size=4, legacy_merging=False)
    path = save_checkpoint(tmp_path / "ckpt.pt", build_checkpoint(3, model, backbone=spec, optimizer=opt,
                                                                 scheduler=sched, config={"lr": 1e-3}))
    expected = _train(model, opt, sched, 4)

    model2, opt2, sched2 = _setup(seed=99)  # different init: everything must come from the file
    ckpt = load_checkpoint(path)
    assert restore_training_state(ckpt, model2, opt2, sched2) == 3
    assert _train(model2, opt2, sched2, 4) == expected
    assert checkpoint_backbone(ckpt) == spec
    assert ckpt["backbone"]["legacy_merging"] is False and ckpt["config"] == {"lr": 1e-3}
    assert not list(tmp_path.glob(".*tmp*"))  # atomic write left no temp file


def test_truncated_or_foreign_checkpoint_is_refused(tmp_path):
    model, opt, sched = _setup()
    good = save_checkpoint(tmp_path / "good.pt", build_checkpoint(0, model, backbone=BackboneSpec(arch="cnn",
                                                                                                   feature_size=4)))
    bad = tmp_path / "truncated.pt"
    bad.write_bytes(good.read_bytes()[: good.stat().st_size // 2])
    with pytest.raises(VoCoError, match="truncated.pt.*not a torch file"):
        load_checkpoint(bad)
    foreign = tmp_path / "weights.pt"
    torch.save(model.state_dict(), foreign)
    with pytest.raises(VoCoError, match="not a vococore training checkpoint"):
        load_checkpoint(foreign)
    pickled = tmp_path / "pickled.pt"
    torch.save({"format": "vococore-checkpoint", "obj": _Evil()}, pickled)
    with pytest.raises(VoCoError, match="refuses to unpickle: the file asks for .*_Evil"):
        load_checkpoint(pickled)


class _Evil:
    """An arbitrary class: weights_only loading must refuse to unpickle it."""


def test_warmup_then_half_cosine_per_step():
    from vococore.training.loop import warmup_cosine

    opt = torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=1.0)
    schedule = warmup_cosine(opt, warmup_steps=2, total_steps=6)
    lrs = []
    for _ in range(7):
        lrs.append(opt.param_groups[0]["lr"])
        opt.step()
        schedule.step()
    np.testing.assert_allclose(lrs, [0.0, 0.5, 1.0, 0.8535534, 0.5, 0.1464466, 0.0], atol=1e-6)


def test_training_checkpoint_rebuilds_the_voco_model(tmp_path):
    """The loop's checkpoint carries model + backbone + recipe, so the method side's loader rebuilds it exactly."""
    from vococore.utils.config import to_dict
    from vococore.pretraining.model import VoCoModel, load_voco_model
    from vococore.pretraining.pretext import get_recipe
    from vococore.training.distributed import DistInfo
    from vococore.training.loop import LoopConfig, Trainer

    spec = BackboneSpec(arch="cnn", feature_size=4, legacy_merging=False)
    model = VoCoModel(spec, "small")
    trainer = Trainer(model, lambda m, b: {}, LoopConfig(steps=1), tmp_path / "run", DistInfo(), backbone=spec,
                      recipe=to_dict(get_recipe("small")), tensorboard=False)
    rebuilt = load_voco_model(trainer.save())
    assert rebuilt.recipe == model.recipe
    assert all(torch.equal(a, b) for a, b in zip(model.state_dict().values(), rebuilt.state_dict().values()))
