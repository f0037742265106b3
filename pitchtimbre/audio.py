"""From (normalised log) features back to sound: for listening to reconstructions and swaps.

The model works on log-magnitude CQT frames; to hear them we undo the normalisation and
the log, and estimate a phase with Griffin-Lim for the CQT (``librosa.griffinlim_cqt``).
The result is rough (no phase was ever modelled) but pitch and timbre are clearly audible.

Chapter: 08_latent_explorer
"""

from __future__ import annotations

import inspect
import warnings
from collections.abc import Callable
from typing import Any

import numpy as np
import torch

from .config import FeatureConfig


def features_to_magnitude(
    features: np.ndarray | torch.Tensor, mean: float, std: float, cfg: FeatureConfig
) -> np.ndarray:
    """Normalised log features [F, T] -> linear magnitude [F, T] (never negative).

    Chapter: 08_latent_explorer
    """
    x = (
        features.detach().cpu().numpy()
        if isinstance(features, torch.Tensor)
        else np.asarray(features)
    )
    return np.maximum(np.exp(x.astype(np.float64) * std + mean) - cfg.log_floor, 0.0)


def seed_argument(griffin_lim: Callable[..., Any], rng: np.random.Generator) -> dict[str, Any]:
    """The keyword that seeds one of librosa's Griffin-Lim functions: ``rng`` from librosa 1.0
    on (where ``random_state`` warns, and goes in 1.2), ``random_state`` before.

    Chapter: 08_latent_explorer
    """
    takes_rng = "rng" in inspect.signature(griffin_lim).parameters
    return {"rng" if takes_rng else "random_state": rng}


def features_to_audio(
    features: np.ndarray | torch.Tensor,
    mean: float,
    std: float,
    cfg: FeatureConfig,
    n_iter: int = 32,
    seed: int = 0,
) -> np.ndarray:
    """A waveform whose CQT (or mel) magnitude approximates ``features`` [F, T], normalised
    to a peak of 0.5; for a stack [..., F, T], one waveform per clip [..., samples], each
    normalised on its own. Deterministic for a given ``seed`` (and stack). A stack is
    inverted in one call, about twice as fast a clip as one call each: librosa builds its
    CQT filters anew in every iteration, once for the whole stack.

    Chapter: 08_latent_explorer
    """
    import librosa

    mag = features_to_magnitude(features, mean, std, cfg)
    rng = np.random.default_rng(seed)
    if cfg.kind == "cqt":
        with warnings.catch_warnings():
            # The CQT halves the signal once per octave; of a clip this short (32 frames)
            # about 124 samples reach the lowest octave, fewer than its FFT length. librosa's
            # STFT pads them at both ends as it pads every signal (centred frames), and
            # warns at every call; the frames are computed all the same.
            warnings.filterwarnings("ignore", message=r"n_fft=\d+ is too large for input signal")
            y = librosa.griffinlim_cqt(
                mag,
                sr=cfg.sample_rate,
                hop_length=cfg.hop_length,
                fmin=float(librosa.midi_to_hz(cfg.fmin_midi)),
                bins_per_octave=cfg.bins_per_octave,
                n_iter=n_iter,
                **seed_argument(librosa.griffinlim_cqt, rng),
            )
    else:
        # librosa's mel_to_audio hands unknown arguments (the seed too) to the mel filter
        # bank, so its two steps are taken here, the seeded Griffin-Lim as for the CQT
        stft = librosa.feature.inverse.mel_to_stft(
            mag, sr=cfg.sample_rate, n_fft=cfg.n_fft, power=1.0
        )
        y = librosa.griffinlim(
            stft,
            n_iter=n_iter,
            hop_length=cfg.hop_length,
            **seed_argument(librosa.griffinlim, rng),
        )
    peak = np.abs(y).max(axis=-1, keepdims=True)
    return (0.5 * y / np.where(peak > 0, peak, 1.0)).astype(np.float32)  # silence stays 0
