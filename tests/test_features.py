from __future__ import annotations

import logging
import os
import subprocess
import sys
import textwrap
from dataclasses import replace

import numpy as np
import pytest
import soundfile
import torch
from conftest import harmonic_tone

from pitchtimbre.config import DataConfig, FeatureConfig
from pitchtimbre.data import features as feat
from pitchtimbre.data import load_dataset
from pitchtimbre.data.nsynth import read_examples
from pitchtimbre.errors import DataError


def test_cqt_shape_and_pitch_shift_is_a_frequency_shift():
    cfg = FeatureConfig()
    audio = np.stack([harmonic_tone(60, 0.3), harmonic_tone(62, 0.3)])
    f = feat.compute_features(audio, cfg)
    assert f.shape == (2, cfg.n_bins, cfg.n_frames) and f.dtype == np.float32
    peak = f.mean(axis=2).argmax(axis=1)
    assert peak[0] == 60 - cfg.fmin_midi  # the fundamental's bin
    assert peak[1] - peak[0] == 2


def test_mel_option_puts_each_fundamental_in_its_mel_band():
    """Mel bands, not CQT bins under another name: C4 and C5 peak in the bands whose centres
    are nearest 262 and 523 Hz (5 and 10 of 64 at 16 kHz; a CQT from C2 puts them at 24
    and 36)."""
    import librosa

    cfg = FeatureConfig(kind="mel", n_bins=64)
    f = feat.compute_features(np.stack([harmonic_tone(60, 0.3), harmonic_tone(72, 0.3)]), cfg)
    assert f.shape == (2, 64, cfg.n_frames)
    centres = librosa.mel_frequencies(n_mels=64 + 2, fmax=cfg.sample_rate / 2)[1:-1]
    nearest = [int(np.abs(centres - librosa.midi_to_hz(m)).argmin()) for m in (60, 72)]
    assert f.mean(axis=2).argmax(axis=1).tolist() == nearest == [5, 10]


@pytest.mark.filterwarnings("ignore:n_fft=.* is too large:UserWarning")
def test_notes_too_short_for_the_frames_are_refused():
    cfg = FeatureConfig()  # 32 frames of hop 256 from 64 ms: 0.576 s of audio
    with pytest.raises(DataError, match=r"features: notes are too short for 32 frames"):
        feat.compute_features(harmonic_tone(60, 0.3, seconds=0.3)[None], cfg)


def test_frames_come_from_the_held_part():
    """A note's features start offset_s into it (0.064 s is frame 4 at a 256-sample hop and
    16 kHz), past the attack: on a note growing louder, each kept frame is the spectrogram's
    frame that many hops later, and louder than the frames before it."""
    cfg = FeatureConfig(kind="mel")
    t = np.arange(cfg.sample_rate) / cfg.sample_rate
    note = (t * np.sin(2 * np.pi * 440 * t))[None].astype(np.float32)  # one second, growing
    full = feat.log_spectrogram(note, cfg)
    for offset, first in ((0.064, 4), (0.128, 8)):
        kept = feat.compute_features(note, replace(cfg, offset_s=offset))
        assert kept.shape == (1, cfg.n_bins, cfg.n_frames)
        np.testing.assert_array_equal(kept, full[..., first : first + cfg.n_frames])
        assert kept[0].max(axis=0).min() > full[0, :, :first].max()
    assert feat.frame_window(cfg) == slice(4, 4 + cfg.n_frames)


def test_feature_cache_is_reused(toy_folder, monkeypatch):
    records = read_examples(toy_folder)
    cfg = FeatureConfig()
    f1, p1, path, sha = feat.note_features(records, cfg, progress=False)
    assert path.is_file()
    monkeypatch.setattr(
        feat, "compute_features", lambda *a: pytest.fail("recomputed despite a valid cache")
    )
    f2, p2, path2, sha2 = feat.note_features(records, cfg, progress=False)
    assert path2 == path and np.array_equal(f1, f2) and np.array_equal(p1, p2)
    assert sha2 == sha and len(sha) == 64
    other = feat.feature_cache_path(records, FeatureConfig(n_frames=16))
    assert other != path  # the key depends on the settings
    assert feat.load_feature_cache(path, [r.note_str for r in records][::-1]) is None


def test_a_note_too_short_for_its_frames_is_reported(toy_folder, caplog):
    records = read_examples(toy_folder)
    cfg = FeatureConfig()  # needs 0.576 s; the toy notes last 1 s
    victim = records[7].audio_path
    soundfile.write(victim, harmonic_tone(60, 0.3, seconds=0.2), 16000, subtype="PCM_16")
    with caplog.at_level("WARNING", logger="pitchtimbre.data.features"):
        feats = feat.note_features(records, cfg, progress=False).features
    assert "features: 1 note(s) shorter than the 0.576 s" in caplog.text
    assert str(victim) in caplog.text
    assert feats.shape[0] == len(records)


def test_notes_that_are_all_too_short_are_refused(toy_folder):
    """Every note padded with silence would train a model on silence: an error, not a
    warning, and no cache is written."""
    records = read_examples(toy_folder)
    for rec in records:
        soundfile.write(rec.audio_path, harmonic_tone(60, 0.3, seconds=0.1), 16000)
    cfg = FeatureConfig()
    with pytest.raises(DataError, match=r"every note is shorter than the 0\.576 s the features"):
        feat.note_features(records, cfg, progress=False)
    assert not feat.feature_cache_path(records, cfg).exists()


def test_a_changed_wav_invalidates_the_feature_cache(toy_folder, monkeypatch):
    records = read_examples(toy_folder)
    cfg = FeatureConfig()
    path = feat.note_features(records, cfg, progress=False).path
    wav = records[3].audio_path
    st = wav.stat()
    os.utime(wav, ns=(st.st_atime_ns, st.st_mtime_ns + 10**9))  # re-rendered a second later
    assert feat.feature_cache_path(records, cfg) != path
    computed = []
    real = feat.compute_features
    monkeypatch.setattr(feat, "compute_features", lambda *a: computed.append(1) or real(*a))
    again = feat.note_features(records, cfg, progress=False).path
    assert computed and again != path


def test_a_killed_cache_write_leaves_the_previous_cache_intact(toy_folder):
    records = read_examples(toy_folder)
    cfg = FeatureConfig()
    f1, _, path, _ = feat.note_features(records, cfg, progress=False)
    before = path.read_bytes()
    # a second process starts overwriting the cache and is killed halfway through
    script = textwrap.dedent(
        f"""
        import os, numpy as np
        from pitchtimbre.data import features as feat
        def dying_savez(fh, **arrays):
            fh.write(b"PK" + b"x" * 4096); fh.flush(); os._exit(9)
        np.savez = dying_savez
        feat.save_feature_cache(__import__("pathlib").Path({str(path)!r}),
                                np.zeros((1, 1, 1), np.float32), np.zeros(1, np.float32), ["x"])
        """
    )
    proc = subprocess.run([sys.executable, "-c", script], check=False)
    assert proc.returncode == 9
    assert path.read_bytes() == before
    f2 = feat.note_features(records, cfg, progress=False).features
    assert np.array_equal(f1, f2)


def test_a_damaged_cache_is_detected_and_recomputed(toy_folder, caplog):
    records = read_examples(toy_folder)
    cfg = FeatureConfig()
    f1, _, path, _ = feat.note_features(records, cfg, progress=False)
    data = bytearray(path.read_bytes())
    path.write_bytes(bytes(data[: len(data) // 2]))  # e.g. a disk that filled up
    with caplog.at_level(logging.WARNING):
        f2 = feat.note_features(records, cfg, progress=False).features
    assert "recomputing" in caplog.text
    assert np.array_equal(f1, f2)
    # flipped bytes inside the arrays: the checksum catches what the zip container may not
    names = [r.note_str for r in records]
    feats, peaks, _ = feat.load_feature_cache(path, names)
    feat.save_feature_cache(path, feats, peaks, names)
    import zipfile

    with zipfile.ZipFile(path) as z:
        members = {n: z.read(n) for n in z.namelist()}
    raw = bytearray(members["features.npy"])
    raw[-10] ^= 0xFF
    members["features.npy"] = bytes(raw)
    with zipfile.ZipFile(path, "w") as z:
        for n, b in members.items():
            z.writestr(n, b)
    assert feat.load_feature_cache(path, names) is None


def test_normalisation_uses_training_instruments_only(toy_folder):
    cfg = DataConfig(source=str(toy_folder), heldout_per_family=1)
    ds = load_dataset(cfg, FeatureConfig(), progress=False)
    train = ds.features[ds.is_train]
    assert abs(float(train.mean())) < 1e-4
    assert abs(float(train.std()) - 1) < 1e-3
    held = ds.features[~ds.is_train]
    assert abs(float(held.mean())) > 1e-3  # held-out notes are normalised, not standardised
    raw = ds.denormalise(ds.features)
    assert torch.allclose(raw[ds.is_train].mean(), torch.tensor(ds.mean), atol=1e-3)


def test_a_copied_source_keeps_its_data_fingerprint(toy_folder, tmp_path):
    """A trained model's key holds the data's fingerprint: copying or moving the notes (new
    file times, so new feature cache files) must not make every model train again, and
    anything that changes what a model is trained on must change it."""
    import json
    import shutil

    def fingerprint(folder, features=None, **data) -> tuple[str, list[str]]:
        ds = load_dataset(
            DataConfig(source=str(folder), heldout_per_family=1, **data),
            features or FeatureConfig(),
            progress=False,
        )
        return ds.fingerprint, ds.summary.cache_paths

    first, first_cache = fingerprint(toy_folder)
    copy = shutil.copytree(toy_folder, tmp_path / "copy", copy_function=shutil.copy)
    for wav in (copy / "audio").iterdir():  # copied later: other modification times
        st = wav.stat()
        os.utime(wav, ns=(st.st_atime_ns, st.st_mtime_ns + 10**9))
    again, again_cache = fingerprint(copy)
    assert again_cache != first_cache  # the features were computed again from the copy
    assert again == first

    assert fingerprint(copy, FeatureConfig(n_frames=16))[0] != first
    assert fingerprint(copy, split_seed=1)[0] != first  # other held-out instruments
    assert fingerprint(copy, velocities=(75,))[0] != first  # fewer notes
    table = json.loads((copy / "examples.json").read_text())
    for row in table.values():
        if row["instrument_str"] == "bass_synthetic_000":
            row["instrument_family_str"] = "flute"  # a label changes, the audio does not
    (copy / "examples.json").write_text(json.dumps(table))
    assert fingerprint(copy)[0] != first
    # two notes' labels swapped, their audio and every count kept: pitch, velocity, instrument
    for one, other, field in (
        ("bass_synthetic_000-060-075", "bass_synthetic_000-061-075", "pitch"),
        ("bass_synthetic_000-060-075", "bass_synthetic_000-060-100", "velocity"),
        ("bass_synthetic_000-060-075", "bass_synthetic_001-060-075", "instrument_str"),
    ):
        table = json.loads((toy_folder / "examples.json").read_text())
        table[one][field], table[other][field] = table[other][field], table[one][field]
        (copy / "examples.json").write_text(json.dumps(table))
        assert fingerprint(copy)[0] != first, field
    (copy / "examples.json").write_text((toy_folder / "examples.json").read_text())
    assert fingerprint(copy)[0] == first
    victim = copy / "audio" / "flute_synthetic_004-062-100.wav"
    soundfile.write(victim, harmonic_tone(62, 0.1), 16000, subtype="PCM_16")  # other audio
    assert fingerprint(copy)[0] != first


def test_the_data_fingerprint_is_the_same_in_every_process(toy_folder, tmp_path):
    """reproduce trains in one process and the chapters load in others: their keys must agree
    whatever the hash seed, and whether the features were computed or read from the cache."""
    program = (
        "import sys\n"
        "from pitchtimbre.config import DataConfig, FeatureConfig\n"
        "from pitchtimbre.data import load_dataset\n"
        "cfg = DataConfig(source=sys.argv[1], heldout_per_family=1)\n"
        "print(load_dataset(cfg, FeatureConfig(), progress=False).fingerprint)\n"
    )

    def fingerprint(seed: str, cache: str) -> str:
        env = {**os.environ, "PYTHONHASHSEED": seed, "PITCHTIMBRE_CACHE": str(tmp_path / cache)}
        return subprocess.run(
            [sys.executable, "-c", program, str(toy_folder)],
            env=env,
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()

    prints = {fingerprint("1", "a"), fingerprint("2", "b"), fingerprint("3", "a")}  # a: cached
    assert len(prints) == 1 and len(prints.pop()) == 16


def test_torch_backend_matches_librosa_through_compute_features():
    audio = np.stack([harmonic_tone(48, 0.4), harmonic_tone(67, 0.7)])
    ref = feat.compute_features(audio, FeatureConfig())
    fast = feat.compute_features(audio, FeatureConfig(backend="torch"))
    assert fast.shape == ref.shape
    loud = ref > np.log(10 * FeatureConfig().log_floor)
    # tests/test_frontend.py states and checks the front end's tolerances in detail
    assert np.abs(fast - ref)[loud].max() < 1e-3


def test_features_to_audio_of_a_short_cqt_clip_shows_no_warning():
    """The latent explorer's clips are 32 frames: librosa's warning about its lowest
    octave's short signal must not reach the chapter's output."""
    import warnings

    from pitchtimbre.audio import features_to_audio
    from pitchtimbre.config import FeatureConfig

    cfg = FeatureConfig()
    rng = np.random.default_rng(0)
    features = rng.normal(size=(cfg.n_bins, cfg.n_frames)).astype(np.float32)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        y = features_to_audio(features, mean=-4.0, std=2.0, cfg=cfg, n_iter=2)
    assert y.dtype == np.float32 and np.isfinite(y).all() and 0 < np.abs(y).max() <= 0.5


@pytest.mark.parametrize("kind", ["cqt", "mel"])
@pytest.mark.parametrize("seed_name", ["rng", "random_state"])
def test_features_to_audio_seeds_griffin_lim_by_the_keyword_librosa_takes(
    monkeypatch, kind, seed_name
):
    """librosa 1.0 renamed Griffin-Lim's ``random_state`` to ``rng`` (the old name warns in
    every clip of chapter 8, and goes in 1.2); 0.11 knows only ``random_state``. Both
    branches pass the seeded generator under the name the installed function takes."""
    import librosa

    from pitchtimbre.audio import features_to_audio

    cfg = FeatureConfig(kind=kind)
    calls = []

    def takes_rng(S, n_iter=32, rng=None, **kwargs):
        calls.append(("rng", rng, kwargs))
        return np.ones(S.shape[-1] * cfg.hop_length)

    def takes_random_state(S, n_iter=32, random_state=None, **kwargs):
        calls.append(("random_state", random_state, kwargs))
        return np.ones(S.shape[-1] * cfg.hop_length)

    stand_in = takes_rng if seed_name == "rng" else takes_random_state
    monkeypatch.setattr(librosa, "griffinlim_cqt" if kind == "cqt" else "griffinlim", stand_in)
    features = np.zeros((cfg.n_bins, cfg.n_frames), dtype=np.float32)
    features_to_audio(features, mean=-4.0, std=2.0, cfg=cfg, n_iter=2, seed=3)
    [(name, generator, others)] = calls
    assert name == seed_name and not {"rng", "random_state"} & set(others)
    assert generator.random() == np.random.default_rng(3).random()


def test_features_to_audio_of_a_stack_gives_each_clip_its_own_pitch_and_peak():
    """The latent explorer inverts its clips in one call: each keeps its own pitch and is
    normalised on its own, and a stack of one is the single clip."""
    import librosa

    from pitchtimbre.audio import features_to_audio

    cfg = FeatureConfig()
    pitches = (55, 67)
    tones = np.stack([harmonic_tone(p, 0.3) for p in pitches])
    tones[1] *= 0.1  # a quiet one: normalised to the same peak
    logs = feat.compute_features(tones, cfg)  # [2, F, T], unnormalised: mean 0, std 1
    waves = features_to_audio(logs, mean=0.0, std=1.0, cfg=cfg, n_iter=8)
    assert waves.shape[0] == 2 and waves.dtype == np.float32
    assert np.allclose(np.abs(waves).max(axis=1), 0.5)
    for wave, pitch in zip(waves, pitches, strict=True):
        spectrum = np.abs(np.fft.rfft(wave * np.hanning(len(wave))))
        loudest = np.fft.rfftfreq(len(wave), 1 / cfg.sample_rate)[spectrum.argmax()]
        assert round(float(librosa.hz_to_midi(loudest))) - pitch in (0, 12)
    one = features_to_audio(logs[0], mean=0.0, std=1.0, cfg=cfg, n_iter=8)
    assert np.array_equal(features_to_audio(logs[:1], 0.0, 1.0, cfg, n_iter=8)[0], one)


@pytest.mark.parametrize("kind", ["cqt", "mel"])
def test_features_to_magnitude_undoes_the_normalisation_and_the_log(kind):
    """Normalised features back to the front end's own magnitude (librosa's |CQT| or mel),
    as the latent explorer does before inverting them."""
    import librosa

    from pitchtimbre.audio import features_to_magnitude

    cfg = FeatureConfig(kind=kind)
    tone = harmonic_tone(60, 0.5).astype(np.float32)
    logs = feat.compute_features(tone[None], cfg)[0]
    mean, std = float(logs.mean()), float(logs.std())  # as NoteDataset normalises
    assert abs(mean) > 1 and abs(std - 1) > 0.1  # so that undoing them matters
    if kind == "cqt":
        fmin = float(librosa.midi_to_hz(cfg.fmin_midi))
        spectrum = np.abs(
            librosa.cqt(
                tone,
                sr=cfg.sample_rate,
                hop_length=cfg.hop_length,
                fmin=fmin,
                n_bins=cfg.n_bins,
                bins_per_octave=cfg.bins_per_octave,
            )
        )
    else:
        spectrum = librosa.feature.melspectrogram(
            y=tone,
            sr=cfg.sample_rate,
            n_fft=cfg.n_fft,
            hop_length=cfg.hop_length,
            n_mels=cfg.n_bins,
            power=1.0,
        )
    expected = spectrum[:, feat.frame_window(cfg)]
    magnitude = features_to_magnitude((logs - mean) / std, mean, std, cfg)
    assert magnitude.shape == expected.shape and magnitude.min() >= 0
    np.testing.assert_allclose(magnitude, expected, rtol=1e-3, atol=1e-3 * cfg.log_floor)


def test_features_to_audio_inverts_mel_features_at_their_pitch():
    import librosa

    from pitchtimbre.audio import features_to_audio

    cfg = FeatureConfig(kind="mel")
    logs = feat.compute_features(harmonic_tone(57, 0.3)[None].astype(np.float32), cfg)[0]
    mean, std = float(logs.mean()), float(logs.std())
    wave = features_to_audio((logs - mean) / std, mean, std, cfg, n_iter=8)
    assert wave.dtype == np.float32 and np.isclose(np.abs(wave).max(), 0.5)
    assert len(wave) == (cfg.n_frames - 1) * cfg.hop_length  # centred frames, as librosa's
    spectrum = np.abs(np.fft.rfft(wave * np.hanning(len(wave))))
    loudest = np.fft.rfftfreq(len(wave), 1 / cfg.sample_rate)[spectrum.argmax()]
    assert round(float(librosa.hz_to_midi(loudest))) - 57 in (0, 12)
    again = features_to_audio((logs - mean) / std, mean, std, cfg, n_iter=8)
    other = features_to_audio((logs - mean) / std, mean, std, cfg, n_iter=8, seed=1)
    assert np.array_equal(again, wave) and not np.array_equal(other, wave)
