"""The VoCo projector (voco-spec 2.2): Linear -> BatchNorm1d (no affine, batch statistics only) -> ReLU, twice,
then Linear. Module names ``layer1``/``layer2``/``layer3`` give the official state-dict keys (``layer1.0.weight``)."""

from __future__ import annotations

import torch
from torch import nn


class Projector(nn.Module):
    """Maps pooled backbone features (N, in_dim) to embeddings (N, out_dim).

    BatchNorm always uses the statistics of the batch it gets (``track_running_stats=False``), also in eval mode,
    so callers must pass all crops of a step together (targets and bases of every volume).
    """

    def __init__(self, in_dim: int, hidden_dim: int, out_dim: int) -> None:
        super().__init__()
        self.layer1 = nn.Sequential(nn.Linear(in_dim, hidden_dim),
                                    nn.BatchNorm1d(hidden_dim, affine=False, track_running_stats=False),
                                    nn.ReLU(inplace=True))
        self.layer2 = nn.Sequential(nn.Linear(hidden_dim, hidden_dim),
                                    nn.BatchNorm1d(hidden_dim, affine=False, track_running_stats=False),
                                    nn.ReLU(inplace=True))
        self.layer3 = nn.Sequential(nn.Linear(hidden_dim, out_dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.layer3(self.layer2(self.layer1(x)))
