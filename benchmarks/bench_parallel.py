"""Several models at once (``train.parallel_models``) against one after another.

    python benchmarks/bench_parallel.py             # cpu-profile model, 2 models x 300 steps
    python benchmarks/bench_parallel.py --small     # ci-profile model, 2 models x 60 steps (CI)
    python benchmarks/bench_parallel.py --profile gpu --models 6 --steps 1000   # on a GPU

Both rows train the same models (seeds 0, 1, ...) on synthetic notes of the profile's shape
(as ``bench_training.py`` makes them) through ``trained_model``, each from scratch into a
temporary cache: *one after another* in this process with all its threads, *side by side*
through ``train_in_processes``, one worker per model with an equal share of the threads,
starting the workers included. The last line is the largest difference between the weights
the two ways trained (on a CPU, fewer threads can round differently). Prints a table; makes
no assertions. One round each, so on a shared machine the ratio is noisy.
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time

import torch
from bench_training import synthetic_dataset

from pitchtimbre.cache import CACHE_ENV
from pitchtimbre.checkpoints import load_checkpoint
from pitchtimbre.config import profile_config
from pitchtimbre.machine import describe_machine, machine_lines
from pitchtimbre.parallel import train_in_processes
from pitchtimbre.training import trained_model


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--small", action="store_true", help="ci model, 60 steps (CI)")
    ap.add_argument("--profile", choices=("ci", "cpu", "gpu"), help="model and batch size")
    ap.add_argument("--models", type=int, default=2, help="models to train (default 2)")
    ap.add_argument("--steps", type=int, help="steps per model (default 300, or 60 small)")
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    args = ap.parse_args()
    profile = args.profile or ("ci" if args.small else "cpu")
    steps = args.steps or (60 if args.small else 300)
    cfg = profile_config(profile).with_overrides(
        {"train.steps": steps, "train.checkpoint_every": steps, "train.device": args.device}
    )
    dataset = synthetic_dataset(cfg)
    jobs = [(cfg.with_overrides({"train.seed": seed}), None) for seed in range(args.models)]

    print("\n".join(machine_lines(describe_machine(torch.device(args.device)))))
    print(f"profile {profile}: hidden {cfg.model.hidden}, batch {cfg.pairs.batch_size} pairs")
    print(f"{args.models} models x {steps} steps on {len(dataset)} synthetic notes\n")
    with tempfile.TemporaryDirectory() as cache:
        os.environ[CACHE_ENV] = cache
        start = time.perf_counter()
        alone = [trained_model(c, dataset, progress=False, retrain=True) for c, _ in jobs]
        one_by_one = time.perf_counter() - start
        weights = [{k: v.cpu() for k, v in r.model.state_dict().items()} for r in alone]
        start = time.perf_counter()
        paths = train_in_processes(jobs, dataset, args.models, retrain=True, progress=False)
        side_by_side = time.perf_counter() - start
        gap = max(
            float((w[k] - v).abs().max())
            for w, p in zip(weights, paths, strict=True)
            for k, v in load_checkpoint(p).model.state_dict().items()  # read onto the CPU
        )

    threads = torch.get_num_threads()
    print(f"  {'way':54s} {'seconds':>8s} {'speed':>7s}")
    print(f"  {f'one after another, {threads} threads':54s} {one_by_one:8.1f} {1.0:6.2f}x")
    label = f"side by side, {args.models} processes x {max(1, threads // args.models)} threads"
    print(f"  {label:54s} {side_by_side:8.1f} {one_by_one / side_by_side:6.2f}x")
    same = "bit for bit" if gap == 0 else "rounding: fewer threads per process"
    print(f"\n  largest weight difference between the two ways: {gap:.2g} ({same})")


if __name__ == "__main__":
    main()
