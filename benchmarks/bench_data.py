"""Rendering and feature time per note, on this machine.

    python benchmarks/bench_data.py            # 16 programs x 25 pitches x 3 velocities
    python benchmarks/bench_data.py --small    # the size CI runs

Prints a table; makes no assertions (figures depend on the machine).
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import joblib
import numpy as np

from pitchtimbre.config import FeatureConfig, RenderConfig
from pitchtimbre.data.features import compute_features, load_audio, samples_to_load
from pitchtimbre.data.nsynth import read_examples
from pitchtimbre.data.pitch_check import (
    MAX_PROCESSES,
    MIN_NOTES_FOR_PROCESSES,
    pitch_errors_by_pitch,
)
from pitchtimbre.data.soundfont import available_renderers, default_soundfont, make_renderer
from pitchtimbre.machine import describe_machine, machine_lines


def timed(fn, *args):
    t0 = time.perf_counter()
    out = fn(*args)
    return out, time.perf_counter() - t0


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--small", action="store_true", help="a few programs only (CI)")
    args = ap.parse_args()
    programs = (0, 24, 40, 73) if args.small else tuple(range(0, 112, 7))
    pitches = tuple(range(48, 73, 4 if args.small else 1))
    velocities = (90,) if args.small else (60, 90, 120)
    grid = [(p, v) for p in pitches for v in velocities]
    n = len(programs) * len(grid)
    print("\n".join(machine_lines(describe_machine())))
    print(
        f"notes: {n} ({len(programs)} programs x {len(pitches)} pitches x {len(velocities)} velocities)\n"
    )
    print(f"{'step':38s} {'ms/note':>9s} {'notes/s':>9s}")
    rows = []
    audio = None
    for name in available_renderers():
        r = make_renderer(default_soundfont(), 16000, name)
        notes, dt = timed(
            lambda r=r: [a for p in programs for a in r.render_program(0, p, grid, 0.75, 0.25)]
        )
        rows.append((f"render ({name})", dt))
        audio = audio if audio is not None else np.stack(notes)
    heads = audio[:, :6400]
    by_pitch = {
        p: [i for i, (pp, _) in enumerate(grid * len(programs)) if pp == p] for p in pitches
    }
    groups = {p: heads[idx] for p, idx in by_pitch.items()}
    _, dt = timed(pitch_errors_by_pitch, groups, 16000, 1)
    rows.append(("pitch check (pyin, one process)", dt))
    workers = min(joblib.cpu_count(), MAX_PROCESSES, len(groups))  # as a render chooses
    for when in ("starting", "warm"):  # joblib keeps its workers for the next call
        _, dt = timed(
            lambda: pitch_errors_by_pitch(groups, 16000, workers, min_notes_for_processes=1)
        )
        rows.append((f"pitch check (pyin, {workers} procs, {when})*", dt))
    cfg = FeatureConfig()
    x = audio[:, : samples_to_load(cfg)]
    x = np.pad(x, ((0, 0), (0, samples_to_load(cfg) - x.shape[1])))
    _, dt = timed(compute_features, x, cfg)
    rows.append(("log-CQT (librosa, batched)", dt))
    _, dt = timed(lambda: [compute_features(x[i : i + 1], cfg) for i in range(min(len(x), 64))])
    rows.append(("log-CQT (librosa, one note a call)", dt * len(x) / min(len(x), 64)))
    _, dt = timed(compute_features, x, FeatureConfig(kind="mel"))
    rows.append(("log-mel (librosa, batched)", dt))
    with tempfile.TemporaryDirectory() as tmp:
        from pitchtimbre.data.render import render_soundfont

        cfg_r = RenderConfig(
            programs=programs[:2],
            pitch_range=(pitches[0], pitches[-1]),
            pitch_step=4,
            velocities=(90,),
        )
        summary, dt = timed(render_soundfont, cfg_r, Path(tmp), False)
        rows.append(("render_soundfont end to end (+wav, pyin)", dt * n / summary.requested))
        recs = read_examples(tmp)
        _, dt = timed(lambda: [load_audio(r, 16000, samples_to_load(cfg)) for r in recs])
        rows.append(("read wav", dt * n / len(recs)))
    for name, dt in rows:
        print(f"{name:38s} {1000 * dt / n:9.2f} {n / dt:9.0f}")
    print(
        "* 'starting' includes starting the worker processes, 'warm' reuses them; a render "
        f"uses them from {MIN_NOTES_FOR_PROCESSES} notes"
    )


if __name__ == "__main__":
    main()
