"""VoCoModel: state-dict layouts of both official versions, EMA teacher, loss parts against hand computation from
the model's own embeddings (v2 and v1 forms), batch-wide BatchNorm, row dropout, mixed precision, checkpoints."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch
from test_losses import _cos, _expected_prediction

from vococore.utils.config import to_dict
from vococore.utils.errors import VoCoError
from vococore.networks.backbones import BackboneSpec
from vococore.pretraining.model import VoCoModel, load_voco_model
from vococore.pretraining.pretext import RECIPES, PretextSampler, collate, default_backbone

SMALL = RECIPES["small"]
# The v1 form on a cheap geometry: two full networks, squared negatives, pos/neg/reg parts, a 3x3 grid of 48³
# crops resized to 32³ before the network as v1 resizes 96³ to 64³.
SMALL_V1 = dataclasses.replace(SMALL, name="small-v1", region_size=(144, 144, 48), base_size=48, target_size=48,
                               target_center_range=(24, 120), target_center_z=24, layout="twin",
                               negative_loss="square", loss_parts=("pos", "neg", "reg"), embedding_row_dropout=0.0,
                               shift_prob=0.1)
# The v2 row dropout (the small preset has none) on the small geometry.
SMALL_ROW_DROPOUT = dataclasses.replace(SMALL, name="small-row-dropout", embedding_row_dropout=0.2)
CNN = BackboneSpec(arch="cnn", feature_size=4)


def _batch(recipe, volumes=2, seed=0):
    rng = np.random.default_rng(seed)
    region = torch.from_numpy(rng.random((1, *recipe.region_size), dtype=np.float32))
    sampler = PretextSampler(recipe)
    return collate([sampler(region, rng) for _ in range(volumes)])


def test_state_dict_layouts_match_official_keys():
    swin = BackboneSpec(arch="swin", feature_size=12, use_checkpoint=False)
    v2 = VoCoModel(swin, RECIPES["v2"]).state_dict()
    assert "backbone.swinViT.patch_embed.proj.weight" in v2 and "backbone.encoder10.layer.conv1.conv.weight" in v2
    assert {k for k in v2 if not k.startswith("backbone.")} == {
        f"{net}.layer{i}.0.{p}" for net in ("student", "teacher") for i in (1, 2, 3) for p in ("weight", "bias")}
    assert v2["student.layer1.0.weight"].shape == (1024, 24 * 12) and v2["student.layer3.0.weight"].shape == (1024,
                                                                                                             1024)
    v1_model = VoCoModel(swin, RECIPES["v1"])
    v1 = v1_model.state_dict()
    assert "student.swinViT.patch_embed.proj.weight" in v1 and "teacher.encoder1.layer.conv3.conv.weight" in v1
    assert v1["student.proj_head.layer1.0.weight"].shape == (2048, 288)
    assert "teacher.proj_head.layer3.0.weight" in v1 and not any(k.startswith("backbone.") for k in v1)
    encoder = v1_model.encoder_state_dict()
    assert len(encoder) == 145 and all(k.split(".")[0] in ("swinViT", "encoder1", "encoder2", "encoder3",
                                                           "encoder4", "encoder10") for k in encoder)


def test_teacher_is_separately_initialised_and_frozen():
    torch.manual_seed(0)
    model = VoCoModel(CNN, SMALL)
    assert not torch.equal(model.student.layer1[0].weight, model.teacher.layer1[0].weight)
    assert not any(p.requires_grad for p in model.teacher.parameters())


@pytest.mark.parametrize("recipe", [SMALL, SMALL_V1], ids=["v2-layout", "v1-layout"])
def test_ema_step_before_teacher_pass(recipe):
    """Each training forward moves every teacher parameter to 0.9 * teacher + 0.1 * student, before the teacher
    pass runs; an eval forward leaves the teacher alone."""
    torch.manual_seed(1)
    model = VoCoModel(CNN, recipe).train()
    student0 = [p.detach().clone() for p in model.student.parameters()]
    teacher0 = [p.detach().clone() for p in model.teacher.parameters()]
    seen = {}

    def record(module, args):
        seen["teacher_at_pass"] = [p.detach().clone() for p in module.parameters()]

    head = model.teacher if recipe.layout == "shared" else model.teacher.proj_head
    head.register_forward_pre_hook(record)
    model(**_batch(recipe))
    expected = [0.9 * t + 0.1 * s for t, s in zip(teacher0, student0)]
    for got, want in zip(model.teacher.parameters(), expected):
        torch.testing.assert_close(got.detach(), want, rtol=1e-6, atol=1e-7)
    n_head = len(list(head.parameters()))
    for got, want in zip(seen["teacher_at_pass"], expected[-n_head:]):
        torch.testing.assert_close(got, want, rtol=1e-6, atol=1e-7)
    after = [p.detach().clone() for p in model.teacher.parameters()]
    model.eval()(**_batch(recipe))
    assert all(torch.equal(a, p) for a, p in zip(after, model.teacher.parameters()))


def _capture(model):
    """Record student and teacher projector outputs (N, D) of the next forward."""
    out = {}
    shared = model.recipe.layout == "shared"
    student = model.student if shared else model.student.proj_head
    teacher = model.teacher if shared else model.teacher.proj_head
    student.register_forward_hook(lambda m, a, o: out.__setitem__("student", o.detach().double().tolist()))
    teacher.register_forward_hook(lambda m, a, o: out.__setitem__("teacher", o.detach().double().tolist()))
    return out


def _relu_cos(a, b):
    return max(0.0, _cos(a, b))


@pytest.mark.parametrize("recipe", [SMALL, SMALL_V1], ids=["v2", "v1"])  # no row dropout in either
def test_loss_parts_equal_hand_computation(recipe):
    """Loss parts recomputed here with loops from the embeddings the model produced (targets first, then bases)."""
    torch.manual_seed(2)
    model = VoCoModel(CNN, recipe).train()
    emb = _capture(model)
    batch = _batch(recipe, volumes=2, seed=3)
    parts = model(**batch)
    b, t, k = 2, recipe.num_targets, recipe.num_bases
    s, te = emb["student"], emb["teacher"]
    s_t = [[s[v * t + i] for i in range(t)] for v in range(b)]
    s_b = [[s[b * t + v * k + i] for i in range(k)] for v in range(b)]
    t_t = [[te[v * t + i] for i in range(t)] for v in range(b)]
    t_b = [[te[b * t + v * k + i] for i in range(k)] for v in range(b)]
    labels = batch["labels"].tolist()
    if recipe.layout == "shared":
        logits = [[[_relu_cos(s_t[v][i], t_b[v][j]) for j in range(k)] for i in range(t)] for v in range(b)]
    else:
        logits = [[[0.5 * (_relu_cos(s_t[v][i], t_b[v][j]) + _relu_cos(t_t[v][i], s_b[v][j])) for j in range(k)]
                   for i in range(t)] for v in range(b)]
    pos, neg = _expected_prediction(labels, logits, recipe.negative_loss)
    reg = sum(sum(_relu_cos(s_b[v][i], s_b[v][j]) ** 2 for i in range(k) for j in range(i + 1, k))
              / (k * (k - 1) / 2) for v in range(b)) / b
    want = {"reg": reg}
    if recipe.layout == "shared":
        pseudo = [[[_relu_cos(t_t[v][i], t_b[(v + 1) % b][j]) for j in range(k)] for i in range(t)] for v in range(b)]
        pred = [[[_relu_cos(s_t[v][i], s_b[(v + 1) % b][j]) for j in range(k)] for i in range(t)] for v in range(b)]
        inter_pos, inter_neg = _expected_prediction(pseudo, pred, recipe.negative_loss)
        want.update(intra=pos + neg, inter=inter_pos + inter_neg)
    else:
        want.update(pos=pos, neg=neg)
    assert set(parts) == set(recipe.loss_parts) | {"total"}
    for name, value in want.items():
        assert parts[name].dtype == torch.float32
        assert parts[name].item() == pytest.approx(value, rel=2e-5, abs=1e-6), name
    assert parts["total"].item() == pytest.approx(sum(want.values()), rel=2e-5)


def test_one_batch_for_all_crops_and_row_dropout():
    """BatchNorm sees every crop of the step in one batch; v2 row dropout zeroes whole crop vectors, scales the
    others by 1 / (1 - 0.2)."""
    for recipe in (SMALL_ROW_DROPOUT, SMALL):
        torch.manual_seed(3)
        model = VoCoModel(CNN, recipe).train()
        seen = {}
        model.backbone.register_forward_hook(lambda m, a, o: seen.__setitem__("features", o.detach()))
        model.student.register_forward_pre_hook(lambda m, a: seen.__setitem__("student_in", a[0].detach()))
        model.teacher.register_forward_pre_hook(lambda m, a: seen.__setitem__("teacher_in", a[0].detach()))
        model(**_batch(recipe, volumes=3))
        n = 3 * (2 + 9)
        assert seen["features"].shape == (n, CNN.feature_dim)
        torch.testing.assert_close(seen["teacher_in"], seen["features"])
        if recipe is SMALL:  # the small preset has no row dropout
            torch.testing.assert_close(seen["student_in"], seen["features"])
            continue
        dropped = (seen["student_in"] == 0).all(dim=1)
        assert 0 < dropped.sum() < n
        torch.testing.assert_close(seen["student_in"][~dropped], seen["features"][~dropped] / 0.8)


def test_bf16_autocast_training_step():
    torch.manual_seed(4)
    model = VoCoModel(CNN, SMALL).train()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        parts = model(**_batch(SMALL))
    assert all(v.dtype == torch.float32 and torch.isfinite(v) for v in parts.values())
    parts["total"].backward()
    assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in model.student.parameters())
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in model.backbone.parameters())
    assert all(p.grad is None for p in model.teacher.parameters())


def test_predict_overlaps_range_and_determinism():
    torch.manual_seed(5)
    model = VoCoModel(CNN, SMALL).train()
    batch = _batch(SMALL, volumes=1)
    a = model.predict_overlaps(batch["bases"][0], batch["targets"][0])
    b = model.predict_overlaps(batch["bases"][0], batch["targets"][0])
    assert a.shape == (2, 9) and torch.equal(a, b)
    assert a.min() >= 0 and a.max() <= 1


def test_checkpoint_round_trip_and_errors(tmp_path):
    torch.manual_seed(6)
    spec = default_backbone("small")
    model = VoCoModel(spec, SMALL)
    path = tmp_path / "pretrain.pt"
    torch.save({"model": model.state_dict(), "backbone": to_dict(spec), "recipe": "small", "step": 3}, path)
    loaded = load_voco_model(path)
    assert not loaded.training and loaded.recipe == SMALL and loaded.spec == spec
    for (name, a), (_, b) in zip(model.state_dict().items(), loaded.state_dict().items()):
        assert torch.equal(a, b), name
    # A custom recipe saved as a mapping comes back field for field.
    torch.save({"model": VoCoModel(CNN, SMALL_V1).state_dict(), "backbone": to_dict(CNN),
                "recipe": to_dict(SMALL_V1)}, tmp_path / "v1.pt")
    assert load_voco_model(tmp_path / "v1.pt").recipe == SMALL_V1
    # Saved from a DDP wrapper: the "module." prefix is dropped.
    torch.save({"model": {f"module.{k}": v for k, v in model.state_dict().items()}, "backbone": to_dict(spec),
                "recipe": "small"}, tmp_path / "ddp.pt")
    assert torch.equal(load_voco_model(tmp_path / "ddp.pt").student.layer1[0].weight, model.student.layer1[0].weight)

    text = tmp_path / "notes.txt"
    text.write_text("not a checkpoint")
    with pytest.raises(VoCoError, match="not a torch file") as err:
        load_voco_model(text)
    assert str(text) in str(err.value)
    torch.save({"state_dict": model.state_dict()}, tmp_path / "official.pt")
    with pytest.raises(VoCoError, match="needs keys"):
        load_voco_model(tmp_path / "official.pt")
    torch.save({"model": model.state_dict(), "backbone": to_dict(CNN), "recipe": "small"}, tmp_path / "wrong.pt")
    with pytest.raises(VoCoError, match="do not fit|do not match"):
        load_voco_model(tmp_path / "wrong.pt")
    torch.save({"model": model.state_dict(), "backbone": to_dict(spec), "recipe": None}, tmp_path / "finetune.pt")
    with pytest.raises(VoCoError, match="invalid backbone/recipe"):
        load_voco_model(tmp_path / "finetune.pt")
    with pytest.raises(VoCoError, match="not found"):
        load_voco_model(tmp_path / "missing.pt")


def test_too_small_input_is_a_clear_error():
    with pytest.raises(VoCoError, match="at least 32"):
        VoCoModel(CNN, dataclasses.replace(SMALL, input_size=16))


def test_short_training_lowers_the_loss():
    """Eight AdamW steps on one fixed one-volume batch reduce the total loss (differentiable end to end)."""
    torch.manual_seed(7)
    model = VoCoModel(CNN, SMALL).train()
    batch = _batch(SMALL, volumes=1, seed=8)
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-3)
    losses = []
    for _ in range(8):
        total = model(**batch)["total"]
        optimizer.zero_grad()
        total.backward()
        optimizer.step()
        losses.append(total.item())
    assert np.mean(losses[-3:]) < 0.9 * np.mean(losses[:3])
