"""Checking that a rendered note sounds at the pitch that was asked for (pyin).

Some General MIDI presets sound an octave away from the key (organ footages), some are
detuned or unpitched; such notes would teach the pitch latent wrong labels.

Chapter: 02_data
"""

from __future__ import annotations

import numpy as np

PYIN_SPAN_SEMITONES = 13
"""pyin searches this far either side of the requested pitch, so octave errors are caught."""
PYIN_RESOLUTION = 0.25
"""Pitch-bin width in semitones: 25-cent bins, enough for a 50-cent check and fast."""
PYIN_SECONDS = 0.4
"""Audio analysed per note, from the onset."""


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
    frame = 2048 if sample_rate <= 24000 else 4096
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
