"""The GPU run script and its checks, on the CPU: ``benchmarks/gpu_run.sh`` runs every step
even after one fails and counts the failures; ``benchmarks/gpu_checks.py`` refuses to run
without CUDA unless asked for a dry run, and its comparisons fail a run that differs.

Chapter: 05_training
"""

from __future__ import annotations

import importlib
import os
import subprocess
import sys
from pathlib import Path
from types import ModuleType

import pytest

ROOT = Path(__file__).resolve().parents[1]

STUB = """#!/usr/bin/env bash
if [ "$1" = "-c" ]; then echo "$GPUS"; exit 0; fi  # the GPU count
echo "ran: $*"
case "$*" in *gpu_checks*) exit 3;; esac
"""


def gpu_run(tmp_path: Path, *args: str, gpus: int = 2) -> subprocess.CompletedProcess[str]:
    """benchmarks/gpu_run.sh with a stub interpreter that prints what it was asked to run,
    counts ``gpus`` GPUs and fails gpu_checks.py."""
    stub = tmp_path / "python"
    stub.write_text(STUB)
    stub.chmod(0o755)
    return subprocess.run(
        ["bash", str(ROOT / "benchmarks/gpu_run.sh"), *args],
        env={"PATH": "/usr/bin:/bin", "PYTHON": str(stub), "GPUS": str(gpus)},
        capture_output=True,
        text=True,
        timeout=60,
    )


def ran(log: str) -> list[str]:
    return [line.removeprefix("ran: ") for line in log.splitlines() if line.startswith("ran: ")]


def test_gpu_run_runs_every_step_and_counts_the_failed_ones(tmp_path):
    out = tmp_path / "out"
    run = gpu_run(tmp_path, str(out))
    assert run.returncode == 1, run.stdout + run.stderr  # one step failed
    log = (out / "gpu_run.log").read_text()
    assert "== CUDA paths: FAILED (exit 3)" in log
    steps = ran(log)
    assert steps[0] == "benchmarks/gpu_checks.py"
    assert steps[1].startswith("-m torch.distributed.run --standalone --nproc_per_node 2 ")
    assert f"reproduce --profile gpu --out {out}/results-gpu" in steps[2]
    assert f"reproduce --profile gpu --parallel 6 --out {out}/results-gpu-parallel" in steps[3]
    assert steps[4:] == [
        "benchmarks/bench_training.py --profile gpu --device cuda --compile",
        "benchmarks/bench_features.py",
        "benchmarks/bench_lockstep.py --profile gpu --models 3 --device cuda",
        "benchmarks/bench_parallel.py --profile gpu --models 6 --steps 1000 --device cuda",
    ]
    assert log.rstrip().endswith(f"1 step(s) failed; log in {out}/gpu_run.log")


def test_gpu_run_skips_ddp_on_one_gpu_and_empties_the_reproduce_cache(tmp_path):
    out = tmp_path / "out"
    stale = out / "cache-gpu" / "models" / "stale"
    stale.mkdir(parents=True)
    run = gpu_run(tmp_path, str(out), "checks", gpus=1)
    assert "SKIPPED: 1 GPU(s); DDP with NCCL needs two or more" in run.stdout
    assert not any("torch.distributed.run" in line for line in ran(run.stdout))
    assert stale.exists()  # only the reproduce part empties its cache
    run = gpu_run(tmp_path, str(out), "reproduce", gpus=1)
    assert not stale.exists()
    assert not any("--parallel" in line for line in ran(run.stdout))
    run = gpu_run(tmp_path, str(out), "parallel", gpus=1)
    assert ran(run.stdout) == [
        f"-m pitchtimbre reproduce --profile gpu --parallel 6 --out {out}/results-gpu-parallel"
    ]


def test_gpu_run_runs_one_part_when_asked_and_refuses_an_unknown_part(tmp_path):
    out = tmp_path / "out"
    run = gpu_run(tmp_path, str(out), "benchmarks")
    assert run.returncode == 0, run.stdout + run.stderr
    assert ran(run.stdout) == [
        "benchmarks/bench_training.py --profile gpu --device cuda --compile",
        "benchmarks/bench_features.py",
        "benchmarks/bench_lockstep.py --profile gpu --models 3 --device cuda",
        "benchmarks/bench_parallel.py --profile gpu --models 6 --steps 1000 --device cuda",
    ]
    bad = gpu_run(tmp_path, str(out), "everything")
    assert (
        bad.returncode == 64
        and "PART must be all, checks, reproduce, parallel or benchmarks" in bad.stderr
    )


@pytest.fixture
def gpu_checks(monkeypatch) -> ModuleType:
    """benchmarks/gpu_checks.py as a module (benchmarks/ on the path for this test only)."""
    monkeypatch.syspath_prepend(str(ROOT / "benchmarks"))
    return importlib.import_module("gpu_checks")


def test_gpu_checks_needs_cuda_or_a_dry_run():
    run = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks/gpu_checks.py")],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=ROOT,
        env={**os.environ, "CUDA_VISIBLE_DEVICES": ""},  # no GPU, even on a machine with one
    )
    assert run.returncode == 2 and "no CUDA device here" in run.stderr


def test_gpu_checks_dry_run_passes_and_a_changed_run_fails(gpu_checks, tmp_path, monkeypatch):
    cfg = gpu_checks.profile_config("ci").with_overrides(
        {"train.device": "cpu", "train.steps": 10, "train.log_every": 5}
    )
    ds = gpu_checks.synthetic_dataset(cfg, n_notes=300)
    ok, detail = gpu_checks.check_streaming(cfg, ds, tmp_path / "same")
    assert ok, detail
    real_run = gpu_checks.run

    def drifting(cfg, ds, out, **overrides):  # the "streamed" run trains with another lr
        if overrides.get("train.features_on") == "host":
            overrides["train.lr"] = 1e-2
        return real_run(cfg, ds, out, **overrides)

    monkeypatch.setattr(gpu_checks, "run", drifting)
    ok, detail = gpu_checks.check_streaming(cfg, ds, tmp_path / "drift")
    assert not ok and "largest relative loss gap" in detail
