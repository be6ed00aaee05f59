"""CPU training step of the shared loop (``Trainer.train_step``: forward, backward, AdamW amsgrad) with PyTorch's
default kernels (the baseline: ``fast_kernels=False``, fp32), with vococore's training kernels
(``vococore.networks.fast_training``, fp32: the exact path) and with those kernels under bf16 autocast.

Cases: the ``small`` pretraining step (pretrain_small: CNN fs 4, 2 volumes x (2 targets + 9 bases) of 32^3), the
CNN fine-tuning step (finetune_small: BasicUNet fs 8, 5 classes, 4 crops of 32^3, DiceCE) and, with ``--cases swin``,
a Swin pretraining step (fs 12, v2 with a 2 x 2 grid and one target: 5 crops of 64^3, as the suite's continued
pretraining test). Every variant starts
from the same weights and batch; one untimed step each, then ``--rounds`` rounds that time one step of each
variant in turn (so a shared machine slows all alike); medians and the median of per-round ratios are printed as
one JSON line per case, with the largest relative difference of a first-step loss part from the baseline.

    python benchmarks/bench_train_step.py [--rounds 7] [--threads 2] [--cases pretrain finetune swin] [--bf16]
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import statistics
import tempfile
import time

# OpenMP's wait policy as the vococore CLI sets it before torch loads (a value in the environment is kept). It
# moves the baseline: libgomp's default spinning made the default path's 2-thread steps 1.5-2x faster on a quiet
# CPU, while the fast path runs one thread per part and is not affected (BENCHMARKS.md).
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import torch  # noqa: E402  (after the wait policy)

VARIANTS = {"default": {"fast_kernels": False, "amp": "none"},
            "fast": {"fast_kernels": True, "amp": "none"},
            "fast_bf16": {"fast_kernels": True, "amp": "bf16"}}  # only with --bf16 (needs avx512_bf16 or AMX)


def pretrain_case(seed: int = 0, swin: bool = False):
    """VoCoModel (small recipe, CNN fs 4; or Swin fs 12 on a v2 recipe with a 2 x 2 grid and one target) and one
    batch of 2 (Swin: 1) smooth random regions through the real sampler."""
    import dataclasses

    import numpy as np

    from vococore.networks.backbones import BackboneSpec
    from vococore.pretraining.model import VoCoModel
    from vococore.pretraining.pretext import RECIPES, PretextSampler, collate
    from vococore.pretraining.run import voco_step

    recipe = RECIPES["small"]
    spec = BackboneSpec(arch="cnn", feature_size=4)
    if swin:
        recipe = dataclasses.replace(RECIPES["v2"], grid=2, region_size=(128, 128, 64), num_targets=1,
                                     target_center_range=(48, 49), region_mode="resize",
                                     projector_hidden=128, projector_out=128)
        spec = BackboneSpec(arch="swin", feature_size=12, legacy_merging=False, use_checkpoint=False)
    torch.manual_seed(seed)
    rng = np.random.default_rng(seed)
    sampler = PretextSampler(recipe)
    samples = []
    for _ in range(1 if swin else 2):
        coarse = torch.rand((1, 1, *(max(s // 8, 2) for s in recipe.region_size)))
        samples.append(sampler(torch.nn.functional.interpolate(coarse, size=recipe.region_size, mode="trilinear")[0],
                               rng))
    return VoCoModel(spec, recipe), voco_step, collate(samples), spec


def finetune_case(seed: int = 0):
    """BasicUNet fs 8 with 5 classes, DiceCE, 4 crops of 32^3 with blob-shaped labels."""
    from monai.losses import DiceCELoss

    from vococore.networks.backbones import BackboneSpec, build_segmenter

    spec = BackboneSpec(arch="cnn", feature_size=8)
    torch.manual_seed(seed)
    image = torch.nn.functional.interpolate(torch.rand(4, 1, 4, 4, 4), size=(32, 32, 32), mode="trilinear")
    label = (image * 5).clamp(max=4.99).long()
    loss_fn = DiceCELoss(to_onehot_y=True, softmax=True)

    def step(model: torch.nn.Module, batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        return {"total": loss_fn(model(batch["image"]), batch["label"])}

    return build_segmenter(spec, 5), step, {"image": image, "label": label}, spec


def run_case(name: str, rounds: int, bf16: bool) -> dict:
    """Time the three variants of one case in alternation; see the module docstring."""
    from vococore.training.distributed import DistInfo
    from vococore.training.loop import LoopConfig, Trainer

    model, step_fn, batch, spec = (finetune_case() if name == "finetune" else pretrain_case(swin=name == "swin"))
    tmp = tempfile.mkdtemp(prefix="bench-train-")
    trainers = {v: Trainer(copy.deepcopy(model), step_fn, LoopConfig(steps=rounds + 1, lr=1e-3, **cfg), tmp,
                           DistInfo(device=torch.device("cpu")), backbone=spec, tensorboard=False)
                for v, cfg in VARIANTS.items() if bf16 or v != "fast_bf16"}
    first = {}
    for variant, trainer in trainers.items():
        torch.manual_seed(123)
        first[variant] = trainer.train_step(batch)
    times = {v: [] for v in trainers}
    for _ in range(rounds):
        for variant, trainer in trainers.items():
            start = time.perf_counter()
            trainer.train_step(batch)
            times[variant].append(time.perf_counter() - start)
    base = first["default"]
    result = {"case": name, "threads": torch.get_num_threads(), "rounds": rounds,
              "omp_wait_policy": os.environ["OMP_WAIT_POLICY"]}
    for variant in trainers:
        ratios = [d / t for d, t in zip(times["default"], times[variant])]
        rel = max(abs(first[variant][k] - v) / max(abs(v), 1e-12) for k, v in base.items())
        result[variant] = {"median_s": round(statistics.median(times[variant]), 4),
                           "speedup": round(statistics.median(ratios), 2), "max_rel_loss_diff": float(f"{rel:.2e}")}
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--bf16", action="store_true", help="also time bf16 autocast (slow where the CPU has no "
                        "bf16 instructions: it is emulated)")
    parser.add_argument("--cases", nargs="+", default=["pretrain", "finetune"], choices=["pretrain", "finetune", "swin"])
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    for name in args.cases:
        print(json.dumps(run_case(name, args.rounds, args.bf16)), flush=True)


if __name__ == "__main__":
    main()
