"""The 3D patch merging of MONAI 1.3.0, which the official VoCo weights were trained with.

MONAI 1.3.0 concatenated the parity sub-samples (0,0,0), (1,0,0), (0,1,0), (0,0,1), (1,0,1), (0,1,0), (0,0,1),
(1,1,1): two duplicated, (1,1,0) and (0,1,1) unused. MONAI PR #8285 fixed the order; parameters are identical, so
official weights load either way but compute different features. See voco-spec.md, "Facts checked".
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from monai.networks.nets.swin_unetr import PatchMerging, SwinTransformer

from vococore.utils.errors import VoCoError

# (d, h, w) parity offsets in MONAI 1.3.0 order.
LEGACY_OFFSETS = ((0, 0, 0), (1, 0, 0), (0, 1, 0), (0, 0, 1), (1, 0, 1), (0, 1, 0), (0, 0, 1), (1, 1, 1))


class LegacyPatchMerging(PatchMerging):
    """MONAI ``PatchMerging`` with the MONAI 1.3.0 sub-sample order (same parameters and keys)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.dim() != 5:
            return super().forward(x)
        _, d, h, w, _ = x.shape
        if d % 2 or h % 2 or w % 2:
            x = F.pad(x, (0, 0, 0, w % 2, 0, h % 2, 0, d % 2))
        x = torch.cat([x[:, i::2, j::2, k::2, :] for i, j, k in LEGACY_OFFSETS], -1)
        return self.reduction(self.norm(x))


def use_legacy_merging(module: torch.nn.Module) -> int:
    """Switch every MONAI ``PatchMerging`` inside ``module`` to the 1.3.0 order in place; returns how many layers
    now merge the 1.3.0 way.

    Each MONAI ``SwinTransformer`` has one merging layer per stage (``num_layers``); if fewer are found (a MONAI
    that renamed or replaced its merging class), VoCoError stops the run instead of silently training with the
    new order.
    """
    count = 0
    for sub in module.modules():
        if type(sub) is PatchMerging:
            sub.__class__ = LegacyPatchMerging
        count += type(sub) is LegacyPatchMerging
    expected = sum(int(getattr(sub, "num_layers", 0)) for sub in module.modules() if isinstance(sub, SwinTransformer))
    if count != expected:
        raise VoCoError(f"the MONAI 1.3.0 patch merging applied to {count} of the {expected} merging layers of this "
                        "Swin network; this MONAI's patch merging differs from the one vococore knows, so the "
                        "official weights would compute other features (set legacy_merging: false to go on "
                        "without it)")
    return count
