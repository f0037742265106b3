"""The GPU run script and its checks, on the CPU: ``benchmarks/gpu_run.sh`` runs every step
even after one fails and counts the failures; ``benchmarks/gpu_checks.py`` refuses to run
without CUDA unless asked for a dry run, and its comparisons fail a run that differs.

Chapter: 05_training
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))

import gpu_checks  # noqa: E402

STUB = """#!/usr/bin/env bash
if [ "$1" = "-c" ]; then echo 2; exit 0; fi  # the GPU count
echo "ran: $*"
case "$*" in *gpu_checks*) exit 3;; esac
"""


def gpu_run(tmp_path, *args: str) -> subprocess.CompletedProcess:
    """benchmarks/gpu_run.sh with a stub interpreter that prints what it was asked to run
    (and fails gpu_checks.py)."""
    stub = tmp_path / "python"
    stub.write_text(STUB)
    stub.chmod(0o755)
    return subprocess.run(
        ["bash", str(ROOT / "benchmarks/gpu_run.sh"), *args],
        env={"PATH": "/usr/bin:/bin", "PYTHON": str(stub)},
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_gpu_run_runs_every_step_and_counts_the_failed_ones(tmp_path):
    out = tmp_path / "out"
    run = gpu_run(tmp_path, str(out))
    assert run.returncode == 1, run.stdout + run.stderr  # one step failed
    log = (out / "gpu_run.log").read_text()
    assert "== CUDA paths: FAILED (exit 3)" in log
    ran = [line.removeprefix("ran: ") for line in log.splitlines() if line.startswith("ran: ")]
    assert ran[0] == "benchmarks/gpu_checks.py"
    assert ran[1].startswith("-m torch.distributed.run --standalone --nproc_per_node 2 ")
    assert f"reproduce --profile gpu --out {out}/results-gpu" in ran[2]
    assert ran[3:] == [
        "benchmarks/bench_training.py --profile gpu --device cuda",
        "benchmarks/bench_features.py",
    ]
    assert log.rstrip().endswith(f"1 step(s) failed; log in {out}/gpu_run.log")


def test_gpu_run_runs_one_part_when_asked_and_refuses_an_unknown_part(tmp_path):
    out = tmp_path / "out"
    run = gpu_run(tmp_path, str(out), "benchmarks")
    assert run.returncode == 0, run.stdout + run.stderr
    ran = [line for line in run.stdout.splitlines() if line.startswith("ran: ")]
    assert ran == [
        "ran: benchmarks/bench_training.py --profile gpu --device cuda",
        "ran: benchmarks/bench_features.py",
    ]
    bad = gpu_run(tmp_path, str(out), "everything")
    assert (
        bad.returncode == 64 and "PART must be all, checks, reproduce or benchmarks" in bad.stderr
    )


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


def test_gpu_checks_dry_run_passes_and_a_changed_run_fails(tmp_path, monkeypatch):
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
