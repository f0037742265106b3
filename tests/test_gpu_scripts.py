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
import torch
from conftest import write_script

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
    "benchmarks/bench_training.py --profile gpu --device cuda --compile --notes 1000,20000,100000",
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
    stub = write_script(tmp_path / "python", STUB)
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
    run = gpu_run(tmp_path, "all", str(out))
    assert run.returncode == 1, run.stdout + run.stderr  # one step failed
    log = (out / "gpu_run.log").read_text()
    assert "== CUDA paths: FAILED (exit 3)" in log
    steps = ran(log)
    assert f"reproduce --profile gpu --out {cache}/results-gpu" in steps[0]
    assert steps[1:3] == BENCHMARKS
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
    run = gpu_run(tmp_path, "checks", str(out), gpus=1)
    assert "SKIPPED: 1 GPU(s); DDP with NCCL needs two or more" in run.stdout
    assert not any("torch.distributed.run" in line for line in ran(run.stdout))
    assert stale.exists()  # only the reproduce part empties its cache
    run = gpu_run(tmp_path, "reproduce", str(out), gpus=1)
    assert not stale.exists()
    assert not any("--parallel" in line for line in ran(run.stdout))
    trained = tmp_path / "cache" / "gpu" / "models" / "proposed-seed0-trained"
    trained.mkdir(parents=True)  # what the reproduce part trained: the side-by-side run
    run = gpu_run(tmp_path, "parallel", str(out), gpus=1)  # a later call on the same machine
    assert run.returncode == 0, run.stdout
    assert not trained.exists()  # trains every model again, not loads them
    assert (tmp_path / "cache" / "gpu" / "features" / "f.npz").exists()  # but keeps the data
    assert ran(run.stdout) == [
        f"-m pitchtimbre reproduce --profile gpu --parallel 6 --out {tmp_path}/cache/results-gpu-parallel"
    ]


def test_gpu_run_side_by_side_on_a_fresh_machine_builds_the_data_first(tmp_path):
    run = gpu_run(tmp_path, "parallel", str(tmp_path / "out"))
    assert run.returncode == 0, run.stdout + run.stderr
    assert "no features in" in run.stdout and "building the data first" in run.stdout
    assert ran(run.stdout) == [
        "-m pitchtimbre data --profile gpu",
        f"-m pitchtimbre reproduce --profile gpu --parallel 6 --out {tmp_path}/cache/results-gpu-parallel",
    ]


@pytest.mark.parametrize(
    ("args", "says"),
    [
        ((), "usage: gpu_run.sh PARTS [OUT]"),
        (("benchmarks,everything",), "PARTS must be all or some of reproduce benchmarks checks"),
        (("",), "PARTS names no part"),
        ((",",), "joined by commas, not ''"),
        (("reproduce benchmarks",), "joined by commas, not 'reproduce benchmarks'"),
        (("benchmarks", "out", "extra"), "usage: gpu_run.sh PARTS [OUT]"),
    ],
)
def test_gpu_run_refuses_what_names_no_parts(tmp_path, args, says):
    bad = gpu_run(tmp_path, *args)
    assert bad.returncode == 64 and ran(bad.stdout) == [] and says in bad.stderr


def test_gpu_run_runs_the_parts_asked_for_in_its_own_order(tmp_path):
    out = tmp_path / "out"
    run = gpu_run(tmp_path, "benchmarks", str(out))
    assert run.returncode == 0, run.stdout + run.stderr
    assert ran(run.stdout) == BENCHMARKS
    run = gpu_run(tmp_path, "extras,benchmarks", str(out))
    assert ran(run.stdout) == BENCHMARKS + EXTRAS


def test_gpu_run_stops_before_any_step_without_cuda_or_packages(tmp_path):
    out = tmp_path / "out"
    run = gpu_run(tmp_path, "all", str(out), PREFLIGHT="1")
    assert run.returncode == 2 and ran(run.stdout) == []
    assert "gpu_run.sh: stopped before any step" in (out / "gpu_run.log").read_text()


def test_gpu_run_writes_to_the_device_tools_out_and_installs_carried_wheels(tmp_path):
    wheels = tmp_path / "wheels"
    wheels.mkdir()
    (wheels / "librosa-0.11.0-py3-none-any.whl").touch()
    out = tmp_path / "device-out"
    run = gpu_run(tmp_path, "benchmarks", OUT=str(out))  # no OUT argument: the tool's $OUT
    log = (out / "gpu_run.log").read_text()
    assert "installing the carried wheels: librosa-0.11.0-py3-none-any.whl" in log
    assert ran(log) == [
        "-m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade "
        f"--target {tmp_path}/cache/site {wheels}/librosa-0.11.0-py3-none-any.whl",
        *BENCHMARKS,
    ]
    assert run.returncode == 0


def test_the_preflight_imports_what_the_parts_need(tmp_path):
    """With this machine's python: the imports pass and no GPU is found; with one module
    pretty_midi imports gone (importlib_resources, which the device image lacks), the
    preflight names it. Both before any step."""

    def preflight(**env: str) -> str:
        out = tmp_path / "out"
        run = subprocess.run(
            ["bash", str(ROOT / "benchmarks/gpu_run.sh"), "benchmarks", str(out)],
            env={
                "PATH": os.environ["PATH"],
                "PYTHON": sys.executable,
                "CUDA_VISIBLE_DEVICES": "",
                "GPU_RUN_CACHE": str(tmp_path / "cache"),
                "GPU_RUN_WHEELS": str(tmp_path / "no-wheels"),
                **env,
            },
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert run.returncode == 2 and "== " not in run.stdout, run.stdout + run.stderr
        return run.stdout

    assert "preflight: torch sees no CUDA device" in preflight()
    gone = tmp_path / "gone"
    gone.mkdir()
    (gone / "importlib_resources.py").write_text(
        "raise ImportError(\"No module named 'importlib_resources'\")\n"
    )
    said = preflight(PYTHONPATH=str(gone))
    assert "preflight: No module named 'importlib_resources'" in said
    assert "gpu_wheels.sh" in said


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


def test_gpu_checks_resume_check_passes_and_notices_a_fresh_start(
    gpu_checks, tmp_path, monkeypatch
):
    cfg = gpu_checks.profile_config("ci").with_overrides(
        {"train.device": "cpu", "train.steps": 60, "train.log_every": 5}
    )
    ds = gpu_checks.synthetic_dataset(cfg, n_notes=300)
    ok, detail = gpu_checks.check_resume(cfg, ds, tmp_path / "resumes")
    assert ok and detail.startswith("resumed at step 40 (40 expected)"), detail
    real_train = gpu_checks.train_model

    def forgetful(cfg, ds, out, resume=True, **kwargs):  # loses the checkpoint before resuming
        if resume:
            (out / "checkpoint.pt").unlink()
        return real_train(cfg, ds, out, resume=resume, **kwargs)

    monkeypatch.setattr(gpu_checks, "train_model", forgetful)
    ok, detail = gpu_checks.check_resume(cfg, ds, tmp_path / "starts-over")
    assert not ok and detail.startswith("resumed at step 0 (40 expected)"), detail

    def reseeding(cfg, ds, out, resume=True, **kwargs):  # resumes with other noise
        if resume:
            state = torch.load(out / "checkpoint.pt", weights_only=True)
            other = torch.Generator().manual_seed(12345).get_state()
            torch.save({**state, "noise_rng": [other]}, out / "checkpoint.pt")
        return real_train(cfg, ds, out, resume=resume, **kwargs)

    monkeypatch.setattr(gpu_checks, "train_model", reseeding)
    ok, detail = gpu_checks.check_resume(cfg, ds, tmp_path / "other-noise")
    assert not ok and detail.startswith("resumed at step 40 (40 expected)"), detail
    assert float(detail.split("weights ")[1].split(" ")[0]) > 1e-3  # the losses barely move
    with pytest.raises(ValueError, match=r"needs train.steps > 5, got 3"):
        gpu_checks.check_resume(cfg.with_overrides({"train.steps": 3}), ds, tmp_path / "short")


def test_gpu_checks_skips_the_autocast_check_without_bf16_units(gpu_checks, monkeypatch, tmp_path):
    """A T4 trains in float32 with train.amp on: the check says so instead of passing two
    float32 runs as an autocast check (and trains nothing)."""
    cfg = gpu_checks.profile_config("ci").with_overrides({"train.device": "cuda:0"})
    monkeypatch.setattr(torch.cuda, "get_device_capability", lambda d: (7, 5))
    monkeypatch.setattr(gpu_checks, "run", lambda *a, **k: pytest.fail("trained"))
    ok, detail = gpu_checks.check_autocast(cfg, None, tmp_path)
    assert ok is None and "no bf16 units here (compute capability 7.5)" in detail


def test_gpu_checks_counts_a_skipped_check_as_no_failure(gpu_checks, monkeypatch, capsys):
    """On a GPU without bf16 units (here: the CPU dry run, which has none) the run still
    exits 0: a skip is not a failure."""
    monkeypatch.setattr(sys, "argv", ["gpu_checks.py", "--device", "cpu", "--only", "autocast"])
    monkeypatch.setattr(gpu_checks, "synthetic_dataset", lambda cfg, n_notes: None)
    assert gpu_checks.main() == 0
    assert capsys.readouterr().out.splitlines()[-1].startswith("SKIP  bf16 autocast: no bf16")


@pytest.mark.parametrize("way", ["differs", "crashes"])
def test_gpu_checks_exits_1_when_a_check_fails_and_runs_the_others(
    gpu_checks, monkeypatch, capsys, way
):
    """gpu_run.sh counts a failed step by its exit status."""

    def failing(cfg, ds, folder):
        if way == "crashes":
            raise RuntimeError("CUDA error: an illegal memory access")
        return False, "loss gap 0.3 (limit 1e-4)"

    ran = []
    monkeypatch.setitem(gpu_checks.CHECKS, "streaming", ("streamed = resident", failing))
    monkeypatch.setitem(
        gpu_checks.CHECKS, "resume", ("resumed", lambda *a: ran.append(1) or (True, "gap 0"))
    )
    argv = ["gpu_checks.py", "--device", "cpu", "--only", "streaming", "--only", "resume"]
    monkeypatch.setattr(sys, "argv", argv)
    monkeypatch.setattr(gpu_checks, "synthetic_dataset", lambda cfg, n_notes: None)
    assert gpu_checks.main() == 1
    lines = capsys.readouterr().out.splitlines()
    assert (
        lines[-2].startswith("FAIL  streamed = resident: ") and lines[-1] == "PASS  resumed: gap 0"
    )
    assert ("RuntimeError: CUDA error" in lines[-2]) == (way == "crashes") and ran == [1]
