"""Correctness of the CUDA-only training paths, on a real GPU (the unit tests cover their
logic on the CPU, where none of them can run for real).

    python benchmarks/gpu_checks.py                 # on CUDA: every check, exit 1 if one fails
    python benchmarks/gpu_checks.py --device cpu    # a dry run of the same comparisons

Each check trains the `ci` profile's model for a few dozen steps on synthetic notes (as
``bench_training.py`` makes them) twice, changing one thing, and compares the two runs
(the resume check trains a third time). They
run in float32 (``train.amp`` off) unless the check is about autocast:

1. **Streaming = resident.** ``train.features_on='host'`` (each batch gathered into pinned
   memory and copied asynchronously) against ``'device'`` (features resident on the GPU).
   The pairs are drawn on the device in both, so the runs see the same batches and their
   losses must agree to float32 rounding (cuDNN picks its own kernels: 1e-4 relative).
2. **bf16 autocast.** ``train.amp`` on against off: the weights and the checkpoint stay
   float32, the loss falls, and every logged loss is within 5 % of the float32 run. Skipped,
   saying so, on a GPU without bf16 units (compute capability below 8.0), which trains in
   float32 either way.
3. **torch.compile.** ``train.compile`` (inductor, the default backend) against eager:
   losses within 1e-3 relative.
4. **Resume.** A run stopped after its second checkpoint (step 40 of 60) and resumed
   (the generators' states come back from the file) against one run straight through: it
   resumes at that checkpoint, the logged losses of the resumed steps agree within 1e-4
   relative and the final weights within 1e-3 of each tensor's largest (cuDNN's backward
   kernels need not repeat a sum bit for bit). Three runs.

On the CPU the streamed path gathers without pinning and autocast is off, so the dry run
shows little more than that the script runs; the resume check is a real one there too. Prints one PASS, FAIL or SKIP line per check.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import torch
from bench_training import synthetic_dataset

from pitchtimbre.checkpoints import TrainResult, load_checkpoint
from pitchtimbre.config import ExperimentConfig, profile_config
from pitchtimbre.data import NoteDataset
from pitchtimbre.machine import describe_machine, machine_lines
from pitchtimbre.training import train_model, uses_autocast

STEPS = 60


def run(cfg: ExperimentConfig, ds: NoteDataset, out: Path, **overrides: object) -> TrainResult:
    """One short training run with ``overrides`` (dotted config keys) applied."""
    return train_model(cfg.with_overrides(overrides), ds, out, resume=False, progress=False)


def totals(result: TrainResult) -> list[float]:
    """The logged total losses of a run."""
    return [row["total"] for row in result.history]


def max_relative_gap(a: list[float], b: list[float]) -> float:
    """The largest |a_i - b_i| / |a_i|; infinite when the runs logged different numbers of
    steps."""
    if len(a) != len(b):
        return float("inf")
    return max(abs(x - y) / max(abs(x), 1e-12) for x, y in zip(a, b, strict=True))


def check_streaming(cfg: ExperimentConfig, ds: NoteDataset, tmp: Path) -> tuple[bool, str]:
    resident = run(cfg, ds, tmp / "resident", **{"train.features_on": "device"})
    streamed = run(cfg, ds, tmp / "streamed", **{"train.features_on": "host"})
    gap = max_relative_gap(totals(resident), totals(streamed))
    return gap <= 1e-4, f"largest relative loss gap {gap:.2e} (limit 1e-4)"


def check_autocast(cfg: ExperimentConfig, ds: NoteDataset, tmp: Path) -> tuple[bool | None, str]:
    device = torch.device(cfg.train.device)
    if not uses_autocast(cfg.with_overrides({"train.amp": True}).train, device):
        where = device.type
        if device.type == "cuda":
            where = "compute capability {}.{}".format(*torch.cuda.get_device_capability(device))
        return None, f"no bf16 units here ({where}): training runs in float32, nothing to compare"
    plain = run(cfg, ds, tmp / "fp32", **{"train.amp": False})
    mixed = run(cfg, ds, tmp / "bf16", **{"train.amp": True})
    weights = {p.dtype for p in mixed.model.parameters()}
    saved = {t.dtype for t in load_checkpoint(mixed.checkpoint).model.state_dict().values()}
    gap = max_relative_gap(totals(plain), totals(mixed))
    falls = totals(mixed)[-1] < totals(mixed)[0]
    ok = weights == {torch.float32} and saved == {torch.float32} and falls and gap <= 0.05
    return ok, (
        f"weights {sorted(map(str, weights))}, checkpoint {sorted(map(str, saved))}, "
        f"loss falls: {falls}, largest relative gap to float32 {gap:.3f} (limit 0.05)"
    )


def check_compile(cfg: ExperimentConfig, ds: NoteDataset, tmp: Path) -> tuple[bool, str]:
    eager = run(cfg, ds, tmp / "eager", **{"train.compile": False})
    start = time.perf_counter()
    compiled = run(cfg, ds, tmp / "compiled", **{"train.compile": True})
    seconds = time.perf_counter() - start
    gap = max_relative_gap(totals(eager), totals(compiled))
    return gap <= 1e-3, f"largest relative loss gap {gap:.2e} (limit 1e-3), {seconds:.0f} s"


class _Stopped(Exception):
    """Raised from a run's logging hook: the process dies as if killed."""


def check_resume(cfg: ExperimentConfig, ds: NoteDataset, tmp: Path) -> tuple[bool, str]:
    # a checkpoint every third of the run; a stop at the first logged step after the second
    every = max(1, cfg.train.steps // 3)
    saved = 2 * every
    stop = (saved // cfg.train.log_every + 1) * cfg.train.log_every
    if stop >= cfg.train.steps:
        raise ValueError(f"check_resume: needs train.steps > {stop}, got {cfg.train.steps}")
    cfg = cfg.with_overrides({"train.checkpoint_every": every})
    whole = run(cfg, ds, tmp / "whole")

    def stop_there(step: int) -> None:
        if step == stop:
            raise _Stopped

    try:
        train_model(cfg, ds, tmp / "split", resume=False, progress=False, on_log=stop_there)
    except _Stopped:
        pass
    starts: list[int] = []  # the hook hears the step where training starts first

    def note_start(step: int) -> None:
        starts.append(step)

    resumed = train_model(cfg, ds, tmp / "split", resume=True, progress=False, on_log=note_start)
    after = [row["total"] for row in whole.history if row["step"] > saved]
    gap = max_relative_gap(after, totals(resumed)[-len(after) :])
    # the weights show a lost generator state far more than the losses: other noise after
    # step 40 moved them by 17 % of a tensor's largest weight, the losses by 4e-5
    drift = max(
        float((a - b).abs().max() / a.abs().max().clamp_min(1e-12))
        for a, b in zip(
            whole.model.state_dict().values(), resumed.model.state_dict().values(), strict=True
        )
    )
    start = starts[0] if starts else None
    return start == saved and gap <= 1e-4 and drift <= 1e-3, (
        f"resumed at step {start} ({saved} expected), largest relative loss gap {gap:.2e} "
        f"(limit 1e-4), weights {drift:.2e} apart (limit 1e-3)"
    )


Check = Callable[[ExperimentConfig, NoteDataset, Path], tuple[bool | None, str]]
CHECKS: dict[str, tuple[str, Check]] = {
    "streaming": ("streamed = resident features", check_streaming),
    "autocast": ("bf16 autocast", check_autocast),
    "compile": ("torch.compile = eager", check_compile),
    "resume": ("stopped and resumed = straight through", check_resume),
}
"""Each check's name for ``--only``, its label in the output, and the check."""


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--device", default="cuda")
    ap.add_argument("--only", choices=sorted(CHECKS), action="append", help="run only these")
    args = ap.parse_args()
    device = torch.device(args.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        print("gpu_checks: no CUDA device here; use --device cpu for a dry run", file=sys.stderr)
        return 2
    print("\n".join(machine_lines(describe_machine(device))))
    cfg = profile_config("ci").with_overrides(
        {
            "train.device": str(device),
            "train.steps": STEPS,
            "train.log_every": 5,
            "train.amp": False,
        }
    )
    ds = synthetic_dataset(cfg, n_notes=2000)
    failed = 0
    with tempfile.TemporaryDirectory() as tmp:
        for name, (label, check) in CHECKS.items():
            if args.only and name not in args.only:
                continue
            try:
                ok, detail = check(cfg, ds, Path(tmp) / name)
            except Exception as exc:  # a check that crashes is a failed check; go on
                ok, detail = False, f"{type(exc).__name__}: {exc}"
            failed += ok is False
            print(
                f"{({True: 'PASS', False: 'FAIL', None: 'SKIP'})[ok]}  {label}: {detail}",
                flush=True,
            )
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
