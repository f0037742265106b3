"""The pitch check's worker processes against numba's on-disk cache (numba issue #10128).

    python benchmarks/stress_pitch_check.py                       # both ways, 6 trials each
    python benchmarks/stress_pitch_check.py --way together --trials 3 --workers 8

librosa's pyin is compiled by numba, which caches the machine code on disk. Workers that
compile it side by side can write a damaged cache, and the next process to load it
segfaults. Each trial gives a fresh, empty ``NUMBA_CACHE_DIR`` to two runs in turn, each a
new Python process checking synthetic notes of 24 pitches with ``--workers`` processes:
the first run compiles and writes the cache, the second loads it. Two ways:

- *together*: every pitch group goes to the workers at once (the code before the fix);
- *first here* (`pitch_errors_by_pitch`): the first group is checked in the calling
  process, so numba compiles once, before any worker starts.

Prints each run and a count of failed runs per way; makes no assertions, and a race does
not fail every time (slow: 1 to 2 minutes a trial on two cores). Not part of CI.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time

from pitchtimbre.machine import describe_machine, machine_lines

RUN = r"""
import sys
import numpy as np
from joblib import Parallel, delayed
from pitchtimbre.data.pitch_check import pitch_error_cents, pitch_errors_by_pitch

way, workers, sr = sys.argv[1], int(sys.argv[2]), 16000
t = np.arange(sr // 2) / sr
heads = {
    p: np.stack(
        [np.sin(2 * np.pi * 440 * 2 ** ((p - 69) / 12) * (1 + 1e-3 * i) * t) for i in range(4)]
    ).astype(np.float32)
    for p in range(48, 72)
}
if way == "together":
    Parallel(n_jobs=workers)(delayed(pitch_error_cents)(heads[p], p, sr) for p in sorted(heads))
else:
    pitch_errors_by_pitch(heads, sr, workers=workers, min_notes_for_processes=0)
print("checked")
"""


def trial(way: str, workers: int) -> list[tuple[bool, float, str]]:
    """Two runs against one fresh numba cache: (ok, seconds, last stderr line) each."""
    runs = []
    with tempfile.TemporaryDirectory() as cache:
        env = {**os.environ, "NUMBA_CACHE_DIR": cache}
        for _ in range(2):
            start = time.perf_counter()
            done = subprocess.run(
                [sys.executable, "-c", RUN, way, str(workers)],
                env=env,
                capture_output=True,
                text=True,
            )
            ok = done.returncode == 0 and "checked" in done.stdout
            last = (done.stderr.strip().splitlines() or [""])[-1]
            runs.append((ok, time.perf_counter() - start, "" if ok else last))
    return runs


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--way", choices=("together", "first-here", "both"), default="both")
    ap.add_argument("--trials", type=int, default=6, help="trials per way (default 6)")
    ap.add_argument("--workers", type=int, default=8, help="worker processes (default 8)")
    args = ap.parse_args()
    print("\n".join(machine_lines(describe_machine())))
    ways = ("together", "first-here") if args.way == "both" else (args.way,)
    failed = {}
    for way in ways:
        failed[way] = 0
        for n in range(args.trials):
            for run, (ok, seconds, why) in enumerate(trial(way, args.workers), 1):
                failed[way] += not ok
                note = "ok" if ok else f"FAILED: {why}"
                print(
                    f"{way:10} trial {n} run {run} ({'compiles' if run == 1 else 'loads'}): "
                    f"{seconds:5.1f} s {note}",
                    flush=True,
                )
    for way, count in failed.items():
        print(f"{way}: {count} of {2 * args.trials} runs failed ({args.workers} workers)")


if __name__ == "__main__":
    main()
