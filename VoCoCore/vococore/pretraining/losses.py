"""VoCo losses (voco-spec 2.3-2.6): ReLU-cosine logits, the prediction loss with its two negative forms, the
regularization between bases, and the v2 inter-volume loss against teacher pseudo-labels."""

from __future__ import annotations

import torch
import torch.nn.functional as F


def relu_cosine(queries: torch.Tensor, keys: torch.Tensor) -> torch.Tensor:
    """Logits ReLU(cos(q_t, k_k)) in [0, 1]: (..., T, D) x (..., K, D) -> (..., T, K)."""
    return torch.relu(F.normalize(queries, dim=-1) @ F.normalize(keys, dim=-1).transpose(-1, -2))


def prediction_loss(labels: torch.Tensor, logits: torch.Tensor,
                    negative: str = "log") -> tuple[torch.Tensor, torch.Tensor]:
    """Positive and negative terms of the position prediction loss, each averaged over volumes.

    ``labels`` and ``logits`` are (B, T, K) (or (T, K), one volume). Per volume, over all its targets and bases:
    pos = -Σ y·log(1 - |y - l| + 1e-6) / (Σ y + 1e-6); neg = Σ over entries with y == 0 exactly of
    -log(1 - l + 1e-6) (``"log"``, v2) or l² (``"square"``, v1), divided by (their count + 1e-6) formed in
    float32 as the official code's ``long + 1e-6`` is, so the value matches it bit for bit (0 without negatives).
    """
    if labels.ndim == 2:
        labels, logits = labels[None], logits[None]
    labels = labels.to(logits.dtype)
    pos = -(labels * torch.log(1 - (labels - logits).abs() + 1e-6)).sum(dim=(1, 2)) / (labels.sum(dim=(1, 2)) + 1e-6)
    mask = (labels == 0).to(logits.dtype)
    if negative == "log":
        neg_terms = -torch.log(1 - logits + 1e-6)
    elif negative == "square":
        neg_terms = logits.square()
    else:
        raise ValueError(f"negative must be 'log' or 'square', got {negative!r}")
    count = (labels == 0).sum(dim=(1, 2)).to(torch.float32) + 1e-6
    neg = (mask * neg_terms).sum(dim=(1, 2)) / count
    return pos.mean(), neg.mean()


def regularization_loss(bases: torch.Tensor) -> torch.Tensor:
    """mean over i < j of ReLU(cos(q_i, sg(q_j)))² for the bases (B, K, D) of each volume, averaged over volumes.

    The stop-gradient is on the later row of each pair, so the last base gets no gradient from this term.
    """
    if bases.ndim == 2:
        bases = bases[None]
    k = bases.shape[1]
    sims = relu_cosine(bases, bases.detach())  # (B, K, K): row i with gradient, column j stopped
    # pairs i < j in the row-major order a bool triu mask gives; index tensors also run on the meta device
    rows, cols = torch.triu_indices(k, k, offset=1, device=bases.device)
    return sims[:, rows, cols].square().mean(dim=1).mean()


def inter_volume_loss(student_targets: torch.Tensor, student_bases: torch.Tensor, teacher_targets: torch.Tensor,
                      teacher_bases: torch.Tensor, negative: str = "log") -> torch.Tensor:
    """v2 inter-volume loss: volume i's targets against volume (i+1) mod B's bases.

    Pseudo-labels ReLU(cos(teacher targets_i, teacher bases_j)) are detached; the prediction is
    ReLU(cos(student targets_i, student bases_j)); negatives are where the pseudo-label is exactly 0. Inputs are
    (B, T, D) targets and (B, K, D) bases; with B = 1 a volume is paired with itself.
    """
    partner_teacher = torch.roll(teacher_bases, shifts=-1, dims=0)
    partner_student = torch.roll(student_bases, shifts=-1, dims=0)
    pseudo = relu_cosine(teacher_targets, partner_teacher).detach()
    pred = relu_cosine(student_targets, partner_student)
    pos, neg = prediction_loss(pseudo, pred, negative)
    return pos + neg
