"""VoCo pretraining runs: the :class:`PretrainConfig` a YAML file maps onto, :func:`run_pretraining` that wires
data, cache, model and the shared training loop together, and a dry run that measures real steps and prints
time and memory estimates for the whole run before anything long starts."""

from __future__ import annotations

import dataclasses
import logging
import os
import resource
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from vococore.utils.config import save_config, to_dict
from vococore.pretraining.data.cache import VolumeCache, decode, decode_window
from vococore.pretraining.data.datalist import load_datalist
from vococore.pretraining.data.dataset import PretextDataset, make_loader, warm_cache
from vococore.utils.errors import VoCoError
from vococore.networks.backbones import BackboneSpec
from vococore.utils.progress import Progress
from vococore.training.distributed import DistInfo, barrier, cleanup, init_distributed, wrap_model
from vococore.training.loop import LoopConfig, Trainer, TrainResult, seed_everything

log = logging.getLogger(__name__)


@dataclass
class PretrainConfig:
    """Everything a pretraining run needs; ``vococore pretrain --config FILE.yaml`` reads it one to one.

    ``batch_size`` is volumes per step per process; each volume gives grid² bases + targets crops.
    ``cache_dir`` None keeps preprocessed volumes in memory; ``cache_limit_gb`` 0 means unbounded.
    ``init_encoder`` starts the backbone from an encoder file the weight loader accepts (official
    ``VoCo_*_SSL_head.pt``, our exports or checkpoints) with new projectors: continued pretraining.
    ``dist_timeout_s`` bounds every wait between ranks of a torchrun run.
    """

    data: str | list[str] = ""  # datalist JSON, folder, glob pattern, CT file/DICOM folder, or a list
    data_split: str = "training"
    recipe: str = "v2"
    backbone: BackboneSpec = field(default_factory=BackboneSpec)
    steps: int = 1000
    batch_size: int = 2
    lr: float = 1e-4
    weight_decay: float = 0.01
    warmup_steps: int = 5000
    amp: str = "auto"
    grad_clip: float | None = None
    checkpoint_every: int = 1000
    keep_every: int = 0
    cache_dir: str | None = None
    cache_limit_gb: float = 0.0
    cache_dtype: str = "float16"
    workers: int = 0
    seed: int = 0
    deterministic: bool = False
    device: str = "auto"
    skip_bad_files: bool = False
    tensorboard: bool = True
    output_dir: str = "output/pretrain"
    init_encoder: str | None = None
    init_min_fraction: float = 0.9
    dist_timeout_s: float = 1800.0

    def loop_config(self) -> LoopConfig:
        """The shared loop's part of this config."""
        return LoopConfig(steps=self.steps, lr=self.lr, weight_decay=self.weight_decay,
                          warmup_steps=min(self.warmup_steps, self.steps), amp=self.amp, grad_clip=self.grad_clip,
                          checkpoint_every=self.checkpoint_every, keep_every=self.keep_every)


@dataclass
class DryRunReport:
    """Estimates printed by ``--dry-run``: measured per-step time and memory, extrapolated to the whole run."""

    device: str
    amp: str
    crops_per_step: int
    step_s: float
    peak_memory_gb: float
    memory_kind: str
    steps_left: int
    run_s: float
    volumes: int
    cache_gb: float
    preprocess_s: float
    cache_note: str = ""

    def text(self) -> str:
        """A short human-readable summary."""
        return (f"dry run on {self.device} (amp {self.amp}): {self.crops_per_step} crops/step, "
                f"{self.step_s:.2f} s/step measured, peak {self.memory_kind} memory {self.peak_memory_gb:.2f} GB\n"
                f"whole run: {self.steps_left} steps ≈ {_hms(self.run_s)} of training + ≈ "
                f"{_hms(self.preprocess_s)} to preprocess {self.volumes} volume(s) once (cache ≈ "
                f"{self.cache_gb:.2f} GB)" + (f"\n{self.cache_note}" if self.cache_note else ""))


def _hms(seconds: float) -> str:
    h, rem = divmod(int(round(seconds)), 3600)
    return f"{h}h{rem // 60:02d}m" if h else f"{rem // 60}m{rem % 60:02d}s"


def make_sample_fn(recipe: Any):
    """The per-volume sample builder: place the recipe's region on the cached image (reading and decoding only
    that window in crop mode), then cut, label and augment the crops (vococore.pretraining.pretext) with the sample's own
    generator."""
    from vococore.pretraining.pretext import PretextSampler, place_region

    sampler = PretextSampler(recipe)

    def make_sample(image: np.ndarray, rng: np.random.Generator) -> dict[str, torch.Tensor]:
        placement = place_region(image.shape, recipe, rng)
        if placement.mode == "crop":
            start = np.rint(placement.offset).astype(np.int64)
            region = torch.from_numpy(decode_window(image, start, placement.region_size))[None]
        else:
            region = placement.extract(torch.from_numpy(decode(image))[None])
        sample = sampler(region, rng)
        return {"bases": sample.bases, "targets": sample.targets, "labels": sample.labels}

    return make_sample


def voco_step(model: torch.nn.Module, batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """The pretraining step function for the shared loop: VoCo loss parts and ``total`` of one batch."""
    return model(batch["bases"], batch["targets"], batch["labels"])


RUN_OUTPUTS = ("checkpoints", "metrics.jsonl", "tensorboard", "config.yaml", "load_report.txt")


def _check_output(config: PretrainConfig, resume: bool | str | os.PathLike, overwrite: bool) -> None:
    """Refuse to mix a new run into ``output_dir``'s previous one unless resuming or ``overwrite``."""
    out = Path(config.output_dir)
    if resume or overwrite:
        return
    found = [name for name in RUN_OUTPUTS if (out / name).exists()]
    if found:
        raise VoCoError(f"already holds a pretraining run ({', '.join(found)}); continue it with --resume, choose "
                        "another output_dir, or pass --overwrite to start over", out)


def _clear_outputs(config: PretrainConfig) -> None:
    """--overwrite: remove the previous run's checkpoints, metrics and TensorBoard events (nothing else)."""
    import shutil

    out = Path(config.output_dir)
    for name in RUN_OUTPUTS:
        path = out / name
        if path.is_dir():
            shutil.rmtree(path)
        elif path.exists():
            path.unlink()


def _init_encoder(model: Any, config: PretrainConfig) -> str:
    """Continued pretraining: copy the encoder file into the backbone (projectors stay new), keep the patch merging
    the file needs in the config so checkpoints record it; returns the load report's text."""
    from vococore.networks.weights import load_weights

    report = load_weights(model.encoder(), config.init_encoder, config.init_min_fraction)
    text = report.summary(max_keys=50)
    log.info("initial encoder: %s", report.summary())
    if report.legacy_merging is not None and report.legacy_merging != config.backbone.legacy_merging:
        log.warning("patch merging set to %s to match %s (config said otherwise)",
                    "MONAI 1.3.0" if report.legacy_merging else "MONAI >= 1.4", config.init_encoder)
        config.backbone.legacy_merging = report.legacy_merging
    return text


def run_pretraining(config: PretrainConfig, resume: bool | str | os.PathLike = False, dry_run: bool = False,
                    json_progress: bool = False, stop_after: int | None = None, overwrite: bool = False,
                    build_cache_only: bool = False) -> TrainResult | DryRunReport | list[Path]:
    """Pretrain as ``config`` says. ``resume`` True continues ``output_dir/checkpoints/last.pt`` exactly (or give
    a checkpoint path); ``stop_after`` ends this call after that many steps (with a checkpoint); ``dry_run``
    measures a few real steps, returns the estimates and trains nothing; ``build_cache_only`` fills
    ``cache_dir`` (all ranks in parallel) and returns the usable volumes; ``overwrite`` clears the previous
    run's checkpoints, metrics and TensorBoard events first."""
    from vococore.pretraining.model import VoCoModel
    from vococore.pretraining.pretext import get_recipe

    if not dry_run and not build_cache_only:
        _check_output(config, resume, overwrite)
    info = init_distributed(config.device, config.dist_timeout_s)
    try:
        recipe = get_recipe(config.recipe)
        seed_everything(config.seed, config.deterministic)
        if not config.data:
            raise VoCoError("the config names no data: set 'data' to a datalist JSON, a folder or a glob pattern")
        paths = load_datalist(config.data, config.data_split)
        if dry_run:
            done = _resume_step(config, resume) if resume else 0
            return _dry_run(config, recipe, paths, info, steps_left=config.steps - done)
        if build_cache_only and not config.cache_dir:
            raise VoCoError("--build-cache needs a cache_dir (an in-memory cache cannot be built ahead)")
        if overwrite and not resume and not build_cache_only:
            if info.is_main:
                _clear_outputs(config)
            barrier(info)
        cache = VolumeCache(recipe.preprocess_config(), config.cache_dir, config.cache_limit_gb, config.cache_dtype)
        paths = _warm(cache, paths, config, info, json_progress)
        if build_cache_only:
            return paths
        dataset = PretextDataset(paths, cache, make_sample_fn(recipe), seed=config.seed)
        if resume:  # keep the patch merging the run started with (it may come from init_encoder's file)
            previous = _resume_checkpoint(config, resume)["backbone"]
            config.backbone.legacy_merging = bool(previous.get("legacy_merging"))
        model = VoCoModel(config.backbone, recipe)
        report = _init_encoder(model, config) if config.init_encoder and not resume else None
        model.to(info.device)
        if info.distributed:
            torch.manual_seed(config.seed + 1000003 * info.rank)  # distinct dropout draws per rank
        trainer = Trainer(wrap_model(model, info), voco_step, config.loop_config(), config.output_dir, info,
                          backbone=config.backbone, recipe=to_dict(recipe), run_config=config,
                          json_progress=json_progress, tensorboard=config.tensorboard)
        if resume:
            trainer.resume(None if resume is True else resume)
        if info.is_main:
            save_config(config, Path(config.output_dir) / "config.yaml")
            if report is not None:
                (Path(config.output_dir) / "load_report.txt").write_text(report + "\n")
        loader = make_loader(dataset, config.batch_size, trainer.step, config.steps, info.rank, info.world_size,
                             config.workers, pin_memory=info.device.type == "cuda")
        result = trainer.fit(loader, stop_after=stop_after,
                             data_state=lambda s: {"next_step": s, "volumes": len(paths), "seed": config.seed},
                             describe=lambda batch: [dataset.volume_index(int(n)) for n in batch["index"]])
        barrier(info)  # leave the process group together (see cleanup)
        return result
    finally:
        cleanup(info)


def _warm(cache: VolumeCache, paths: list[Path], config: PretrainConfig, info: DistInfo,
          json_progress: bool) -> list[Path]:
    """Fill the cache before training, every rank at once (a disk cache is split between the ranks)."""
    share = -(-len(paths) // info.world_size) if config.cache_dir and info.distributed else len(paths)
    progress = Progress("cache", share, json_lines=json_progress and info.is_main, enabled=info.is_main)
    good, bad = warm_cache(cache, paths, config.skip_bad_files, progress, info)
    progress.close(volumes=len(good), bad_files=len(bad), built=cache.built, reused=cache.reused)
    if info.is_main:
        if bad:
            log.warning("left out %d unreadable volume(s) of %d", len(bad), len(paths))
        if cache.skipped_count:
            log.warning("%d volume(s) did not fit the cache limit and are re-read every time",
                        cache.skipped_count)
    return good


def _peak_memory_gb(device: torch.device) -> tuple[float, str]:
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**30, "GPU"
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20, "process (RSS)"


def _resume_checkpoint(config: PretrainConfig, resume: bool | str | os.PathLike) -> dict[str, Any]:
    """The checkpoint a resumed run continues from."""
    from vococore.training.checkpoint import load_checkpoint

    return load_checkpoint(Path(config.output_dir) / "checkpoints" / "last.pt" if resume is True else Path(resume))


def _resume_step(config: PretrainConfig, resume: bool | str | os.PathLike) -> int:
    """The step a resumed run would continue from."""
    return int(_resume_checkpoint(config, resume)["step"])


def _dry_run(config: PretrainConfig, recipe: Any, paths: list[Path], info: DistInfo, steps_left: int,
             measure_steps: int = 2) -> DryRunReport:
    """Measure ``measure_steps`` real training steps on the first volumes (in-memory cache, nothing written)."""
    from vococore.pretraining.model import VoCoModel

    cache = VolumeCache(recipe.preprocess_config(), None, dtype=config.cache_dtype)
    t0 = time.perf_counter()
    first = cache.get(paths[0])
    preprocess_s = time.perf_counter() - t0
    dataset = PretextDataset(paths[:1], cache, make_sample_fn(recipe), seed=config.seed)
    model = VoCoModel(config.backbone, recipe).to(info.device)
    trainer = Trainer(model, voco_step, dataclasses.replace(config.loop_config(), steps=measure_steps),
                      "/nonexistent-dry-run", info, backbone=config.backbone, tensorboard=False)
    if info.device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(info.device)
    times = []
    for batch in make_loader(dataset, config.batch_size, 0, measure_steps):
        t = time.perf_counter()
        trainer.train_step(batch)
        if info.device.type == "cuda":
            torch.cuda.synchronize(info.device)
        times.append(time.perf_counter() - t)
    step_s = min(times)
    peak, kind = _peak_memory_gb(info.device)
    cache_gb = first.array.nbytes * len(paths) / 2**30
    crops = config.batch_size * (recipe.num_bases + recipe.num_targets)
    return DryRunReport(device=str(info.device), amp=str(trainer.dtype).replace("torch.", "") if trainer.dtype
                        else "none", crops_per_step=crops, step_s=step_s, peak_memory_gb=peak, memory_kind=kind,
                        steps_left=steps_left, run_s=step_s * steps_left, volumes=len(paths),
                        cache_gb=cache_gb, preprocess_s=preprocess_s * len(paths) / max(info.world_size, 1),
                        cache_note=_cache_note(config, cache_gb, len(paths)))


def _cache_note(config: PretrainConfig, cache_gb: float, volumes: int) -> str:
    """What happens to the estimated cache under ``cache_limit_gb`` (said before a long run starts)."""
    where = f"on disk in {config.cache_dir}" if config.cache_dir else "in the memory of every process"
    limit = config.cache_limit_gb
    if not limit or cache_gb <= limit:
        return f"cache: all {volumes} volume(s) fit ({where}{f', limit {limit:g} GB' if limit else ''})"
    fits = int(volumes * limit / cache_gb)
    return (f"cache: only about {fits} of {volumes} volumes fit cache_limit_gb {limit:g} GB ({where}); the other "
            f"{volumes - fits} are read and preprocessed again every time they are drawn, which slows every "
            f"epoch; raise cache_limit_gb to about {cache_gb * 1.1:.0f}"
            + (" or use cache_dtype uint8 (half the size)" if config.cache_dtype != "uint8" else ""))
