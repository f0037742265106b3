"""Feature time per note: librosa (one note a call, and batched) against the PyTorch front end.

    python benchmarks/bench_features.py            # 512 one-second notes
    python benchmarks/bench_features.py --small    # 32 notes: the size CI runs

Every method computes ``log_spectrogram``'s features (all frames) of the same random harmonic
tones, for the log-CQT and the log-mel, side by side in one run; the torch front end runs on
the CPU, and on the GPU too when CUDA is available (timed end to end: numpy in, numpy out).
"speed" is notes per second relative to the librosa loop; "agree" is the largest log
difference from that loop where librosa's magnitude exceeds 10 * log_floor; the last column
is the time for NSynth's 289,205 notes at this length. Prints a table; makes no assertions
(figures depend on the machine).
"""

from __future__ import annotations

import argparse
import time
import warnings
from collections.abc import Callable

import numpy as np
import torch

from pitchtimbre.config import FeatureConfig
from pitchtimbre.data.features import log_spectrogram
from pitchtimbre.data.frontend import log_spectrogram_torch
from pitchtimbre.machine import describe_machine, machine_lines

NSYNTH_NOTES = 289_205


def harmonic_tones(n: int, seconds: float, sr: int = 16000, seed: int = 0) -> np.ndarray:
    """[n, samples] float32: decaying harmonic tones at random pitches (MIDI 36-84),
    brightness and decay rate."""
    rng = np.random.default_rng(seed)
    t = np.arange(round(seconds * sr)) / sr
    out = np.empty((n, len(t)), dtype=np.float32)
    for i in range(n):
        f0 = 440.0 * 2 ** ((rng.integers(36, 85) - 69) / 12)
        brightness, decay = rng.uniform(0.3, 0.9), rng.uniform(0.5, 4.0)
        k = np.arange(1, int(0.45 * sr / f0) + 1)[:, None]
        x = (brightness ** (k - 1) * np.sin(2 * np.pi * k * f0 * t)).sum(axis=0)
        x *= np.minimum(1.0, t / 0.01) * np.exp(-decay * t)
        out[i] = 0.3 * x / np.abs(x).max()
    return out


def timed(fn: Callable[[], np.ndarray], repeat: int) -> tuple[np.ndarray, float]:
    """The result of ``fn`` and its fastest time over ``repeat`` runs (the others are
    disturbed by whatever else the machine is doing)."""
    best = float("inf")
    for _ in range(repeat):
        t0 = time.perf_counter()
        out = fn()
        best = min(best, time.perf_counter() - t0)
    return out, best


def agreement(ref: np.ndarray, ours: np.ndarray, log_floor: float) -> float:
    loud = np.exp(ref) - log_floor > 10 * log_floor
    return float(np.abs(ref - ours)[loud].max())


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--small", action="store_true", help="32 notes (CI)")
    ap.add_argument("--notes", type=int, default=None, help="number of notes (default 512)")
    ap.add_argument("--seconds", type=float, default=1.0, help="note length (default 1 s)")
    ap.add_argument("--repeat", type=int, default=3, help="keep the fastest of this many runs")
    args = ap.parse_args()
    n = args.notes or (32 if args.small else 512)
    warnings.filterwarnings("ignore", message="n_fft=.* is too large")  # librosa, low octaves

    print("\n".join(machine_lines(describe_machine())))
    devices = ["cpu", "cuda"] if torch.cuda.is_available() else ["cpu"]
    if len(devices) == 1:
        print("gpu: none (CUDA not available)")
    print(
        f"notes: {n} random harmonic tones of {args.seconds:g} s at 16 kHz; "
        f"fastest of {args.repeat} runs\n"
    )

    audio = harmonic_tones(n, args.seconds)
    print(
        f"{'features':9s} {'method':26s} {'ms/note':>9s} {'notes/s':>9s} {'speed':>8s} "
        f"{'agree':>8s} {'289,205 notes':>14s}"
    )
    for kind in ("cqt", "mel"):
        cfg = FeatureConfig(kind=kind)
        methods: dict[str, Callable[[np.ndarray], np.ndarray]] = {
            "librosa, one note a call": lambda x, cfg=cfg: np.stack(
                [log_spectrogram(note, cfg) for note in x]
            ),
            "librosa, all notes a call": lambda x, cfg=cfg: log_spectrogram(x, cfg),
        }
        for device in devices:
            methods[f"torch on {device}, 256 a batch"] = lambda x, cfg=cfg, device=device: (
                log_spectrogram_torch(x, cfg, device=device, batch=256)
            )
        results = {}
        for name, fn in methods.items():
            fn(audio[:2])  # warm up: librosa's caches and numba, torch's first calls
            results[name] = timed(lambda fn=fn: fn(audio), args.repeat)
        reference, loop_seconds = results["librosa, one note a call"]
        for name, (features, seconds) in results.items():
            per_note = seconds / n
            print(
                f"{kind:9s} {name:26s} {1000 * per_note:9.2f} {n / seconds:9.0f} "
                f"{loop_seconds / seconds:7.1f}x "
                f"{agreement(reference, features, cfg.log_floor):8.1e} "
                f"{NSYNTH_NOTES * per_note / 60:10.1f} min"
            )


if __name__ == "__main__":
    main()
