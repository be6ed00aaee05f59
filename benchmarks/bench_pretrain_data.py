"""Pretraining data path: crops/s of the preprocessed cache vs re-reading and re-preprocessing every step with
plain MONAI transforms, and the share of CPU step time spent waiting for data with the small preset.

Both data paths cut the same crops with the same pretext sampler (vococore.pretraining.pretext); they differ only in where
the preprocessed volume comes from: our cache (float16 .npy, memory-mapped) or LoadImaged -> EnsureChannelFirstd
-> Orientationd -> Spacingd -> ScaleIntensityRanged -> CropForegroundd -> SpatialPadd -> RandSpatialCropd run
again for every sample (the official v2 pipeline without MONAI's PersistentDataset).

    python benchmarks/bench_pretrain_data.py [--recipe v2] [--rounds 8] [--steps 15]

Prints one JSON line. Uses the real sample CTs (the registry's mirror or download).
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "VoCoCore"))


def monai_baseline(recipe):
    """The official-style transform chain for ``recipe`` (crop mode), re-run for every sample."""
    from monai.transforms import (Compose, CropForegroundd, EnsureChannelFirstd, LoadImaged, Orientationd,
                                  RandSpatialCropd, ScaleIntensityRanged, Spacingd, SpatialPadd)

    pre = recipe.preprocess_config()
    steps = [LoadImaged(keys="image", image_only=True), EnsureChannelFirstd(keys="image"),
             Orientationd(keys="image", axcodes="RAS", labels=None)]
    if pre.spacing is not None:
        steps.append(Spacingd(keys="image", pixdim=pre.spacing, mode="bilinear"))
    steps += [ScaleIntensityRanged(keys="image", a_min=pre.hu_range[0], a_max=pre.hu_range[1], b_min=0.0, b_max=1.0,
                                   clip=True),
              CropForegroundd(keys="image", source_key="image", allow_smaller=True),
              SpatialPadd(keys="image", spatial_size=recipe.region_size),
              RandSpatialCropd(keys="image", roi_size=recipe.region_size, random_size=False)]
    return Compose(steps)


def interleaved_crops_per_s(ours, baseline, rounds: int, ours_per_round: int,
                            crops_per_sample: int) -> tuple[float, float]:
    """Crops/s of both paths, timed in alternation (one baseline sample, then ``ours_per_round`` of ours, per
    round) so that load from other jobs on a shared machine hits both alike. One untimed call each first."""
    ours(0)
    baseline(0)
    t_ours = t_base = 0.0
    for r in range(rounds):
        t = time.perf_counter()
        baseline(r + 1)
        t_base += time.perf_counter() - t
        t = time.perf_counter()
        for i in range(ours_per_round):
            ours(1 + r * ours_per_round + i)
        t_ours += time.perf_counter() - t
    return (rounds * ours_per_round * crops_per_sample / t_ours, rounds * crops_per_sample / t_base)


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--recipe", default="v2", help="recipe whose preprocessing and crops are measured")
    parser.add_argument("--rounds", type=int, default=8, help="timed rounds: 1 baseline + 4 cached samples each")
    parser.add_argument("--steps", type=int, default=15, help="training steps for the data-wait share (small)")
    args = parser.parse_args(argv)

    import numpy as np
    import torch

    from vococore.cli.pretrain import config_path
    from vococore.utils.config import load_config
    from vococore.pretraining.data.cache import VolumeCache
    from vococore.pretraining.data.dataset import PretextDataset
    from vococore.pretraining.pretext import PretextSampler, get_recipe
    from vococore.pretraining.run import PretrainConfig, make_sample_fn, run_pretraining
    from vococore.io.sampledata import fetch

    torch.set_num_threads(2)
    recipe = get_recipe(args.recipe)
    paths = [fetch("TotalSegCT"), fetch("TotalSegCTSmall")]
    crops = recipe.num_bases + recipe.num_targets
    with tempfile.TemporaryDirectory() as tmp:
        cache = VolumeCache(recipe.preprocess_config(), Path(tmp) / "cache")
        t = time.perf_counter()
        for p in paths:
            cache.get(p)
        fill_s = time.perf_counter() - t
        dataset = PretextDataset(paths, VolumeCache(recipe.preprocess_config(), Path(tmp) / "cache"),
                                 make_sample_fn(recipe))
        chain, sampler = monai_baseline(recipe), PretextSampler(recipe)
        chain.set_random_state(seed=0)
        rng = np.random.default_rng(0)
        ours, base = interleaved_crops_per_s(
            lambda i: dataset[i], lambda i: sampler(chain({"image": str(paths[i % 2])})["image"], rng),
            args.rounds, 4, crops)

        data = [str(p) for p in paths] + [str(fetch("TotalSegDICOM"))]
        small = load_config(PretrainConfig, config_path("pretrain_small"),
                            {"data": data, "steps": args.steps, "output_dir": str(Path(tmp) / "run"),
                             "tensorboard": False, "checkpoint_every": 10**6})
        result = run_pretraining(small)
    out = {"recipe": recipe.name, "crops_per_sample": crops, "cache_fill_s": round(fill_s, 2),
           "cached_crops_per_s": round(ours, 1), "monai_reload_crops_per_s": round(base, 1),
           "speedup": round(ours / base, 1), "small_steps": result.step - result.start_step,
           "small_s_per_step": round(result.step_time_s / (result.step - result.start_step), 3),
           "small_data_wait_share": round(result.data_wait_s / result.step_time_s, 4),
           "torch_threads": torch.get_num_threads()}
    print(json.dumps(out))
    return out


if __name__ == "__main__":
    main()
