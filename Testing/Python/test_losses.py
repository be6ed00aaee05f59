"""Each VoCo loss term against values computed here from the formulas of voco-spec 2.3-2.6 with plain Python loops
(never by calling the code under test), for both negative forms (v2 log, v1 square)."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from vococore.pretraining.losses import inter_volume_loss, prediction_loss, regularization_loss, relu_cosine

# Two volumes, two targets, four bases. Labels hold exact zeros (negatives) and positives summing to 1 per target.
LABELS = [[[0.0, 0.25, 0.75, 0.0], [0.5, 0.0, 0.0, 0.5]],
          [[1.0, 0.0, 0.0, 0.0], [0.0, 0.1, 0.2, 0.7]]]
LOGITS = [[[0.1, 0.3, 0.6, 0.05], [0.4, 0.2, 0.0, 0.45]],
          [[0.9, 0.15, 0.3, 0.0], [0.05, 0.2, 0.1, 0.8]]]


def _cos(a, b):
    dot = sum(x * y for x, y in zip(a, b))
    return dot / (math.sqrt(sum(x * x for x in a)) * math.sqrt(sum(y * y for y in b)))


def _expected_prediction(labels, logits, negative):
    pos_total, neg_total = 0.0, 0.0
    for lab_v, log_v in zip(labels, logits):
        num, den, neg_sum, neg_count = 0.0, 0.0, 0.0, 0
        for lab_t, log_t in zip(lab_v, log_v):
            for y, l in zip(lab_t, log_t):
                num += -y * math.log(1 - abs(y - l) + 1e-6)
                den += y
                if y == 0:
                    neg_sum += -math.log(1 - l + 1e-6) if negative == "log" else l * l
                    neg_count += 1
        pos_total += num / (den + 1e-6)
        # the official divisor: the integer count + 1e-6, rounded to float32 (long + 1e-6 in torch)
        neg_total += neg_sum / float(np.float32(neg_count) + np.float32(1e-6))
    return pos_total / len(labels), neg_total / len(labels)


@pytest.mark.parametrize("negative", ["log", "square"])
def test_prediction_loss(negative):
    pos, neg = prediction_loss(torch.tensor(LABELS, dtype=torch.float64), torch.tensor(LOGITS, dtype=torch.float64),
                               negative)
    want_pos, want_neg = _expected_prediction(LABELS, LOGITS, negative)
    assert pos.dtype == torch.float64
    assert pos.item() == pytest.approx(want_pos, rel=1e-12)
    assert neg.item() == pytest.approx(want_neg, rel=1e-12)


def test_negative_mask_is_exact_zero():
    """A tiny positive label is not a negative: only entries exactly 0 count."""
    labels = [[[1e-9, 1.0 - 1e-9]]]
    logits = [[[0.7, 0.9]]]
    _, neg = prediction_loss(torch.tensor(labels, dtype=torch.float64), torch.tensor(logits, dtype=torch.float64))
    assert neg.item() == 0.0
    _, neg = prediction_loss(torch.tensor([[[0.0, 1.0]]], dtype=torch.float64), torch.tensor(logits,
                                                                                            dtype=torch.float64))
    assert neg.item() == pytest.approx(-math.log(1 - 0.7 + 1e-6) / float(np.float32(1) + np.float32(1e-6)),
                                       rel=1e-12)


def test_negative_divisor_is_count_plus_1e6_in_float32():
    """With 20 negatives, 20 + 1e-6 rounds to 20 + 1.9e-6 in float32 (official); float64 or a bare count differ
    by ~5e-8 relative, which this bar sees."""
    labels = [[[1.0] + [0.0] * 20]]
    logits = [[[0.8] + [0.1 + 0.01 * i for i in range(20)]]]
    _, neg = prediction_loss(torch.tensor(labels, dtype=torch.float64), torch.tensor(logits, dtype=torch.float64))
    neg_sum = sum(-math.log(1 - l + 1e-6) for l in logits[0][0][1:])
    assert neg.item() == pytest.approx(neg_sum / float(np.float32(20) + np.float32(1e-6)), rel=1e-13)
    assert neg.item() != pytest.approx(neg_sum / (20 + 1e-6), rel=1e-9)


VECTORS_A = [[[1.0, 2.0, 0.5], [-1.0, 0.3, 2.0]], [[0.2, -0.4, 1.0], [2.0, 1.0, 1.0]], [[0.5, 0.5, -1.0],
                                                                                       [1.0, -2.0, 0.1]]]
VECTORS_B = [[[1.0, 0.0, 0.0], [0.0, 1.0, 0.0], [0.3, 0.3, 1.0], [-1.0, -1.0, 0.2]],
             [[0.5, 1.0, -0.2], [1.0, 1.0, 1.0], [-0.3, 0.8, 0.1], [0.0, 0.2, 1.0]],
             [[2.0, -1.0, 0.0], [0.1, 0.1, 0.1], [1.0, 0.5, 0.2], [-0.5, 1.0, 1.5]]]


def test_relu_cosine():
    got = relu_cosine(torch.tensor(VECTORS_A, dtype=torch.float64), torch.tensor(VECTORS_B, dtype=torch.float64))
    for b in range(3):
        for t in range(2):
            for k in range(4):
                assert got[b, t, k].item() == pytest.approx(max(0.0, _cos(VECTORS_A[b][t], VECTORS_B[b][k])),
                                                            abs=1e-12)
    assert (got == 0).any()  # some cosines are negative and were clamped


def test_regularization_loss_value_and_stop_gradient():
    bases = torch.tensor(VECTORS_B, dtype=torch.float64, requires_grad=True)
    loss = regularization_loss(bases)
    want = 0.0
    for vol in VECTORS_B:
        terms = [max(0.0, _cos(vol[i], vol[j])) ** 2 for i in range(4) for j in range(i + 1, 4)]
        assert len(terms) == 6
        want += sum(terms) / len(terms)
    assert loss.item() == pytest.approx(want / 3, rel=1e-12)
    loss.backward()
    assert torch.all(bases.grad[:, -1] == 0)  # the last base is only ever the stop-gradient partner
    for v, vol in enumerate(VECTORS_B):  # an earlier base gets gradient iff a later partner has cos > 0
        for i in range(3):
            has_partner = any(_cos(vol[i], vol[j]) > 0 for j in range(i + 1, 4))
            assert (bases.grad[v, i].abs().sum() > 0).item() == has_partner


def test_regularization_stop_gradient_is_on_later_row():
    """Gradient of the pair (0, 1) alone flows only into base 0: compare with a hand derivative of cos²."""
    q = torch.tensor([[[1.0, 0.5], [0.8, 1.0]]], dtype=torch.float64, requires_grad=True)
    regularization_loss(q).backward()
    a, b = [1.0, 0.5], [0.8, 1.0]
    c = _cos(a, b)
    na, nb = math.hypot(*a), math.hypot(*b)
    grad_a = [2 * c * (bi / (na * nb) - c * ai / (na * na)) for ai, bi in zip(a, b)]
    assert q.grad[0, 0].tolist() == pytest.approx(grad_a, rel=1e-10)
    assert q.grad[0, 1].tolist() == [0.0, 0.0]


@pytest.mark.parametrize("negative", ["log", "square"])
def test_inter_volume_loss(negative):
    """Volume i's targets against volume (i+1) mod B's bases; pseudo-labels from the teacher; negatives where the
    pseudo-label is exactly 0 after ReLU."""
    student_t = [[[x * 0.9 + 0.1 for x in v] for v in vol] for vol in VECTORS_A]
    student_b = [[[x + 0.2 * (k % 2) for x in v] for k, v in enumerate(vol)] for vol in VECTORS_B]
    got = inter_volume_loss(torch.tensor(student_t, dtype=torch.float64), torch.tensor(student_b,
                                                                                    dtype=torch.float64),
                            torch.tensor(VECTORS_A, dtype=torch.float64), torch.tensor(VECTORS_B,
                                                                                     dtype=torch.float64),
                            negative)
    pseudo, pred = [], []
    for i in range(3):
        j = (i + 1) % 3
        pseudo.append([[max(0.0, _cos(VECTORS_A[i][t], VECTORS_B[j][k])) for k in range(4)] for t in range(2)])
        pred.append([[max(0.0, _cos(student_t[i][t], student_b[j][k])) for k in range(4)] for t in range(2)])
    assert any(p == 0.0 for vol in pseudo for row in vol for p in row)
    want_pos, want_neg = _expected_prediction(pseudo, pred, negative)
    assert got.item() == pytest.approx(want_pos + want_neg, rel=1e-9)


def test_inter_volume_pseudo_labels_get_no_gradient():
    s_t = torch.tensor([[[x + 0.3 for x in v] for v in vol] for vol in VECTORS_A], dtype=torch.float64,
                       requires_grad=True)
    t_t = torch.tensor(VECTORS_A, dtype=torch.float64, requires_grad=True)
    s_b = torch.tensor(VECTORS_B, dtype=torch.float64, requires_grad=True)
    t_b = torch.tensor(VECTORS_B, dtype=torch.float64, requires_grad=True)
    inter_volume_loss(s_t, s_b, t_t, t_b).backward()
    assert t_t.grad is None and t_b.grad is None
    assert s_t.grad.abs().sum() > 0 and s_b.grad.abs().sum() > 0
