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
if [ "$1" = "-c" ]; then
  case "$2" in *preflight*) exit "${PREFLIGHT:-0}" ;; esac
  echo "$GPUS"; exit 0  # the GPU count
fi
echo "ran: $*"
case "$*" in *gpu_checks*) exit 3 ;; esac
args=("$@")
for ((i = 0; i < ${#args[@]}; i++)); do  # a reproduce writes its results
  if [ "${args[i]}" = --out ]; then
    mkdir -p "${args[i + 1]}" && echo table > "${args[i + 1]}/results.md" && echo {} > "${args[i + 1]}/results.json"
  fi
done
case "$*" in *"reproduce --profile gpu --out"*)  # and leaves its features in its cache
  mkdir -p "$PITCHTIMBRE_CACHE/features" && touch "$PITCHTIMBRE_CACHE/features/f.npz" ;;
esac
"""

BENCHMARKS = [
    "benchmarks/bench_training.py --profile gpu --device cuda --compile",
    "benchmarks/bench_features.py --notes 128 --repeat 2",
]
EXTRAS = [
    "benchmarks/bench_lockstep.py --profile gpu --models 3 --device cuda",
    "benchmarks/bench_parallel.py --profile gpu --models 6 --steps 1000 --device cuda",
]


def gpu_run(
    tmp_path: Path, *args: str, gpus: int = 2, **env: str
) -> subprocess.CompletedProcess[str]:
    """benchmarks/gpu_run.sh with a stub interpreter that prints what it was asked to run,
    counts ``gpus`` GPUs and fails gpu_checks.py; its cache in tmp_path/cache, no wheels
    unless tmp_path/wheels holds some."""
    stub = tmp_path / "python"
    stub.write_text(STUB)
    stub.chmod(0o755)
    return subprocess.run(
        ["bash", str(ROOT / "benchmarks/gpu_run.sh"), *args],
        env={
            "PATH": "/usr/bin:/bin",
            "PYTHON": str(stub),
            "GPUS": str(gpus),
            "GPU_RUN_CACHE": str(tmp_path / "cache"),
            "GPU_RUN_WHEELS": str(tmp_path / "wheels"),
            **env,
        },
        capture_output=True,
        text=True,
        timeout=60,
    )


def ran(log: str) -> list[str]:
    return [line.removeprefix("ran: ") for line in log.splitlines() if line.startswith("ran: ")]


def test_gpu_run_runs_every_step_and_counts_the_failed_ones(tmp_path):
    out, cache = tmp_path / "out", tmp_path / "cache"
    run = gpu_run(tmp_path, str(out))
    assert run.returncode == 1, run.stdout + run.stderr  # one step failed
    log = (out / "gpu_run.log").read_text()
    assert "== CUDA paths: FAILED (exit 3)" in log
    steps = ran(log)
    assert steps[:2] == BENCHMARKS
    assert f"reproduce --profile gpu --out {cache}/results-gpu" in steps[2]
    assert steps[3] == "benchmarks/gpu_checks.py"
    assert steps[4].startswith("-m torch.distributed.run --standalone --nproc_per_node 2 ")
    assert f"reproduce --profile gpu --parallel 6 --out {cache}/results-gpu-parallel" in steps[5]
    assert steps[6:] == EXTRAS
    assert log.rstrip().endswith(f"1 step(s) failed; log in {out}/gpu_run.log")
    # OUT gets flat files only (the device tool returns few files, two folders down at most)
    assert sorted(p.name for p in out.iterdir()) == sorted(
        [
            "gpu_run.log",
            *(
                f"results-{n}.{e}"
                for n in ("ci-ddp", "gpu", "gpu-parallel")
                for e in ("json", "md")
            ),
        ]
    )


def test_gpu_run_skips_ddp_on_one_gpu_and_empties_the_reproduce_cache(tmp_path):
    out = tmp_path / "out"
    stale = tmp_path / "cache" / "gpu" / "models" / "stale"
    stale.mkdir(parents=True)
    run = gpu_run(tmp_path, str(out), "checks", gpus=1)
    assert "SKIPPED: 1 GPU(s); DDP with NCCL needs two or more" in run.stdout
    assert not any("torch.distributed.run" in line for line in ran(run.stdout))
    assert stale.exists()  # only the reproduce part empties its cache
    run = gpu_run(tmp_path, str(out), "reproduce", gpus=1)
    assert not stale.exists()
    assert not any("--parallel" in line for line in ran(run.stdout))
    run = gpu_run(tmp_path, str(out), "parallel", gpus=1)  # a later call on the same machine
    assert run.returncode == 0, run.stdout
    assert ran(run.stdout) == [
        f"-m pitchtimbre reproduce --profile gpu --parallel 6 --out {tmp_path}/cache/results-gpu-parallel"
    ]


def test_gpu_run_side_by_side_needs_the_reproduce_parts_data(tmp_path):
    run = gpu_run(tmp_path, str(tmp_path / "out"), "parallel")
    assert run.returncode == 1 and ran(run.stdout) == []
    assert "no features in" in run.stdout and "run the reproduce part first" in run.stdout


def test_gpu_run_runs_the_parts_asked_for_and_refuses_an_unknown_part(tmp_path):
    out = tmp_path / "out"
    run = gpu_run(tmp_path, str(out), "benchmarks")
    assert run.returncode == 0, run.stdout + run.stderr
    assert ran(run.stdout) == BENCHMARKS
    run = gpu_run(tmp_path, str(out), "extras,benchmarks")  # in the script's order
    assert ran(run.stdout) == BENCHMARKS + EXTRAS
    bad = gpu_run(tmp_path, str(out), "benchmarks,everything")
    assert bad.returncode == 64 and ran(bad.stdout) == []
    assert "PART must be all or some of benchmarks reproduce checks parallel extras" in bad.stderr


def test_gpu_run_stops_before_any_step_without_cuda_or_packages(tmp_path):
    out = tmp_path / "out"
    run = gpu_run(tmp_path, str(out), PREFLIGHT="1")
    assert run.returncode == 2 and ran(run.stdout) == []
    assert "gpu_run.sh: stopped before any step" in (out / "gpu_run.log").read_text()


def test_gpu_run_writes_to_the_device_tools_out_and_installs_carried_wheels(tmp_path):
    wheels = tmp_path / "wheels"
    wheels.mkdir()
    (wheels / "librosa-0.11.0-py3-none-any.whl").touch()
    out = tmp_path / "device-out"
    run = gpu_run(tmp_path, OUT=str(out))  # no OUT argument: the device tool's $OUT
    log = (out / "gpu_run.log").read_text()
    assert "installing the carried wheels: librosa-0.11.0-py3-none-any.whl" in log
    assert ran(log)[0] == (
        "-m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade "
        f"--target {tmp_path}/cache/site {wheels}/librosa-0.11.0-py3-none-any.whl"
    )
    assert run.returncode == 1  # gpu_checks, as above


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
