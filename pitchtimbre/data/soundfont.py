"""Rendering isolated notes from a SoundFont (.sf2/.sf3).

Two back ends give the same interface: ``tinysoundfont`` (in-process, about 0.7 ms a note,
installed by the set-up script) and ``midirenderer`` (a dependency-free wheel that renders a
MIDI file at 48 kHz; slower, used when tinysoundfont is missing). Both are deterministic:
the same request gives the same samples, whatever was rendered before.

Chapter: 02_data
"""

from __future__ import annotations

import importlib.util
import io
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import numpy as np

from ..errors import DataError
from .sf2_structure import check_hydra


def default_soundfont() -> Path:
    """The General MIDI bank TimGM6mb.sf2 that ships inside the pretty_midi wheel.

    Chapter: 02_data
    """
    spec = importlib.util.find_spec("pretty_midi")
    if spec is None or spec.origin is None:
        raise DataError(
            "pretty_midi is not installed: run `pip install pretty_midi` (it ships TimGM6mb.sf2)"
        )
    path = Path(spec.origin).parent / "TimGM6mb.sf2"
    if not path.is_file():
        raise DataError(
            f"{path}: TimGM6mb.sf2 missing from pretty_midi; reinstall pretty_midi or pass --soundfont"
        )
    return path


@dataclass(frozen=True)
class Preset:
    """One instrument of a SoundFont: its bank, GM program and name.

    Chapter: 02_data
    """

    bank: int
    program: int
    name: str


def read_presets(path: Path | str) -> dict[tuple[int, int], Preset]:
    """The presets of a SoundFont, keyed by (bank, program), read from its RIFF 'phdr' chunk.

    Raises :class:`DataError` naming the file when it is missing, not a SoundFont, cut short,
    or damaged (an index in its tables pointing outside them, see :mod:`.sf2_structure`).

    Chapter: 02_data
    """
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path}: SoundFont not found; pass an existing .sf2/.sf3 file")
    data = path.read_bytes()
    # the header, the size and every index checked before a synthesizer, which trusts them,
    # reads the file
    phdr = check_hydra(data, path)[b"phdr"]
    presets: dict[tuple[int, int], Preset] = {}
    for raw_name, program, bank in phdr[["name", "program", "bank"]][:-1].tolist():
        # the last record is the terminal 'EOP'
        name = raw_name.split(b"\0", 1)[0].decode("latin-1").strip()
        presets[(bank, program)] = Preset(bank=bank, program=program, name=name)
    return presets


class NoteRenderer(Protocol):
    """Renders mono float32 notes at ``sample_rate`` for one program at a time.

    Chapter: 02_data
    """

    name: str
    sample_rate: int

    def render_program(
        self, bank: int, program: int, notes: list[tuple[int, int]], hold_s: float, release_s: float
    ) -> list[np.ndarray]: ...


class TinySoundFontRenderer:
    """In-process rendering with tinysoundfont (one synth, state cleared between notes).

    Chapter: 02_data
    """

    name = "tinysoundfont"

    def __init__(self, soundfont: Path, sample_rate: int) -> None:
        import tinysoundfont

        self.sample_rate = sample_rate
        self._synth = tinysoundfont.Synth(samplerate=sample_rate)
        try:
            self._sfid = self._synth.sfload(str(soundfont))
        except Exception as exc:  # tinysoundfont raises RuntimeError on a bad file
            raise DataError(
                f"{soundfont}: tinysoundfont could not load it ({exc}); pass a valid .sf2/.sf3"
            ) from None

    def _stereo(self, n: int) -> np.ndarray:
        return np.frombuffer(self._synth.generate(n), dtype=np.float32).reshape(-1, 2)

    def _flush(self) -> None:
        """Run the synth until the last voice has faded to exact silence, so that the next
        note starts from the same state whatever was played before."""
        for _ in range(200):
            if not np.any(self._stereo(256)):
                return
        raise RuntimeError("tinysoundfont: a voice did not fall silent after sounds_off")

    def render_program(
        self, bank: int, program: int, notes: list[tuple[int, int]], hold_s: float, release_s: float
    ) -> list[np.ndarray]:
        hold = round(hold_s * self.sample_rate)
        release = round(release_s * self.sample_rate)
        out = []
        self._synth.program_select(0, self._sfid, bank, program)
        for pitch, velocity in notes:
            self._synth.noteon(0, pitch, velocity)
            on = self._stereo(hold)
            self._synth.noteoff(0, pitch)
            off = self._stereo(release) if release else np.zeros((0, 2), np.float32)
            self._synth.sounds_off()
            self._flush()
            out.append(np.concatenate([on, off]).mean(axis=1).astype(np.float32))
        return out


class MidiFileRenderer:
    """Rendering through ``midirenderer``: one small MIDI file per note, rendered at 48 kHz
    stereo, cut and resampled. Slower than tinysoundfont, but a plain wheel.

    One file per note (not one per program) keeps every note at the same position in its
    file, so a note never depends on the notes before it (the synth quantises event times
    to its blocks).

    Chapter: 02_data
    """

    name = "midirenderer"
    lead_in_s = 0.5

    def __init__(self, soundfont: Path, sample_rate: int) -> None:
        self.sample_rate = sample_rate
        self._soundfont = soundfont
        self._bytes = soundfont.read_bytes()

    def _midi(self, program: int, pitch: int, velocity: int, hold_s: float) -> bytes:
        import pretty_midi

        pm = pretty_midi.PrettyMIDI(initial_tempo=120.0)
        inst = pretty_midi.Instrument(program=program, is_drum=False)
        # dry notes: no reverb (CC 91) or chorus (CC 93) in the recording
        inst.control_changes += [
            pretty_midi.ControlChange(91, 0, 0.0),
            pretty_midi.ControlChange(93, 0, 0.0),
        ]
        start = self.lead_in_s
        inst.notes.append(
            pretty_midi.Note(velocity=velocity, pitch=pitch, start=start, end=start + hold_s)
        )
        pm.instruments.append(inst)
        buf = io.BytesIO()
        pm.write(buf)
        return buf.getvalue()

    def render_program(
        self, bank: int, program: int, notes: list[tuple[int, int]], hold_s: float, release_s: float
    ) -> list[np.ndarray]:
        import librosa
        import midirenderer
        import soundfile

        if bank != 0:
            # pretty_midi writes a program change before a bank select at the same instant,
            # so another bank would silently render bank 0's preset
            raise DataError(
                f"RenderConfig.bank: the midirenderer back end renders bank 0 only, got {bank}; "
                "install tinysoundfont (`pip install --no-deps tinysoundfont`) for other banks"
            )
        out = []
        for pitch, velocity in notes:
            try:
                wav = midirenderer.render_wave_from(
                    self._bytes, self._midi(program, pitch, velocity, hold_s)
                )
            except Exception as exc:
                raise DataError(
                    f"{self._soundfont}: midirenderer could not render it ({exc}); pass a valid .sf2/.sf3"
                ) from None
            audio, sr = soundfile.read(io.BytesIO(bytes(wav)), dtype="float32", always_2d=True)
            start = round(self.lead_in_s * sr)
            seg = np.zeros(round((hold_s + release_s) * sr), np.float32)
            piece = audio.mean(axis=1)[start : start + len(seg)]
            seg[: len(piece)] = piece
            if sr != self.sample_rate:
                seg = librosa.resample(
                    seg, orig_sr=sr, target_sr=self.sample_rate, res_type="soxr_hq"
                )
            out.append(seg.astype(np.float32))
        return out


def available_renderers() -> list[str]:
    """Back ends importable here, fastest first.

    Chapter: 02_data
    """
    names = []
    for module, name in (("tinysoundfont", "tinysoundfont"), ("midirenderer", "midirenderer")):
        if importlib.util.find_spec(module) is not None:
            names.append(name)
    return names


def make_renderer(soundfont: Path, sample_rate: int, name: str = "auto") -> NoteRenderer:
    """A renderer for ``soundfont``: ``name`` or, for 'auto', the fastest one installed.
    The file is checked first (:func:`read_presets`): a damaged one is a :class:`DataError`,
    never a crash inside the renderer.

    Chapter: 02_data
    """
    read_presets(soundfont)
    have = available_renderers()
    if name == "auto":
        if not have:
            raise DataError(
                "no SoundFont renderer installed: run `pip install --no-deps tinysoundfont` "
                "or `pip install midirenderer`"
            )
        name = have[0]
    if name not in have:
        hint = (
            "pip install --no-deps tinysoundfont"
            if name == "tinysoundfont"
            else f"pip install {name}"
        )
        raise DataError(f"render.renderer: {name!r} is not installed; run `{hint}` or use 'auto'")
    cls = TinySoundFontRenderer if name == "tinysoundfont" else MidiFileRenderer
    return cls(soundfont, sample_rate)
