"""2-process torchrun (gloo) pretraining on real CT: both ranks build the disk cache in parallel, a killed build
resumes without redoing finished volumes, ranks draw different volumes every step, and a SIGTERM sent to one rank
stops both with one checkpoint from which resume repeats the uninterrupted losses; only rank 0 writes files."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import torch

from vococore.training.checkpoint import load_checkpoint

TORCHRUN = Path(sys.executable).parent / "torchrun"
VOLUMES, STEPS = 16, 6


def _cmd(data: Path, cache: Path, out: Path, *extra: str) -> list[str]:
    return [str(TORCHRUN), "--standalone", "--nproc_per_node=2", "-m", "vococore", "pretrain",
            "--config", "pretrain_small", "--json-progress", "--set", f"data={data}", "--set", f"cache_dir={cache}",
            "--set", f"steps={STEPS}", "--set", "checkpoint_every=100", "--set", f"output_dir={out}",
            "--set", "tensorboard=false", "--set", "dist_timeout_s=120", *extra]


def _events(line: str, stage: str) -> dict | None:
    if not line.startswith("{"):
        return None
    event = json.loads(line)
    return event if event["event"] == "progress" and event["stage"] == stage else None


def _losses(stdout: str) -> dict[int, dict[str, float]]:
    found = [_events(line, "pretrain") for line in stdout.splitlines()]
    return {e["step"]: e["metrics"] for e in found if e}


def _entries(cache: Path) -> dict[str, tuple[int, int]]:
    """Finished cache entries: key -> (mtime of its .npy, rank that built it)."""
    out = {}
    for meta in cache.glob("*.json"):
        if meta.name != "manifest.json" and not meta.name.startswith("."):
            rank = json.loads(meta.read_text())["built_by_rank"]
            out[meta.stem] = (meta.with_suffix(".npy").stat().st_mtime_ns, rank)
    return out


def _rank_pid(launcher: subprocess.Popen, rank: int) -> int:
    """The pid of the torchrun worker with RANK=rank (a child of the launcher)."""
    for child in Path(f"/proc/{launcher.pid}/task/{launcher.pid}/children").read_text().split():
        env = Path(f"/proc/{child}/environ").read_bytes().split(b"\0")
        if f"RANK={rank}".encode() in env:
            return int(child)
    raise AssertionError("worker not found")


def test_parallel_cache_build_resume_sharding_and_sigterm(tmp_path, sample):
    data = tmp_path / "ct"
    data.mkdir()
    for i in range(VOLUMES):  # distinct files (the cache keys on path, size and mtime)
        shutil.copy(sample("TotalSegCT"), data / f"ct{i:02d}.nii.gz")
    cache = tmp_path / "cache"
    env = {**os.environ, "OMP_NUM_THREADS": "1"}

    # 1. build the cache ahead on both ranks; kill the whole job (SIGKILL) once rank 0 reported 3 volumes and
    # both ranks have finished entries on disk (a loaded 2-core machine may start one rank seconds late)
    build = subprocess.Popen(_cmd(data, cache, tmp_path / "unused", "--build-cache"), stdout=subprocess.PIPE,
                             stderr=subprocess.PIPE, text=True, env=env, start_new_session=True)
    for line in build.stdout:
        event = _events(line, "cache")
        if event and event["step"] >= 3 and {rank for _, rank in _entries(cache).values()} == {0, 1}:
            assert event["metrics"]["volumes_per_s"] > 0 and event["eta_s"] is not None
            workers = [_rank_pid(build, 0), _rank_pid(build, 1)]  # torchrun puts them in their own sessions
            for pid in workers:
                os.kill(pid, signal.SIGKILL)
            os.killpg(build.pid, signal.SIGKILL)
            break
    _, build_err = build.communicate(timeout=60)
    before = _entries(cache)
    assert 3 <= len(before) < VOLUMES, (len(before), build.returncode, build_err[-3000:])
    assert {rank for _, rank in before.values()} == {0, 1}  # both ranks were building at once

    # 2. the reference run finishes the cache without redoing finished volumes, then trains STEPS steps
    ref = subprocess.run(_cmd(data, cache, tmp_path / "ref"), capture_output=True, text=True, env=env, timeout=300)
    assert ref.returncode == 0, ref.stderr[-3000:]
    after = _entries(cache)
    assert len(after) == VOLUMES and all(after[k] == v for k, v in before.items())
    manifest = json.loads((cache / "manifest.json").read_text())
    assert manifest["reused"] == len(before) and manifest["built"] == VOLUMES - len(before), manifest
    # only rank 0 writes: one metrics line per step, one checkpoint of the unwrapped model with both ranks' RNG
    files = sorted(p.relative_to(tmp_path / "ref").as_posix() for p in (tmp_path / "ref").rglob("*") if p.is_file())
    assert files == ["checkpoints/last.pt", "config.yaml", "metrics.jsonl"], files
    records = [json.loads(line) for line in (tmp_path / "ref" / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in records] == list(range(1, STEPS + 1))
    ckpt = load_checkpoint(tmp_path / "ref" / "checkpoints" / "last.pt")
    assert ckpt["step"] == STEPS and isinstance(ckpt["rng"], list) and len(ckpt["rng"]) == 2
    assert not any(k.startswith("module.") for k in ckpt["model"])
    assert all(torch.isfinite(v).all() for v in ckpt["model"].values() if v.is_floating_point())
    for r in records:  # per step: 2 ranks x batch 2, no volume on both ranks
        r0, r1 = r["volumes"]
        assert len(r0) == len(r1) == 2 and not set(r0) & set(r1), r["volumes"]
    reference = _losses(ref.stdout)
    printed = [e["step"] for e in map(lambda line: _events(line, "pretrain"), ref.stdout.splitlines()) if e]
    assert printed == list(range(1, STEPS + 1))  # one progress line per step: rank 0 prints

    # 3. SIGTERM to rank 1 only: both ranks stop after the same step, one checkpoint
    run = tmp_path / "killed"
    proc = subprocess.Popen(_cmd(data, cache, run), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env=env)
    for line in proc.stdout:
        event = _events(line, "pretrain")
        if event and event["step"] == 2:
            os.kill(_rank_pid(proc, 1), signal.SIGTERM)
            break
    rest, err = proc.communicate(timeout=300)
    assert proc.returncode == 0, err[-3000:]
    k = load_checkpoint(run / "checkpoints" / "last.pt")["step"]
    assert 2 <= k < STEPS - 1, k
    assert sorted(p.name for p in (run / "checkpoints").iterdir()) == ["last.pt"]

    # 4. resume repeats the uninterrupted run's losses bit for bit
    resumed = subprocess.run(_cmd(data, cache, run, "--resume"), capture_output=True, text=True, env=env,
                             timeout=300)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    again = _losses(resumed.stdout)
    assert sorted(again) == list(range(k + 1, STEPS + 1))
    for step in again:
        for part in ("total", "intra", "inter", "reg", "lr"):
            assert again[step][part] == reference[step][part], (step, part)
