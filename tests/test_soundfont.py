from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import signal
from pathlib import Path

import numpy as np
import pytest
import soundfile

from pitchtimbre.cli import main
from pitchtimbre.config import RenderConfig
from pitchtimbre.data import pitch_check
from pitchtimbre.data.nsynth import REQUIRED_FIELDS, read_examples
from pitchtimbre.data.pitch_check import estimate_midi, pitch_errors_by_pitch
from pitchtimbre.data.render import RenderSummary, render_soundfont
from pitchtimbre.data.sf2_structure import GEN_SAMPLE_ID, RECORDS, SAMPLE_COMPRESSED, riff_lists
from pitchtimbre.data.soundfont import (
    available_renderers,
    default_soundfont,
    make_renderer,
    read_presets,
)
from pitchtimbre.errors import ConfigError, DataError

# both back ends the set-up installs (pyproject.toml: midirenderer a dependency, tinysoundfont
# a no-deps install): a missing one fails here instead of dropping out of the tests
BACKENDS = ("tinysoundfont", "midirenderer")


def test_default_soundfont_is_a_general_midi_bank():
    presets = read_presets(default_soundfont())
    assert (0, 0) in presets and (0, 40) in presets
    assert sum(1 for bank, _ in presets if bank == 0) >= 112


def test_missing_truncated_and_garbage_soundfonts_are_named(tmp_path):
    with pytest.raises(DataError, match=r"nowhere\.sf2: SoundFont not found"):
        read_presets(tmp_path / "nowhere.sf2")
    garbage = tmp_path / "garbage.sf2"
    garbage.write_bytes(b"this is not a soundfont at all")
    with pytest.raises(DataError, match=r"garbage\.sf2: is not a SoundFont"):
        read_presets(garbage)
    cut = tmp_path / "cut.sf2"
    cut.write_bytes(default_soundfont().read_bytes()[:100_000])
    with pytest.raises(DataError, match=r"cut\.sf2: SoundFont is truncated"):
        read_presets(cut)
    with pytest.raises(DataError, match=r"cut\.sf2"):
        render_soundfont(
            RenderConfig(soundfont=str(cut), programs=(0,)), tmp_path / "out", progress=False
        )


def damaged_soundfont(folder: Path, table: bytes, record: int, field: str, value: int) -> Path:
    """TimGM6mb.sf2 with one field of one record of a ``pdta`` table overwritten."""
    data = bytearray(default_soundfont().read_bytes())
    start, size = riff_lists(bytes(data), Path("TimGM6mb.sf2"))[b"pdta"][table]
    records = np.frombuffer(data, RECORDS[table], size // RECORDS[table].itemsize, start)
    records[field][record] = value  # a view: writes into ``data``
    path = folder / f"{table.decode()}-{record}-{field}.sf2"
    path.write_bytes(bytes(data))
    return path


def first_sample_generator() -> int:
    data = default_soundfont().read_bytes()
    start, size = riff_lists(data, Path("TimGM6mb.sf2"))[b"pdta"][b"igen"]
    igen = np.frombuffer(data, RECORDS[b"igen"], size // 4, start)
    return int(np.flatnonzero(igen["oper"] == GEN_SAMPLE_ID)[0])


@pytest.mark.parametrize(
    ("table", "record", "field", "value", "message"),
    [
        (b"pbag", 5, "gen", 0xFFFF, "its pbag table's gen indices decrease or point past"),
        (b"phdr", 3, "bag", 0, "its phdr table's bag indices decrease"),
        (b"ibag", 9, "mod", 0xFFFF, "its ibag table's mod indices"),
        (None, None, "amount", 60000, "its igen table names an entry past the end of shdr"),
        (b"shdr", 0, "end", 0xFFFFFF00, "a sample header points outside the sample data"),
    ],
)
def test_a_damaged_soundfont_is_refused_before_a_synthesizer_reads_it(
    tmp_path, table, record, field, value, message
):
    """One wrong index in a SoundFont's tables made tinysoundfont read outside the file and
    kill the process (a notebook's kernel) without a word; such a file is refused by name."""
    if table is None:  # the sample a zone of an instrument plays
        table, record = b"igen", first_sample_generator()
    path = damaged_soundfont(tmp_path, table, record, field, value)
    with pytest.raises(DataError, match=rf"{path.name}: SoundFont is damaged \({message}"):
        read_presets(path)
    with pytest.raises(DataError, match=rf"{path.name}: SoundFont is damaged"):
        render_soundfont(
            RenderConfig(soundfont=str(path), programs=(0,)), tmp_path / "out", progress=False
        )
    for backend in BACKENDS:
        with pytest.raises(DataError, match=rf"{path.name}: SoundFont is damaged"):
            make_renderer(path, 16000, backend)


def test_a_repeated_table_is_refused_since_a_reader_may_take_the_unchecked_copy(tmp_path):
    """tinysoundfont reads the last of two pbag chunks: a damaged second copy behind a good
    first one crashed it while the check passed."""
    data = default_soundfont().read_bytes()
    start, size = riff_lists(data, Path("TimGM6mb.sf2"))[b"pdta"][b"pbag"]
    copy = data[start - 8 : start + size]  # the pbag chunk, header included
    riff = int.from_bytes(data[4:8], "little")
    # append the copy at the end of pdta (the last list of the file) and grow both sizes
    pdta_at = data.rindex(b"LIST", 0, start)
    pdta_size = int.from_bytes(data[pdta_at + 4 : pdta_at + 8], "little")
    grown = bytearray(data + copy)
    grown[4:8] = (riff + len(copy)).to_bytes(4, "little")
    grown[pdta_at + 4 : pdta_at + 8] = (pdta_size + len(copy)).to_bytes(4, "little")
    assert pdta_at + 8 + pdta_size == len(data)  # pdta ended the file
    path = tmp_path / "two-pbag.sf2"
    path.write_bytes(bytes(grown))
    with pytest.raises(
        DataError, match=r"two-pbag\.sf2: SoundFont is damaged \(two 'pbag' chunks in its 'pdta'"
    ):
        read_presets(path)


def test_sf3_loop_points_count_decoded_frames_and_loose_loops_are_accepted(tmp_path):
    """An SF3 sample's start and end are bytes of its Ogg data and its loop points frames of
    the decoded sound, which may lie past those bytes; loose loop points in any file are
    clamped by the readers, so neither makes a file damaged."""
    loose = damaged_soundfont(tmp_path, b"shdr", 0, "end_loop", 0xFFFFFF00)
    assert read_presets(loose) == read_presets(default_soundfont())
    data = bytearray(default_soundfont().read_bytes())
    smpl_bytes = riff_lists(bytes(data), Path("x"))[b"sdta"][b"smpl"][1]
    start, size = riff_lists(bytes(data), Path("x"))[b"pdta"][b"shdr"]
    shdr = np.frombuffer(data, RECORDS[b"shdr"], size // 46, start)
    shdr["type"][0] |= SAMPLE_COMPRESSED
    shdr["start"][0], shdr["end"][0] = 0, smpl_bytes  # a byte range: fits
    shdr["start_loop"][0], shdr["end_loop"][0] = smpl_bytes, 2 * smpl_bytes  # frames: may
    sf3 = tmp_path / "compressed.sf3"
    sf3.write_bytes(bytes(data))
    assert read_presets(sf3)
    shdr["end"][0] = smpl_bytes + 1  # one byte past the data
    sf3.write_bytes(bytes(data))
    with pytest.raises(DataError, match="a sample header points outside the sample data"):
        read_presets(sf3)


def test_the_set_up_installs_both_back_ends_fastest_first():
    assert available_renderers() == list(BACKENDS)


@pytest.mark.parametrize("backend", BACKENDS)
def test_each_backend_renders_the_requested_pitch_deterministically(backend):
    r = make_renderer(default_soundfont(), 16000, backend)
    notes = r.render_program(0, 0, [(60, 100), (67, 100)], 0.75, 0.25)
    assert [len(n) for n in notes] == [16000, 16000]
    est = estimate_midi(np.stack(notes), 60, 16000)
    assert abs(est[0] - 60) < 0.5 and abs(est[1] - 67) < 0.5
    again = r.render_program(0, 0, [(67, 100)], 0.75, 0.25)[0]
    assert np.array_equal(again, notes[1]), "a note must not depend on what was rendered before"


def test_midirenderer_refuses_other_banks_instead_of_rendering_bank_0():
    r = make_renderer(default_soundfont(), 16000, "midirenderer")
    with pytest.raises(DataError, match=r"RenderConfig\.bank: .*bank 0 only, got 8.*tinysoundfont"):
        r.render_program(8, 0, [(60, 100)], 0.75, 0.25)


def test_unknown_renderer_is_a_clear_error(monkeypatch):
    import pitchtimbre.data.soundfont as sfmod

    monkeypatch.setattr(sfmod, "available_renderers", lambda: ["midirenderer"])
    with pytest.raises(
        DataError, match=r"render\.renderer: 'tinysoundfont' is not installed.*--no-deps"
    ):
        make_renderer(default_soundfont(), 16000, "tinysoundfont")


def test_render_writes_nsynth_layout(small_render, small_render_config):
    table = json.loads((small_render / "examples.json").read_text())
    first = next(iter(table.values()))
    assert set(REQUIRED_FIELDS) <= set(first)
    records = read_examples(small_render)
    assert {r.pitch for r in records} <= set(range(60, 65))
    assert {r.velocity for r in records} == {80, 110}
    audio, sr = soundfile.read(records[0].audio_path)
    assert sr == 16000 and audio.ndim == 1 and len(audio) == 16000
    assert (
        records[0].note_str
        == f"{records[0].instrument_str}-{records[0].pitch:03d}-{records[0].velocity:03d}"
    )
    summary = RenderSummary.load(small_render)
    # program 113 is percussive: excluded and counted, never written
    assert summary.excluded["percussive_or_effects_program"] == 10
    assert all(r.instrument % 128 != 113 for r in records)
    assert summary.written == len(records)
    assert summary.requested == len(small_render_config.programs) * 10


def test_a_rendered_source_names_its_instruments_by_their_presets(small_render):
    from pitchtimbre.config import DataConfig, FeatureConfig
    from pitchtimbre.data import load_dataset

    ds = load_dataset(
        DataConfig(source=str(small_render), heldout_per_family=1), FeatureConfig(), progress=False
    )
    presets = RenderSummary.load(small_render).instruments
    assert ds.preset_names == {n: presets[n] for n in ds.instrument_names}
    i = ds.instrument_names.index(next(n for n in ds.instrument_names if n.endswith("_000")))
    assert ds.instrument_label(i) == "Piano 1 (piano_timgm6mb_000)"
    assert ds.instrument_label(i, short=True) == presets[ds.instrument_names[i]]
    assert ds.heldout().preset_names == ds.preset_names


def test_a_damaged_render_summary_is_named_with_its_field(tmp_path, small_render):
    import dataclasses
    import json
    import shutil

    from pitchtimbre.config import DataConfig, FeatureConfig
    from pitchtimbre.data import load_dataset
    from pitchtimbre.data.render import _SUMMARY_TYPES, SUMMARY_FILE

    assert set(_SUMMARY_TYPES) == {f.name for f in dataclasses.fields(RenderSummary)}
    folder = tmp_path / "notes"
    shutil.copytree(small_render, folder)
    good = json.loads((folder / SUMMARY_FILE).read_text())
    cut = dict(good)
    del cut["renderer"]
    for text, problem in (
        ('{"soundfont": ', "not readable JSON"),
        ("[1, 2]", "must hold a JSON object"),
        (json.dumps(cut), "missing field 'renderer'"),
        (json.dumps({**good, "instruments": None}), "field 'instruments' has a wrong type"),
        (json.dumps({**good, "excluded": {"silent": "3"}}), "field 'excluded' has a wrong type"),
        (json.dumps({**good, "written": True}), "field 'written' has a wrong type"),
    ):
        (folder / SUMMARY_FILE).write_text(text)
        with pytest.raises(DataError, match=f"render_summary.json: {problem}") as err:
            RenderSummary.load(folder)
        assert "render the notes again: delete the folder if it is in the package's cache" in str(
            err.value
        )
    with pytest.raises(DataError, match="wrong type"):  # where a reader meets it
        load_dataset(DataConfig(source=str(folder)), FeatureConfig(), progress=False)
    # a newer version's summary (the cache is shared by every environment): its new field aside
    (folder / SUMMARY_FILE).write_text(json.dumps({**good, "version": 2}))
    assert RenderSummary.load(folder) == RenderSummary.load(small_render)


def test_render_is_byte_deterministic(tmp_path, small_render):
    cfg = RenderConfig(programs=(0, 24), pitch_range=(60, 61), velocities=(80,))
    render_soundfont(cfg, tmp_path / "again", progress=False)
    for wav in sorted((tmp_path / "again" / "audio").glob("*.wav")):
        twin = small_render / "audio" / wav.name
        assert (
            hashlib.sha256(wav.read_bytes()).digest() == hashlib.sha256(twin.read_bytes()).digest()
        )


def test_a_folder_holding_another_examples_json_is_refused_untouched(tmp_path, small_render):
    theirs = tmp_path / "nsynth-test"
    (theirs / "audio").mkdir(parents=True)
    index = '{"keyboard_acoustic_004-060-100": {"pitch": 60}}'
    (theirs / "examples.json").write_text(index)
    cfg = RenderConfig(programs=(0,), pitch_range=(60, 60), velocities=(80,), pitch_check=False)
    with pytest.raises(ConfigError, match=r"nsynth-test: holds an examples.json that no render"):
        render_soundfont(cfg, theirs, progress=False)
    assert (theirs / "examples.json").read_text() == index
    assert not any((theirs / "audio").iterdir())
    code = main(["render", "--out", str(theirs), "--programs", "0", "--pitches", "60:60",
                 "--velocities", "80", "--no-pitch-check", "--quiet"])  # fmt: skip
    assert code == 2 and (theirs / "examples.json").read_text() == index
    again = tmp_path / "again"  # an earlier render's folder is rendered into again
    render_soundfont(cfg, again, progress=False)
    assert render_soundfont(cfg, again, progress=False).written == 1


def test_rendering_again_into_a_folder_keeps_only_the_new_notes(tmp_path):
    out = tmp_path / "notes"
    two = RenderConfig(programs=(0, 1), pitch_range=(60, 61), velocities=(80,), pitch_check=False)
    render_soundfont(two, out, progress=False)
    assert len(list((out / "audio").iterdir())) == 4
    one = dataclasses.replace(two, programs=(0,))
    render_soundfont(one, out, progress=False)
    listed = {r.audio_path.name for r in read_examples(out)}
    assert {p.name for p in (out / "audio").iterdir()} == listed and len(listed) == 2
    # a render that fails leaves no examples.json listing wavs it overwrote or removed, and
    # the next one still removes what the earlier ones left
    render_soundfont(two, out, progress=False)
    with pytest.raises(DataError, match="no note survived"):
        render_soundfont(dataclasses.replace(one, programs=(120,)), out, progress=False)
    assert not (out / "examples.json").exists()
    assert len(list((out / "audio").iterdir())) == 4
    render_soundfont(one, out, progress=False)
    assert {r.audio_path.name for r in read_examples(out)} == listed
    assert {p.name for p in (out / "audio").iterdir()} == listed
    assert sorted(p.name for p in out.iterdir()) == [
        "audio",
        "examples.json",
        "render_summary.json",
    ]


def test_off_pitch_presets_are_excluded_and_counted(tmp_path):
    # TimGM6mb's organs with a 16' footage (programs 16-19) sound an octave below the key
    summary = render_soundfont(
        RenderConfig(programs=(0, 16), pitch_range=(60, 62), velocities=(90,)),
        tmp_path / "r",
        progress=False,
    )
    assert summary.excluded.get("off_pitch", 0) == 3
    assert {r.instrument for r in read_examples(tmp_path / "r")} == {0}
    unchecked = render_soundfont(
        RenderConfig(programs=(0, 16), pitch_range=(60, 62), velocities=(90,), pitch_check=False),
        tmp_path / "u",
        progress=False,
    )
    assert unchecked.written == 6


def _tones(pitches: dict[int, float], notes: int = 3) -> dict[int, np.ndarray]:
    """``notes`` sine tones per requested pitch, each sounding ``pitches[p]`` semitones away."""
    t = np.arange(6400) / 16000
    return {
        p: np.stack(
            [
                np.sin(2 * np.pi * 440 * 2 ** ((p + off - 69) / 12) * t * (1 + 1e-4 * i))
                for i in range(notes)
            ]
        ).astype(np.float32)
        for p, off in pitches.items()
    }


def _spy_on_jobs(monkeypatch, in_process: bool = False) -> list[int]:
    """Record the number of processes each joblib.Parallel the pitch check makes asks for
    (and with ``in_process``, run its jobs here instead of starting them)."""
    import joblib

    asked: list[int] = []

    class Recording(joblib.Parallel):
        def __init__(self, n_jobs=None, **kwargs):
            asked.append(n_jobs)
            super().__init__(n_jobs=1 if in_process else n_jobs, **kwargs)

    monkeypatch.setattr(joblib, "Parallel", Recording)
    return asked


def _checked_here(monkeypatch) -> list[int]:
    """The pitches whose group the pitch check runs in this process."""
    here: list[int] = []
    parent, real = os.getpid(), pitch_check.pitch_error_cents

    def recording(audio, midi, sample_rate):
        if os.getpid() == parent:
            here.append(midi)
        return real(audio, midi, sample_rate)

    monkeypatch.setattr(pitch_check, "pitch_error_cents", recording)
    return here


@pytest.mark.parametrize("sample_rate", [16000, 44100])
def test_the_lowest_checkable_pitch_is_checked_without_librosas_warning(sample_rate):
    """Below it, librosa warns at every note that pyin's frame holds less than two periods
    (render --pitches 20:30 printed two warnings a pitch)."""
    import warnings

    from pitchtimbre.data.pitch_check import lowest_checkable_pitch

    low = lowest_checkable_pitch(sample_rate)
    t = np.arange(sample_rate) / sample_rate

    def tone(midi: int) -> np.ndarray:
        return np.sin(2 * np.pi * 440 * 2 ** ((midi - 69) / 12) * t)[None].astype(np.float32)

    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert abs(estimate_midi(tone(low), low, sample_rate)[0] - low) < 0.5
    with pytest.warns(UserWarning, match="less than two periods"):
        estimate_midi(tone(low - 1), low - 1, sample_rate)


def test_a_crashed_pitch_check_worker_is_a_clear_error(monkeypatch):
    heads = _tones({60: 0.0, 64: 0.0, 67: 0.0}, notes=2)
    parent, real = os.getpid(), pitch_check.pitch_error_cents

    def crashing(audio, midi, sample_rate):
        if os.getpid() != parent:  # what a damaged numba cache does to a worker
            os.kill(os.getpid(), signal.SIGSEGV)
        return real(audio, midi, sample_rate)

    monkeypatch.setattr(pitch_check, "pitch_error_cents", crashing)
    with pytest.raises(DataError, match=r"a worker process crashed .*numba issue #10128"):
        pitch_errors_by_pitch(heads, 16000, workers=2, min_notes_for_processes=1)


def test_pitch_check_in_worker_processes_matches_one_process(monkeypatch):
    # 48 notes a pitch: 1.2 MB a group, over joblib's 1 MB, so the workers get memory maps
    heads = _tones({60: 0.0, 64: 0.0, 67: 1.0, 70: -0.3}, notes=48)  # 67: a semitone sharp
    asked = _spy_on_jobs(monkeypatch)
    alone = pitch_errors_by_pitch(heads, 16000, workers=1)
    here = _checked_here(monkeypatch)
    shared = pitch_errors_by_pitch(heads, 16000, workers=2, min_notes_for_processes=1)
    assert asked == [1, 2]
    assert here == [60]  # the first group in this process, before the workers start
    assert list(shared) == [60, 64, 67, 70]
    for p in heads:
        np.testing.assert_array_equal(shared[p], alone[p])
    assert (alone[60] < 10).all() and (alone[64] < 10).all()
    assert (np.abs(alone[67] - 100) < 10).all() and (np.abs(alone[70] - 30) < 10).all()


def test_pitch_check_stays_in_process_for_few_notes_and_validates_workers(monkeypatch):
    heads = _tones({60: 0.0, 62: 0.0}, notes=2)
    asked = _spy_on_jobs(monkeypatch, in_process=True)
    pitch_errors_by_pitch(heads, 16000)  # 4 notes: far below MIN_NOTES_FOR_PROCESSES
    import joblib

    monkeypatch.setattr(joblib, "cpu_count", lambda: 64)
    pitch_errors_by_pitch(heads, 16000, min_notes_for_processes=1)  # no more than pitches
    many = _tones({p: 0.0 for p in range(40, 52)}, notes=1)
    pitch_errors_by_pitch(many, 16000, min_notes_for_processes=1)  # at most MAX_PROCESSES
    assert pitch_errors_by_pitch({}, 16000, min_notes_for_processes=0) == {}
    # two pitches: the first is checked here, which leaves one for a single process
    assert asked == [1, 1, pitch_check.MAX_PROCESSES, 1]
    for bad in (0, -1, 1.5, True, "2"):
        with pytest.raises(ValueError, match="workers: must be None or an int >= 1"):
            pitch_errors_by_pitch(heads, 16000, workers=bad)


def test_missing_presets_are_counted(tmp_path, monkeypatch):
    import pitchtimbre.data.render as render_mod

    real = render_mod.read_presets
    monkeypatch.setattr(
        render_mod, "read_presets", lambda p: {k: v for k, v in real(p).items() if k != (0, 1)}
    )
    summary = render_soundfont(
        RenderConfig(programs=(0, 1), pitch_range=(60, 60), velocities=(90,)),
        tmp_path / "r",
        progress=False,
    )
    assert summary.excluded == {"preset_missing_from_soundfont": 1}


def test_nothing_survives_is_an_error(tmp_path):
    with pytest.raises(DataError, match="no note survived"):
        render_soundfont(
            RenderConfig(programs=(120, 121), pitch_range=(60, 60)), tmp_path / "r", progress=False
        )


def test_cached_render_survives_interruption_and_a_concurrent_render(monkeypatch, tmp_path):
    import pitchtimbre.data.render as render_mod

    monkeypatch.setenv("PITCHTIMBRE_CACHE", str(tmp_path))

    cfg = RenderConfig(programs=(0,), pitch_range=(60, 60), velocities=(100,))
    real = render_mod.render_soundfont

    def interrupted(cfg, out, progress=True):
        real(cfg, out, progress=progress)
        raise KeyboardInterrupt

    monkeypatch.setattr(render_mod, "render_soundfont", interrupted)
    with pytest.raises(KeyboardInterrupt):
        render_mod.rendered_folder(cfg, progress=False)
    notes_dir = render_mod.cache_dir() / "notes"
    assert list(notes_dir.iterdir()) == [], "an interrupted render leaves nothing behind"

    def raced(cfg, out, progress=True):  # another process finishes first, then this one
        real(cfg, out, progress=progress)
        final = Path(out).parent / Path(out).name.split(".partial-")[0]
        real(cfg, final, progress=progress)

    monkeypatch.setattr(render_mod, "render_soundfont", raced)
    folder = render_mod.rendered_folder(cfg, progress=False)
    assert list(notes_dir.iterdir()) == [folder]
    assert len(read_examples(folder)) == 1


def test_render_cache_follows_the_soundfonts_content_not_its_path(monkeypatch, tmp_path):
    """A new virtual environment reinstalls the SoundFont elsewhere with a new modification
    time: the rendered notes (and so the features and models) must be reused."""
    import os

    import pitchtimbre.data.render as render_mod
    from pitchtimbre.data.nsynth import write_examples

    monkeypatch.setenv("PITCHTIMBRE_CACHE", str(tmp_path / "cache"))
    rendered: list[str] = []

    def fake_render(cfg, out, progress=True):
        rendered.append(cfg.soundfont)
        write_examples(out, [])

    monkeypatch.setattr(render_mod, "render_soundfont", fake_render)
    content = default_soundfont().read_bytes()
    first, moved, changed = (tmp_path / d / "bank.sf2" for d in ("a", "b", "c"))
    for path, data in ((first, content), (moved, content), (changed, content + b"\0")):
        path.parent.mkdir()
        path.write_bytes(data)
    os.utime(moved, (1_000_000, 1_000_000))

    def folder(sf: Path) -> Path:
        cfg = RenderConfig(soundfont=str(sf), programs=(0,), pitch_range=(60, 60))
        return render_mod.rendered_folder(cfg, progress=False)

    assert folder(first) == folder(moved)
    assert rendered == [str(first)]
    assert folder(changed) != folder(first)
    assert len(rendered) == 2
