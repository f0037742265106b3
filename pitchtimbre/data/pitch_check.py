"""Checking that a rendered note sounds at the pitch that was asked for (pyin).

Some General MIDI presets sound an octave away from the key (organ footages), some are
detuned or unpitched; such notes would teach the pitch latent wrong labels.

Chapter: 02_data
"""

from __future__ import annotations

import math
from collections.abc import Mapping

import numpy as np

from ..errors import DataError

PYIN_SPAN_SEMITONES = 13
"""pyin searches this far either side of the requested pitch, so octave errors are caught."""
PYIN_RESOLUTION = 0.25
"""Pitch-bin width in semitones: 25-cent bins, enough for a 50-cent check and fast."""
PYIN_SECONDS = 0.4
"""Audio analysed per note, from the onset."""
MAX_PROCESSES = 8
"""At most this many worker processes: each imports the package (torch included), a few
hundred MB, and eight already check the cpu profile's notes in a few seconds."""
MIN_NOTES_FOR_PROCESSES = 2000
"""Fewer notes than this are checked in the calling process. Starting the workers costs
about 3.5 s on two cores (each imports the package) and pyin about 5 ms a note on one core,
so on two cores the workers pay for themselves from about 1,500 notes
(``benchmarks/bench_data.py``)."""


def _frame_length(sample_rate: int) -> int:
    return 2048 if sample_rate <= 24000 else 4096


def lowest_checkable_pitch(sample_rate: int) -> int:
    """The lowest MIDI pitch the check can search around: two periods of the search's lowest
    frequency must fit pyin's frame, so that frequency must exceed sample_rate / (frame / 2)
    (with less, librosa warns at every note and the estimate is less reliable; with less
    than one period, pyin refuses).

    Chapter: 02_data
    """
    floor_hz = sample_rate / (_frame_length(sample_rate) // 2)
    low = 69 + 12 * math.log2(floor_hz / 440.0) + PYIN_SPAN_SEMITONES
    return math.floor(low) + 1


def estimate_midi(audio: np.ndarray, expected_midi: int, sample_rate: int) -> np.ndarray:
    """Median pyin pitch (fractional MIDI) of each row of ``audio`` [N, samples], searched
    within +/- 13 semitones of ``expected_midi``; NaN where no frame is voiced.

    Chapter: 02_data
    """
    import librosa

    audio = np.atleast_2d(np.asarray(audio, dtype=np.float32))
    n = min(audio.shape[1], round(PYIN_SECONDS * sample_rate))
    fmin = librosa.midi_to_hz(expected_midi - PYIN_SPAN_SEMITONES)
    fmax = min(librosa.midi_to_hz(expected_midi + PYIN_SPAN_SEMITONES), sample_rate / 2 * 0.9)
    frame = _frame_length(sample_rate)
    f0, voiced, _ = librosa.pyin(
        audio[:, :n],
        fmin=float(fmin),
        fmax=float(fmax),
        sr=sample_rate,
        frame_length=frame,
        hop_length=frame // 8,
        resolution=PYIN_RESOLUTION,
        center=False,
    )
    out = np.full(audio.shape[0], np.nan)
    for i in range(audio.shape[0]):
        if voiced[i].any():
            out[i] = float(np.median(librosa.hz_to_midi(f0[i][voiced[i]])))
    return out


def pitch_error_cents(audio: np.ndarray, expected_midi: int, sample_rate: int) -> np.ndarray:
    """Absolute deviation in cents of each note's estimated pitch (inf when unvoiced).

    Chapter: 02_data
    """
    est = estimate_midi(audio, expected_midi, sample_rate)
    err = np.abs(est - expected_midi) * 100.0
    return np.where(np.isnan(err), np.inf, err)


def pitch_errors_by_pitch(
    heads: Mapping[int, np.ndarray],
    sample_rate: int,
    workers: int | None = None,
    progress: bool = False,
    min_notes_for_processes: int = MIN_NOTES_FOR_PROCESSES,
) -> dict[int, np.ndarray]:
    """``pitch_error_cents`` of each group of note heads [N, samples], keyed by the pitch the
    group was asked to sound.

    pyin is the slowest step of a SoundFont render (about 45 s for the cpu profile's 7,245
    notes on one core), and each pitch is independent, so the groups are shared among
    ``workers`` processes (default: joblib's count of usable CPUs, which honours affinity
    and container limits, at most ``MAX_PROCESSES``) when there are at least
    ``min_notes_for_processes`` notes. The processes are joblib's (loky): unlike
    ``multiprocessing``'s spawn they do not run the caller's script again, so a script
    without an ``if __name__ == "__main__":`` guard is safe. The first group is checked in
    the calling process before the workers start, so that numba compiles librosa's code
    once. The result does not depend on ``workers``.

    Chapter: 02_data
    """
    from joblib import Parallel, cpu_count, delayed
    from joblib.externals.loky.process_executor import TerminatedWorkerError
    from tqdm.auto import tqdm

    if workers is not None and (
        isinstance(workers, bool) or not isinstance(workers, int) or workers < 1
    ):
        raise ValueError(f"workers: must be None or an int >= 1, got {workers!r}")
    pitches = sorted(heads)
    n_notes = sum(len(heads[p]) for p in pitches)
    wanted = min(cpu_count(), MAX_PROCESSES) if workers is None else workers
    n_workers = max(1, min(wanted, len(pitches)))
    if n_notes < min_notes_for_processes:
        n_workers = 1
    out: dict[int, np.ndarray] = {}
    with tqdm(
        total=len(pitches), desc="pitch check (pyin)", unit="pitch", disable=not progress
    ) as bar:
        if n_workers > 1:
            # The first group is checked here, before any worker starts: numba compiles
            # librosa's pyin code (and writes its on-disk cache) once, in one process. Workers
            # compiling it side by side can write a damaged cache whose next use segfaults
            # (numba issue #10128, seen with 8 workers on a fresh 16-core machine).
            first = pitches[0]
            out[first] = pitch_error_cents(heads[first], first, sample_rate)
            bar.update()
            pitches = pitches[1:]
            n_workers = min(n_workers, len(pitches))
            if n_workers > 1:
                bar.set_postfix_str(f"{n_workers} processes")
        try:
            errors = Parallel(n_jobs=n_workers, return_as="generator")(
                delayed(pitch_error_cents)(heads[p], p, sample_rate) for p in pitches
            )
            for p, err in zip(pitches, errors, strict=True):
                out[p] = err
                bar.update()
        except TerminatedWorkerError as exc:
            raise DataError(
                f"pitch check: a worker process crashed ({exc.__class__.__name__}). If it "
                "segfaulted, numba's on-disk cache of librosa's code may be damaged (numba "
                "issue #10128): delete the *.nbi and *.nbc files under librosa's __pycache__ "
                "folders (or point NUMBA_CACHE_DIR at an empty folder) and run again"
            ) from exc
    return out
