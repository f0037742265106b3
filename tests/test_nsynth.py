from __future__ import annotations

import dataclasses
import io
import json
import tarfile

import numpy as np
import pytest
import soundfile
from conftest import TOY_INSTRUMENTS, harmonic_tone, write_nsynth_folder

from pitchtimbre.config import DataConfig, FeatureConfig
from pitchtimbre.data import load_dataset
from pitchtimbre.data.features import load_audio
from pitchtimbre.data.nsynth import (
    REQUIRED_FIELDS,
    filter_notes,
    find_nsynth_splits,
    read_examples,
    safe_extract,
    verify_archive,
)
from pitchtimbre.data.pitch_check import estimate_midi
from pitchtimbre.errors import DataError


def test_read_and_filter(toy_folder):
    records = read_examples(toy_folder)
    assert len(records) == 6 * 6 * 2
    assert records == sorted(records, key=lambda r: r.note_str)
    flutes = filter_notes(records, families=("flute",), pitch_range=(61, 62), velocities=(100,))
    assert len(flutes) == 3 * 2 * 1
    with pytest.raises(
        DataError,
        match=r"no notes left after filtering.*families=\('flutes',\).*has families \['bass', 'flute'\]",
    ):
        filter_notes(records, families=("flutes",))


def test_instrument_sources_keep_only_the_notes_of_those_sources(toy_folder):
    """NSynth's acoustic, electronic and synthetic instruments, chosen by
    DataConfig.instrument_sources, in the filter and in the loaded data set."""
    import json

    from pitchtimbre.config import DataConfig, FeatureConfig
    from pitchtimbre.data import load_dataset

    table_file = toy_folder / "examples.json"
    table = json.loads(table_file.read_text())
    acoustic = {
        "bass_synthetic_000",
        "bass_synthetic_001",
        "flute_synthetic_003",
        "flute_synthetic_004",
    }
    for note in table.values():
        if note["instrument_str"] in acoustic:
            note.update(instrument_source=0, instrument_source_str="acoustic")
    table_file.write_text(json.dumps(table))
    records = read_examples(toy_folder)
    kept = filter_notes(records, sources=("acoustic",))
    assert {r.instrument_str for r in kept} == acoustic and len(kept) == 4 * 12
    both = filter_notes(records, sources=("acoustic", "synthetic"))
    assert len(both) == len(records)
    with pytest.raises(DataError, match=r"sources=\('electronic',\)"):
        filter_notes(records, sources=("electronic",))
    ds = load_dataset(
        DataConfig(source=str(toy_folder), instrument_sources=("acoustic",), heldout_per_family=1),
        FeatureConfig(),
        progress=False,
    )
    assert sorted(ds.instrument_names) == sorted(acoustic) and len(ds) == 4 * 12


def test_missing_examples_json(tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataError, match=r"empty/examples\.json: missing; render one"):
        read_examples(tmp_path / "empty")
    with pytest.raises(DataError, match="no such folder"):
        read_examples(tmp_path / "absent")


def test_malformed_examples_json(toy_folder):
    path = toy_folder / "examples.json"
    path.write_text("{ not json")
    with pytest.raises(DataError, match=r"examples\.json: not valid JSON \(line 1"):
        read_examples(toy_folder)
    path.write_text(json.dumps({"x-060-100": {"pitch": 60}}))
    with pytest.raises(DataError, match=r"entry 'x-060-100' lacks field\(s\) \['velocity'"):
        read_examples(toy_folder)
    for table in ({}, []):
        path.write_text(json.dumps(table))
        with pytest.raises(DataError, match=r"examples\.json: expected a non-empty mapping"):
            read_examples(toy_folder)
    path.write_text(json.dumps({"x-060-100": [60, 100]}))
    with pytest.raises(DataError, match=r"examples\.json: entry 'x-060-100' is not a mapping"):
        read_examples(toy_folder)
    fields = {f: "x" if f.endswith("_str") else 0 for f in REQUIRED_FIELDS if f != "note_str"}
    path.write_text(json.dumps({"x-060-100": {**fields, "pitch": "sixty"}}))
    with pytest.raises(
        DataError, match=r"examples\.json: entry 'x-060-100' has a field of the wrong type"
    ):
        read_examples(toy_folder, check_audio=False)
    path.write_text(json.dumps({"x-060-100": {**fields, "instrument_str": None}}))
    with pytest.raises(DataError, match=r"\['instrument_str'\] that are not text"):
        read_examples(toy_folder, check_audio=False)
    # labels int() would change quietly: a bool, a fraction
    wrong = (("velocity", True), ("pitch", 60.7), ("instrument", False), ("instrument_source", 1.7))
    for name, value in wrong:
        path.write_text(json.dumps({"x-060-100": {**fields, name: value}}))
        with pytest.raises(
            DataError, match=rf"entry 'x-060-100' has {name} {value!r}, not a whole number"
        ):
            read_examples(toy_folder, check_audio=False)
    path.write_text(json.dumps({"x-060-100": {**fields, "pitch": 60.0}}))  # whole: fine
    assert read_examples(toy_folder, check_audio=False)[0].pitch == 60
    # two keys naming one note: its wav would count twice
    one = {**fields, "note_str": "x-060-100"}
    path.write_text(json.dumps({"x-060-100": one, "x-060-100-copy": one}))
    with pytest.raises(
        DataError, match=r"1 note_str value\(s\) name more than one entry, first 'x-060-100'"
    ):
        read_examples(toy_folder, check_audio=False)
    path.write_text(json.dumps({"x-060-100": {**fields, "pitch": 300}}))
    with pytest.raises(DataError, match=r"entry 'x-060-100' has pitch 300, outside MIDI's 0..127"):
        read_examples(toy_folder, check_audio=False)
    path.write_text(json.dumps({"x-060-100": {**fields, "pitch": 60}}), encoding="utf-16")
    with pytest.raises(DataError, match=r"examples\.json: not UTF-8 text; save it as UTF-8"):
        read_examples(toy_folder, check_audio=False)
    path.write_text("\ufeff" + json.dumps({"x-060-100": {**fields, "pitch": 60}}), "utf-8")
    assert read_examples(toy_folder, check_audio=False)[0].pitch == 60  # a BOM is fine


def test_a_wav_with_nan_samples_is_named(toy_folder):
    rec = read_examples(toy_folder)[5]
    soundfile.write(rec.audio_path, np.full(16000, np.nan, np.float32), 16000, subtype="FLOAT")
    with pytest.raises(DataError, match=rf"{rec.audio_path.name}: holds NaN or infinite samples"):
        load_audio(rec, 16000, 16000)


def test_examples_naming_a_missing_wav(toy_folder):
    victim = sorted((toy_folder / "audio").glob("*.wav"))[3]
    victim.unlink()
    with pytest.raises(
        DataError, match=rf"examples\.json: names .*{victim.name}, which does not exist"
    ):
        read_examples(toy_folder)
    with pytest.raises(DataError, match=victim.name):
        load_dataset(
            DataConfig(source=str(toy_folder), heldout_per_family=1),
            FeatureConfig(),
            progress=False,
        )


def test_corrupt_wav_is_named(toy_folder):
    victim = sorted((toy_folder / "audio").glob("*.wav"))[5]
    victim.write_bytes(b"RIFF0000WAVEjunkjunk")
    with pytest.raises(DataError, match=rf"{victim.name}: not a readable wav"):
        load_dataset(
            DataConfig(source=str(toy_folder), heldout_per_family=1),
            FeatureConfig(),
            progress=False,
        )


def test_an_unreadable_wav_gets_the_advice_that_fits_where_it_is(toy_folder, tmp_path, monkeypatch):
    rec = read_examples(toy_folder)[5]
    rec.audio_path.write_bytes(b"RIFF0000WAVEjunkjunk")
    with pytest.raises(DataError, match=r"not a readable wav \(.*\); re-render or re-extract"):
        load_audio(rec, 16000, 16000)
    import os

    real_access = os.access
    monkeypatch.setattr(  # as for another user's file with mode 600 (root reads anything)
        os, "access", lambda p, mode: False if p == rec.audio_path else real_access(p, mode)
    )
    with pytest.raises(DataError, match=rf"{rec.audio_path.name}: you may not read it; check its"):
        load_audio(rec, 16000, 16000)
    monkeypatch.setattr(os, "access", real_access)
    # a render in the package cache: the user did not write it, and deleting it re-renders
    monkeypatch.setenv("PITCHTIMBRE_CACHE", str(tmp_path / "cache"))
    render = tmp_path / "cache" / "notes" / "timgm6mb-0123456789abcdef"
    (render / "audio").mkdir(parents=True)
    cached = render / "audio" / rec.audio_path.name
    cached.write_bytes(b"RIFF0000WAVEjunkjunk")
    with pytest.raises(DataError, match=rf"package cache's notes; delete {render} and run again"):
        load_audio(dataclasses.replace(rec, audio_path=cached), 16000, 16000)


def test_other_sample_rates_are_resampled(tmp_path):
    folder = write_nsynth_folder(
        tmp_path / "hi", TOY_INSTRUMENTS[:1], pitches=(64,), velocities=(100,), sr=44100
    )
    rec = read_examples(folder)[0]
    audio = load_audio(rec, 16000, 16000)
    assert audio.shape == (16000,)
    assert abs(estimate_midi(audio[None], 64, 16000)[0] - 64) < 0.3


def test_silent_notes_are_excluded_and_counted(toy_folder):
    victim = sorted((toy_folder / "audio").glob("*.wav"))[0]
    soundfile.write(victim, np.zeros(16000, np.float32), 16000, subtype="PCM_16")
    ds = load_dataset(
        DataConfig(source=str(toy_folder), heldout_per_family=1), FeatureConfig(), progress=False
    )
    assert ds.summary.excluded["silent"] == 1
    assert len(ds) == 71
    assert victim.stem not in {r.note_str for r in ds.records}


def test_a_source_with_too_few_instruments_is_an_error(tmp_path):
    folder = write_nsynth_folder(tmp_path / "one", TOY_INSTRUMENTS[:1])
    with pytest.raises(DataError, match="needs at least two training and two held-out instruments"):
        load_dataset(DataConfig(source=str(folder)), FeatureConfig(), progress=False)


def test_an_empty_selection_is_an_error(toy_folder):
    cfg = DataConfig(source=str(toy_folder), pitch_range=(20, 30))
    with pytest.raises(DataError, match=r"no notes left after filtering \(pitch_range=\(20, 30\)"):
        load_dataset(cfg, FeatureConfig(), progress=False)


def test_official_nsynth_splits_decide_the_unseen_instruments(tmp_path):
    root = tmp_path / "nsynth"
    write_nsynth_folder(root / "nsynth-train", TOY_INSTRUMENTS[:4], pitches=(60, 61, 62))
    write_nsynth_folder(
        root / "nsynth-test",
        [*TOY_INSTRUMENTS[4:], ("bass_x_9", "bass", 0.4)],
        pitches=(60, 61, 62),
    )
    assert set(find_nsynth_splits(root)) == {"train", "test"}
    ds = load_dataset(DataConfig(source=str(root)), FeatureConfig(), progress=False)
    train = {ds.instrument_names[i] for i in ds.instrument[ds.is_train].tolist()}
    held = {ds.instrument_names[i] for i in ds.instrument[~ds.is_train].tolist()}
    assert train == {n for n, _, _ in TOY_INSTRUMENTS[:4]}
    assert held == {"flute_synthetic_004", "flute_synthetic_005", "bass_x_9"}
    assert ds.summary.source.startswith("nsynth")


def test_an_instrument_in_two_official_splits_is_named(tmp_path):
    # NSynth's splits never share an instrument; a hand-made root that does would leak it
    root = tmp_path / "nsynth"
    write_nsynth_folder(root / "nsynth-train", TOY_INSTRUMENTS[:4], pitches=(60, 61))
    write_nsynth_folder(root / "nsynth-test", TOY_INSTRUMENTS[3:], pitches=(62, 63))
    leaked = TOY_INSTRUMENTS[3][0]
    with pytest.raises(DataError, match=rf"instruments \['{leaked}'\] are in both splits"):
        load_dataset(DataConfig(source=str(root)), FeatureConfig(), progress=False)


def _tar_with(members: dict[str, bytes], links: dict[str, str] | None = None) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as tar:
        for name, data in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
        for name, target in (links or {}).items():
            info = tarfile.TarInfo(name)
            info.type = tarfile.SYMTYPE
            info.linkname = target
            tar.addfile(info)
    return buf.getvalue()


def test_safe_extract_and_checksums(tmp_path):
    wav = io.BytesIO()
    soundfile.write(wav, harmonic_tone(60, 0.5), 16000, format="WAV", subtype="PCM_16")
    good = tmp_path / "good.tar.gz"
    good.write_bytes(
        _tar_with(
            {"nsynth-test/examples.json": b"{}", "nsynth-test/audio/a-060-100.wav": wav.getvalue()}
        )
    )
    digest = verify_archive(good, None)  # first use records the digest beside the archive
    assert (tmp_path / "good.tar.gz.sha256").read_text().startswith(digest)
    files = safe_extract(good, tmp_path / "out")
    assert (tmp_path / "out/nsynth-test/audio/a-060-100.wav").is_file()
    assert len(files) == 2

    for damaged in ("", "3f2a  good.tar.gz\n", "not a digest at all"):  # e.g. a killed write
        (tmp_path / "good.tar.gz.sha256").write_text(damaged)
        with pytest.raises(DataError, match=r"good\.tar\.gz\.sha256: not a sha256 record"):
            verify_archive(good, None)
    assert verify_archive(good, digest.upper()) == digest  # checked against what is given ...
    assert (tmp_path / "good.tar.gz.sha256").read_text().startswith(digest)  # ... and recorded
    (tmp_path / "good.tar.gz.sha256").unlink()
    assert verify_archive(good, None) == digest  # recorded again
    for typo in ("0" * 63, "g" * 64, "sha256:" + digest):
        with pytest.raises(
            DataError, match=r"the expected sha256 for .*good\.tar\.gz must be 64 hex"
        ):
            verify_archive(good, typo)
    assert not [p.name for p in tmp_path.iterdir() if "tmp" in p.name]  # no temporary left

    good.write_bytes(good.read_bytes() + b"tampered")
    with pytest.raises(DataError, match=r"good\.tar\.gz: sha256 .* does not match"):
        verify_archive(good, None)
    with pytest.raises(DataError, match="does not match"):
        verify_archive(good, "0" * 64)

    for name, archive in {
        "dotdot": _tar_with({"../escape.txt": b"x"}),
        "absolute": _tar_with({"/tmp/escape.txt": b"x"}),
        "link": _tar_with({}, links={"evil": "../../etc/passwd"}),
    }.items():
        path = tmp_path / f"{name}.tar.gz"
        path.write_bytes(archive)
        with pytest.raises(DataError, match="refusing to extract"):
            safe_extract(path, tmp_path / f"x-{name}")
    assert not (tmp_path / "escape.txt").exists()
    bad = tmp_path / "bad.tar.gz"
    bad.write_bytes(b"not a tar")
    with pytest.raises(DataError, match=r"bad\.tar\.gz: not a readable tar archive"):
        safe_extract(bad, tmp_path / "y")


def test_a_source_of_one_pitch_is_an_error_naming_it(tmp_path):
    folder = write_nsynth_folder(
        tmp_path / "flat", TOY_INSTRUMENTS, pitches=(60,), velocities=(60, 75, 90, 100, 110)
    )
    with pytest.raises(DataError, match=r"flat: every held-out note has pitch 60;.*two pitches"):
        load_dataset(DataConfig(source=str(folder)), FeatureConfig(), progress=False)


def test_evaluating_on_an_nsynth_root_reads_its_held_out_split_only(tmp_path):
    root = tmp_path / "nsynth"
    write_nsynth_folder(root / "nsynth-train", TOY_INSTRUMENTS[:4], pitches=(60, 61, 62))
    write_nsynth_folder(root / "nsynth-test", TOY_INSTRUMENTS[4:], pitches=(60, 61, 62))
    ds = load_dataset(
        DataConfig(source=str(root)),
        FeatureConfig(),
        progress=False,
        stats=(0.0, 1.0),
        all_heldout=True,
    )
    assert set(ds.instrument_names) == {n for n, _, _ in TOY_INSTRUMENTS[4:]}
    assert not ds.is_train.any() and len(ds) == 2 * 3 * 2


def test_a_held_out_split_of_one_pitch_is_an_error_naming_it(tmp_path):
    root = tmp_path / "nsynth"
    write_nsynth_folder(root / "nsynth-train", TOY_INSTRUMENTS[:4], pitches=(60, 61, 62))
    write_nsynth_folder(
        root / "nsynth-test", TOY_INSTRUMENTS[4:], pitches=(64,), velocities=(60, 75, 90, 110)
    )
    with pytest.raises(DataError, match=r"nsynth: every held-out note has pitch 64;"):
        load_dataset(DataConfig(source=str(root)), FeatureConfig(), progress=False)


def test_a_training_split_of_one_pitch_is_an_error_naming_it(tmp_path):
    root = tmp_path / "nsynth"
    write_nsynth_folder(
        root / "nsynth-train", TOY_INSTRUMENTS[:4], pitches=(62,), velocities=(60, 75, 90, 110)
    )
    write_nsynth_folder(root / "nsynth-test", TOY_INSTRUMENTS[4:], pitches=(60, 61, 62))
    with pytest.raises(DataError, match=r"nsynth: every training note has pitch 62;"):
        load_dataset(DataConfig(source=str(root)), FeatureConfig(), progress=False)


def test_instruments_with_too_few_notes_are_left_out_and_counted(toy_folder):
    import json

    from pitchtimbre.config import DataConfig, FeatureConfig
    from pitchtimbre.data import load_dataset

    table_file = toy_folder / "examples.json"
    table = json.loads(table_file.read_text())
    sparse = sorted(k for k in table if k.startswith("flute_synthetic_005"))
    for note in sparse[3:]:  # three notes left to that instrument
        del table[note]
    table_file.write_text(json.dumps(table))

    def load(minimum: int):
        data = DataConfig(
            source=str(toy_folder), heldout_per_family=1, min_notes_per_instrument=minimum
        )
        return load_dataset(data, FeatureConfig(), progress=False)

    ds = load(4)
    assert "flute_synthetic_005" not in ds.instrument_names and len(ds.instrument_names) == 5
    assert ds.summary.excluded["instrument_with_too_few_notes"] == 3 and len(ds) == 5 * 12
    kept = load(3)
    assert "flute_synthetic_005" in kept.instrument_names and len(kept) == 5 * 12 + 3
    assert "instrument_with_too_few_notes" not in kept.summary.excluded
