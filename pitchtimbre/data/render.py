"""Rendering a SoundFont into an NSynth-layout folder: the embedded default data set.

Chapter: 02_data
"""

from __future__ import annotations

import functools
import json
import shutil
import time
from collections import Counter, defaultdict
from collections.abc import Callable
from dataclasses import MISSING, asdict, dataclass, field, fields
from pathlib import Path

import numpy as np

from ..cache import atomic_write_json, cache_dir, new_staging_folder, stable_hash
from ..config import RenderConfig
from ..errors import ConfigError, DataError
from .gm import GM_FAMILIES, gm_family, gm_program_name, slug
from .nsynth import NoteRecord, examples_path, sha256_file, write_examples
from .pitch_check import lowest_checkable_pitch, pitch_errors_by_pitch
from .soundfont import default_soundfont, make_renderer, read_presets

SOURCE_STR = "soundfont"
SOURCE_ID = 3
"""Rendered notes get their own instrument_source (NSynth uses 0-2)."""
FIRST_NON_MELODIC_PROGRAM = 112
"""GM programs 112-127 are percussive and sound effects, with no steady pitch: excluded by
default (``RenderConfig.include_non_melodic``)."""
SUMMARY_FILE = "render_summary.json"


@dataclass
class RenderSummary:
    """What a render produced and what it left out, and why.

    Chapter: 02_data
    """

    soundfont: str
    soundfont_sha256: str
    renderer: str
    requested: int = 0
    written: int = 0
    excluded: dict[str, int] = field(default_factory=dict)
    instruments: dict[str, str] = field(default_factory=dict)
    """instrument_str -> preset name, for every instrument with at least one note written."""
    seconds: float = 0.0

    @classmethod
    def load(cls, folder: Path) -> RenderSummary:
        """The summary a render wrote into ``folder``; a damaged one is a :class:`DataError`
        naming the file and the field. Fields it does not know (a newer version's, sharing
        the cache) are left aside.

        Chapter: 02_data
        """
        path = Path(folder) / SUMMARY_FILE
        again = (
            "render the notes again: delete the folder if it is in the package's cache (it is "
            "rendered again when next needed), else rerun the `python -m pitchtimbre render` "
            "that made it"
        )
        try:
            data = json.loads(path.read_text())
        except (json.JSONDecodeError, UnicodeDecodeError) as exc:
            raise DataError(f"{path}: not readable JSON ({exc}); {again}") from None
        if not isinstance(data, dict):
            raise DataError(f"{path}: must hold a JSON object; {again}")
        for f in fields(cls):
            if f.name not in data and MISSING is f.default is f.default_factory:
                raise DataError(f"{path}: missing field {f.name!r}; {again}")
        known = {name: value for name, value in data.items() if name in _SUMMARY_TYPES}
        for name, value in known.items():
            if not _SUMMARY_TYPES[name](value):
                raise DataError(f"{path}: field {name!r} has a wrong type ({value!r:.40}); {again}")
        return cls(**known)


def _is(value: object, kind: type | tuple[type, ...]) -> bool:
    """isinstance, with JSON's true and false not counted as numbers."""
    return isinstance(value, kind) and not isinstance(value, bool)


def _str_map(value: object, of: type) -> bool:
    return isinstance(value, dict) and all(_is(k, str) and _is(v, of) for k, v in value.items())


_SUMMARY_TYPES: dict[str, Callable[[object], bool]] = {
    "soundfont": lambda v: _is(v, str),
    "soundfont_sha256": lambda v: _is(v, str),
    "renderer": lambda v: _is(v, str),
    "requested": lambda v: _is(v, int),
    "written": lambda v: _is(v, int),
    "excluded": lambda v: _str_map(v, int),
    "instruments": lambda v: _str_map(v, str),
    "seconds": lambda v: _is(v, (int, float)),
}
"""How each field of a render summary is checked when read back."""


def resolve_soundfont(cfg: RenderConfig) -> Path:
    """The SoundFont a render uses: ``cfg.soundfont``, else the bank shipped in pretty_midi.

    Chapter: 02_data
    """
    return Path(cfg.soundfont).expanduser() if cfg.soundfont else default_soundfont()


def instrument_str(soundfont: Path, bank: int, program: int) -> str:
    """NSynth-style instrument name: '<gm family>_<soundfont>_<program>'.

    Chapter: 02_data
    """
    number = f"{bank:03d}{program:03d}" if bank else f"{program:03d}"
    return f"{GM_FAMILIES[gm_family(program)]}_{slug(soundfont.stem)}_{number}"


def render_soundfont(cfg: RenderConfig, out: Path | str, progress: bool = True) -> RenderSummary:
    """Render every (program, pitch, velocity) of ``cfg`` into ``out`` in NSynth layout.

    Programs 112-127, presets the SoundFont lacks, silent notes and notes whose pyin pitch
    is off by more than ``cfg.pitch_tolerance_cents`` are left out and counted in the
    summary (``render_summary.json``). ``examples.json`` is written last, atomically, so a
    folder without it is an unfinished render. Deterministic: the same config and SoundFont
    give the same wav bytes. A folder holding an ``examples.json`` that no render wrote (an
    NSynth split, say) is refused before anything is written. An earlier render's is
    removed before the first wav is written (its wavs are overwritten, so it would list
    notes that changed or are gone) and replaced at the end; the wavs it listed that the new
    render does not are removed then (:data:`EARLIER_NOTES_FILE` keeps the list meanwhile).

    Chapter: 02_data
    """
    import soundfile
    from tqdm.auto import tqdm

    out = Path(out)
    if examples_path(out).exists() and not (out / SUMMARY_FILE).exists():
        raise ConfigError(
            f"{out}: holds an examples.json that no render wrote (an NSynth folder?), which "
            "this render would replace; render into a new or empty folder"
        )
    t0 = time.perf_counter()
    lowest = lowest_checkable_pitch(cfg.sample_rate)
    if cfg.pitch_check and cfg.pitch_range[0] < lowest:
        raise ConfigError(
            f"RenderConfig.pitch_range: the pitch check (pyin) needs MIDI >= {lowest} at "
            f"{cfg.sample_rate} Hz, got {cfg.pitch_range[0]}; raise the lowest pitch or turn "
            "the check off (RenderConfig.pitch_check=False; `render --no-pitch-check`)"
        )
    sf_path = resolve_soundfont(cfg)
    presets = read_presets(sf_path)  # validates the file: clear error when missing/corrupt
    renderer = make_renderer(sf_path, cfg.sample_rate, cfg.renderer)
    earlier = _earlier_render_notes(out)  # and unlists them: the folder is unfinished now
    audio_dir = out / "audio"
    audio_dir.mkdir(parents=True, exist_ok=True)
    summary = RenderSummary(
        soundfont=str(sf_path),
        soundfont_sha256=sha256_file(sf_path),
        renderer=renderer.name,
    )
    excluded: Counter[str] = Counter()
    grid = [(p, v) for p in cfg.pitches for v in cfg.velocities]
    silence = 10 ** (cfg.silence_db / 20)
    candidates: list[NoteRecord] = []
    onsets: dict[int, list[tuple[int, np.ndarray]]] = defaultdict(list)  # pitch -> (index, head)
    head_len = round(0.4 * cfg.sample_rate)
    names: dict[str, str] = {}

    bar = tqdm(cfg.programs, desc=f"render {sf_path.name}", unit="program", disable=not progress)
    for program in bar:
        summary.requested += len(grid)
        if program >= FIRST_NON_MELODIC_PROGRAM and not cfg.include_non_melodic:
            excluded["percussive_or_effects_program"] += len(grid)
            continue
        if (cfg.bank, program) not in presets:
            excluded["preset_missing_from_soundfont"] += len(grid)
            continue
        inst = instrument_str(sf_path, cfg.bank, program)
        names[inst] = presets[(cfg.bank, program)].name or gm_program_name(program)
        notes = renderer.render_program(cfg.bank, program, grid, cfg.hold_s, cfg.release_s)
        for (pitch, velocity), audio in zip(grid, notes, strict=True):
            peak = float(np.max(np.abs(audio))) if audio.size else 0.0
            if peak < silence:
                excluded["silent"] += 1
                continue
            if peak > 1.0:
                excluded["clipped"] += 1
                continue
            rec = NoteRecord(
                note_str=f"{inst}-{pitch:03d}-{velocity:03d}",
                pitch=pitch,
                velocity=velocity,
                instrument=cfg.bank * 128 + program,
                instrument_str=inst,
                instrument_family=gm_family(program),
                instrument_family_str=GM_FAMILIES[gm_family(program)],
                instrument_source=SOURCE_ID,
                instrument_source_str=SOURCE_STR,
                sample_rate=cfg.sample_rate,
                audio_path=audio_dir / f"{inst}-{pitch:03d}-{velocity:03d}.wav",
            )
            soundfile.write(rec.audio_path, audio, cfg.sample_rate, subtype="PCM_16")
            onsets[pitch].append((len(candidates), audio[:head_len]))
            candidates.append(rec)

    keep = np.ones(len(candidates), dtype=bool)
    if cfg.pitch_check and candidates:
        rows = {p: np.asarray([i for i, _ in onsets[p]]) for p in onsets}
        heads: dict[int, np.ndarray] = {}
        for p in list(onsets):  # popped as stacked: one pitch at a time is held twice
            heads[p] = np.stack([np.pad(h, (0, head_len - len(h))) for _, h in onsets.pop(p)])
        errors = pitch_errors_by_pitch(heads, cfg.sample_rate, progress=progress)
        for pitch, err in errors.items():
            keep[rows[pitch][err > cfg.pitch_tolerance_cents]] = False
        if (~keep).any():
            excluded["off_pitch"] += int((~keep).sum())
    records = [r for r, k in zip(candidates, keep, strict=True) if k]
    for r, k in zip(candidates, keep, strict=True):
        if not k:
            r.audio_path.unlink(missing_ok=True)
    if not records:
        raise DataError(
            f"{sf_path}: no note survived rendering ({dict(excluded)}); check --programs, "
            "--pitches, --velocities (very soft notes fall below silence_db) and that the "
            f"SoundFont has melodic presets in bank {cfg.bank}"
        )
    summary.written = len(records)
    summary.excluded = dict(sorted(excluded.items()))
    kept = {r.instrument_str for r in records}
    summary.instruments = {k: v for k, v in sorted(names.items()) if k in kept}
    summary.seconds = round(time.perf_counter() - t0, 2)
    atomic_write_json(out / SUMMARY_FILE, asdict(summary))
    write_examples(out, records)
    for note in earlier - {r.note_str for r in records}:
        if Path(note).name == note:  # a name, not a path
            (audio_dir / f"{note}.wav").unlink(missing_ok=True)
    (out / EARLIER_NOTES_FILE).unlink(missing_ok=True)
    return summary


EARLIER_NOTES_FILE = "examples.earlier.json"
"""In a render folder while it is rendered again: the notes earlier renders listed, kept
until the new render has finished and removed those it did not write (so a render that
fails or is interrupted loses none of them)."""


def _notes_listed(path: Path) -> set[str]:
    try:
        listed = json.loads(path.read_text())
    except (OSError, ValueError):  # missing, or unreadable: its wavs stay, unlisted
        return set()
    return {n for n in listed if isinstance(n, str)} if isinstance(listed, dict | list) else set()


def _earlier_render_notes(out: Path) -> set[str]:
    """The notes earlier renders into ``out`` listed (those of a failed or interrupted
    re-render included), kept in :data:`EARLIER_NOTES_FILE`; examples.json is removed."""
    index, kept = examples_path(out), out / EARLIER_NOTES_FILE
    notes = _notes_listed(kept) | _notes_listed(index)  # either may be missing
    if notes:
        atomic_write_json(kept, sorted(notes))
    index.unlink(missing_ok=True)
    return notes


def _soundfont_digest(path: Path) -> str:
    """The SoundFont's sha256, read once per process for an unchanged file (every chapter
    loads the data again; a large SoundFont takes seconds to hash)."""
    st = path.stat()
    return _digest_of(str(path.resolve()), st.st_size, st.st_mtime_ns)


@functools.lru_cache(maxsize=8)
def _digest_of(path: str, size: int, mtime_ns: int) -> str:
    return sha256_file(Path(path))


def rendered_folder(cfg: RenderConfig, progress: bool = True) -> Path:
    """The cached render of ``cfg``: rendered once into the package cache, then reused.

    The folder is keyed by a hash of the render settings, the renderer and the SoundFont's
    file name and content (not its folder or modification time: a reinstalled ``pretty_midi``
    or a new virtual environment reuses the notes, the features and the trained models). It
    is built under a temporary name and renamed when complete, so an interrupted render is
    never mistaken for a finished one.

    Chapter: 02_data
    """
    from .soundfont import available_renderers

    sf_path = resolve_soundfont(cfg)
    if not sf_path.is_file():
        raise DataError(f"{sf_path}: SoundFont not found; pass an existing .sf2/.sf3 file")
    renderer = cfg.renderer if cfg.renderer != "auto" else (available_renderers() or ["none"])[0]
    key = stable_hash(
        {
            # the path is left out: the rendered notes depend on the file, not where it lies
            "render": {**cfg.to_dict(), "soundfont": None},
            "sf": [sf_path.name, _soundfont_digest(sf_path)],
            "r": renderer,
        }
    )
    folder = cache_dir() / "notes" / f"{slug(sf_path.stem)}-{key}"
    if examples_path(folder).is_file():
        return folder
    folder.parent.mkdir(parents=True, exist_ok=True)
    # a staging folder of this process's own: two kernels rendering at once never share one
    staging = new_staging_folder(folder.parent, folder.name + ".partial-")
    try:
        render_soundfont(cfg, staging, progress=progress)
        try:
            staging.rename(folder)
        except OSError:
            if not examples_path(folder).is_file():  # not a concurrent render that finished
                raise
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return folder
