"""Log-magnitude CQT (default) or log-mel features of each note, cached on disk.

A note becomes an [F, T] array: F frequency bins and T frames taken from the held part of
the note (``offset_s`` after the onset). The cache is keyed by a hash of the notes (name,
size and modification time of every wav) and the feature settings; it is written
atomically with a checksum inside, so a killed or damaged write is detected and
recomputed, never half-read.

Chapter: 02_data
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import os
from collections.abc import Sequence
from pathlib import Path
from typing import NamedTuple

import numpy as np

from ..cache import atomic_path, cache_dir, stable_hash
from ..config import FeatureConfig
from ..errors import ConfigError, DataError
from .nsynth import NoteRecord

log = logging.getLogger(__name__)

CHUNK = 256
"""Notes per librosa call: librosa's front ends are vectorised over a leading axis."""
FEATURE_CACHE_VERSION = 1


class NoteFeatures(NamedTuple):
    """What :func:`note_features` returns.

    Chapter: 02_data
    """

    features: np.ndarray
    """[N, F, T] float32."""
    peaks: np.ndarray
    """[N] peak amplitude of each note's audio."""
    path: Path
    """The cache file they were read from or written to."""
    sha256: str
    """Checksum of ``features`` and ``peaks``: it names what they hold, whichever file or
    machine they came from (a trained model's key uses it, see ``load_dataset``)."""


def samples_to_load(cfg: FeatureConfig) -> int:
    """Samples read per note: the frames needed plus half a second for the long low CQT
    filters (the rest of a 4-second NSynth note is never read).

    Chapter: 02_data
    """
    return math.ceil((cfg.seconds_needed + 0.5) * cfg.sample_rate)


def _unreadable_wav(path: Path, why: str) -> str:
    """What to say, and to do, about a wav the reader refused: its permissions, a render in
    the package cache (delete it: the next run renders it anew), or the user's own file."""
    if not os.access(path, os.R_OK):
        return f"{path}: you may not read it; check its permissions"
    try:
        notes = cache_dir().resolve() / "notes"
    except ConfigError:  # no usable cache: the file cannot be in it
        notes = None
    where = Path(path).resolve()
    if notes is not None and notes in where.parents:
        rendered = notes / where.relative_to(notes).parts[0]
        return (
            f"{path}: not a readable wav ({why}), in the package cache's notes; delete "
            f"{rendered} and run again to render it anew"
        )
    return f"{path}: not a readable wav ({why}); re-render or re-extract it"


def load_audio(
    rec: NoteRecord, sample_rate: int, n_samples: int | None = None, pad: bool = True
) -> np.ndarray:
    """A note as mono float32 at ``sample_rate`` (resampled when the wav has another rate),
    trimmed to ``n_samples`` and, with ``pad``, zero-padded to it. A corrupt wav raises
    :class:`DataError` naming it.

    Chapter: 02_data
    """
    import soundfile

    try:
        info = soundfile.info(str(rec.audio_path))
        frames = None
        if n_samples is not None:
            frames = math.ceil(n_samples * info.samplerate / sample_rate) + 16
        audio, sr = soundfile.read(
            str(rec.audio_path), frames=frames or -1, dtype="float32", always_2d=True
        )
    except FileNotFoundError:
        raise DataError(
            f"{rec.audio_path}: wav missing; restore it or drop {rec.note_str} from examples.json"
        ) from None
    except (RuntimeError, soundfile.LibsndfileError) as exc:
        raise DataError(_unreadable_wav(rec.audio_path, str(exc).splitlines()[0])) from None
    mono = audio.mean(axis=1)
    if not np.isfinite(mono).all():
        raise DataError(
            f"{rec.audio_path}: holds NaN or infinite samples; re-render or re-extract it"
        )
    if sr != sample_rate:
        import librosa

        mono = librosa.resample(mono, orig_sr=sr, target_sr=sample_rate, res_type="soxr_hq")
    if n_samples is not None:
        mono = mono[:n_samples]
        if pad and len(mono) < n_samples:
            mono = np.pad(mono, (0, n_samples - len(mono)))
    return mono.astype(np.float32)


def log_spectrogram(audio: np.ndarray, cfg: FeatureConfig) -> np.ndarray:
    """Log-magnitude CQT or mel of ``audio`` [..., samples] -> [..., F, frames] (all frames),
    with librosa or, for ``cfg.backend == 'torch'``, the batched torch front end (on CUDA
    when available).

    Chapter: 02_data
    """
    import librosa

    if cfg.backend == "torch":
        import torch

        from .frontend import log_spectrogram_torch

        device = "cuda" if torch.cuda.is_available() else "cpu"
        return log_spectrogram_torch(audio, cfg, device=device)

    if cfg.kind == "cqt":
        mag = np.abs(
            librosa.cqt(
                audio,
                sr=cfg.sample_rate,
                hop_length=cfg.hop_length,
                fmin=float(librosa.midi_to_hz(cfg.fmin_midi)),
                n_bins=cfg.n_bins,
                bins_per_octave=cfg.bins_per_octave,
            )
        )
    else:
        mag = librosa.feature.melspectrogram(
            y=audio,
            sr=cfg.sample_rate,
            n_fft=cfg.n_fft,
            hop_length=cfg.hop_length,
            n_mels=cfg.n_bins,
            power=1.0,
        )
    return np.log(mag + cfg.log_floor).astype(np.float32)


def frame_window(cfg: FeatureConfig) -> slice:
    """The frames kept per note: ``n_frames`` from ``offset_s``.

    Chapter: 02_data
    """
    start = round(cfg.offset_s * cfg.sample_rate / cfg.hop_length)
    return slice(start, start + cfg.n_frames)


def compute_features(audio: np.ndarray, cfg: FeatureConfig) -> np.ndarray:
    """Features [N, F, T] of notes ``audio`` [N, samples].

    Chapter: 02_data
    """
    spec = log_spectrogram(audio, cfg)
    window = frame_window(cfg)
    out = spec[..., window]
    if out.shape[-1] != cfg.n_frames:
        raise DataError(
            f"features: notes are too short for {cfg.n_frames} frames from {cfg.offset_s} s; "
            "lower features.n_frames or features.offset_s"
        )
    return np.ascontiguousarray(out)


def manifest(records: Sequence[NoteRecord]) -> list[tuple[str, int, int]]:
    """(note_str, size, mtime) of every wav: what the feature cache key depends on.

    Chapter: 02_data
    """
    rows = []
    for r in records:
        st = r.audio_path.stat()
        rows.append((r.note_str, st.st_size, st.st_mtime_ns))
    return rows


def feature_cache_path(records: Sequence[NoteRecord], cfg: FeatureConfig) -> Path:
    """Where the features of ``records`` under ``cfg`` are cached: keyed by a hash of the
    notes' manifest (names, sizes, modification times) and the feature settings.

    Chapter: 02_data
    """
    key = stable_hash(
        {"v": FEATURE_CACHE_VERSION, "notes": manifest(records), "features": cfg.to_dict()}
    )
    return cache_dir() / "features" / f"{cfg.kind}-{key}.npz"


def _checksum(features: np.ndarray, peaks: np.ndarray) -> str:
    # fed array by array, without copies: NSynth's features take gigabytes
    digest = hashlib.sha256()
    for array in (features, peaks):
        digest.update(memoryview(np.ascontiguousarray(array)).cast("B"))
    return digest.hexdigest()


def save_feature_cache(
    path: Path, features: np.ndarray, peaks: np.ndarray, names: Sequence[str]
) -> str:
    """Write features, per-note peaks and names atomically, with a checksum inside; returns
    the checksum.

    Chapter: 02_data
    """
    checksum = _checksum(features, peaks)
    meta = json.dumps({"names": list(names), "sha256": checksum})
    with atomic_path(path) as tmp, open(tmp, "wb") as fh:
        np.savez(
            fh, features=features, peaks=peaks, meta=np.frombuffer(meta.encode(), dtype=np.uint8)
        )
    return checksum


def load_feature_cache(
    path: Path, names: Sequence[str]
) -> tuple[np.ndarray, np.ndarray, str] | None:
    """Features, peaks and their checksum from a cache file, or None when it is absent,
    unreadable, for other notes, or fails its checksum (then a warning says it will be
    recomputed).

    Chapter: 02_data
    """
    if not path.is_file():
        return None
    try:
        with np.load(path, allow_pickle=False) as z:
            features, peaks = z["features"], z["peaks"]
            meta = json.loads(z["meta"].tobytes().decode())
    except Exception as exc:
        log.warning(
            "feature cache %s is unreadable (%s); recomputing", path, exc.__class__.__name__
        )
        return None
    checksum = _checksum(features, peaks)
    if meta.get("names") != list(names) or meta.get("sha256") != checksum:
        log.warning("feature cache %s does not match its checksum or notes; recomputing", path)
        return None
    return features, peaks, checksum


def note_features(
    records: Sequence[NoteRecord], cfg: FeatureConfig, progress: bool = True
) -> NoteFeatures:
    """Features [N, F, T] and peak amplitudes [N] of ``records``, from the cache or computed
    (and cached), with the cache file and their checksum.

    Chapter: 02_data
    """
    from tqdm.auto import tqdm

    path = feature_cache_path(records, cfg)
    names = [r.note_str for r in records]
    cached = load_feature_cache(path, names)
    if cached is not None:
        return NoteFeatures(cached[0], cached[1], path, cached[2])
    n_samples = samples_to_load(cfg)
    needed = math.ceil(cfg.seconds_needed * cfg.sample_rate)
    short: list[Path] = []

    def padded(rec: NoteRecord) -> np.ndarray:
        audio = load_audio(rec, cfg.sample_rate, n_samples, pad=False)
        if len(audio) < needed:
            short.append(rec.audio_path)
        return np.pad(audio, (0, n_samples - len(audio)))

    feats = np.empty((len(records), cfg.n_bins, cfg.n_frames), dtype=np.float32)
    peaks = np.empty(len(records), dtype=np.float32)
    with tqdm(
        total=len(records), desc=f"features ({cfg.kind})", unit="note", disable=not progress
    ) as bar:
        for start in range(0, len(records), CHUNK):
            chunk = records[start : start + CHUNK]
            audio = np.stack([padded(r) for r in chunk])
            peaks[start : start + len(chunk)] = np.abs(audio).max(axis=1)
            feats[start : start + len(chunk)] = compute_features(audio, cfg)
            bar.update(len(chunk))
    if short and len(short) == len(records):
        raise DataError(
            f"features: every note is shorter than the {cfg.seconds_needed:.3f} s the features "
            f"need (FeatureConfig.offset_s plus n_frames hops; first: {short[0]}), so they "
            "would be padded silence; use longer notes, or lower offset_s or n_frames"
        )
    if short:
        log.warning(
            "features: %d note(s) shorter than the %.3f s the features need, padded with "
            "silence (first: %s); re-render them or drop them from examples.json",
            len(short),
            cfg.seconds_needed,
            short[0],
        )
    checksum = save_feature_cache(path, feats, peaks, names)
    return NoteFeatures(feats, peaks, path, checksum)
