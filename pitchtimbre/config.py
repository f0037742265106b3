"""Every setting of the package, in one place: validated dataclasses and the three profiles.

The poster states the model, the contrastive terms and the metrics; everything else is our
choice, and each choice is a field here, so a reader can change it with
``config.with_overrides({"loss.lambda_pitch": 1.0})`` instead of editing code.

Profiles (``ci``, ``cpu``, ``gpu``) size the experiment: ``ci`` runs every chapter in
minutes on two CPU cores, ``cpu`` reproduces the poster's directions on a laptop, ``gpu``
is the full reproduction and is chosen automatically when CUDA is available.

Chapter: 01_introduction
"""

from __future__ import annotations

import dataclasses
import math
import os
import re
import types
import typing
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any, Literal, TypeVar

from .errors import ConfigError

PROFILE_ENV = "PITCHTIMBRE_PROFILE"
PROFILES = ("ci", "cpu", "gpu")

T = TypeVar("T")


def _fail(obj: object, name: str, must: str) -> None:
    value = getattr(obj, name)
    shown = repr(value)
    if len(shown) > 100:  # a tuple of 200 programs, say
        size = f", {len(value)} items" if isinstance(value, tuple | list) else ""
        shown = f"{shown[:80]}...{shown[-10:]}{size}"
    raise ConfigError(f"{type(obj).__name__}.{name}: must be {must}, got {shown}")


def _check(obj: object, name: str, ok: bool, must: str) -> None:
    if not ok:
        _fail(obj, name, must)


class _Config:
    """Shared helpers: the type check of every field, dict round trip and dotted overrides."""

    def __post_init__(self) -> None:
        """Every field of the type its annotation names (a list where a tuple is wanted is
        taken as the tuple), so that ``"no"`` for a bool or ``"80"`` for a tuple of ints
        fails here, naming the field, instead of meaning something else later. Each
        config's own ``__post_init__`` calls this first, then checks ranges.

        Chapter: 01_introduction
        """
        hints = typing.get_type_hints(type(self))
        for f in fields(self):  # type: ignore[arg-type]
            value = getattr(self, f.name)
            plain = _plain_scalars(value)
            if isinstance(plain, list) and any(
                typing.get_origin(a) is tuple for a in _union_args(hints[f.name])
            ):
                plain = _coerce_plain(plain)
            if plain is not value:
                value = plain
                object.__setattr__(self, f.name, value)  # frozen: set once, before use
            if not _has_type(value, hints[f.name]):
                _fail(self, f.name, _type_name(hints[f.name]))

    def to_dict(self) -> dict[str, Any]:
        """The settings as plain data; a float field set to an int reads as a float, so
        ``lambda_pitch=20`` and ``20.0`` are the same setting (and the same cache key)."""
        return _floats_as_floats(type(self), dataclasses.asdict(self))  # type: ignore[call-overload]

    @classmethod
    def from_dict(cls: type[T], data: dict[str, Any]) -> T:
        return _from_dict(cls, data, cls.__name__)

    def with_overrides(self: T, overrides: dict[str, Any]) -> T:
        """A copy with dotted fields replaced, e.g. ``{"loss.lambda_pitch": 0.0}``.

        Chapter: 05_training
        """
        data = self.to_dict()  # type: ignore[attr-defined]
        for dotted, value in overrides.items():
            node = data
            parts = dotted.split(".")
            for part in parts[:-1]:
                if not isinstance(node, dict) or part not in node:
                    raise ConfigError(f"{type(self).__name__}: no field {dotted!r}")
                node = node[part]
            if not isinstance(node, dict) or parts[-1] not in node:
                raise ConfigError(f"{type(self).__name__}: no field {dotted!r}")
            node[parts[-1]] = _merged(node[parts[-1]], value, f"{type(self).__name__}.{dotted}")
        return type(self).from_dict(data)  # type: ignore[attr-defined]


def _merged(old: Any, new: Any, where: str) -> Any:
    """``new`` over ``old``: a mapping given for a group of settings replaces only the fields
    it names (``{"features": {"n_frames": 32}}`` keeps the other feature settings)."""
    if not (isinstance(old, dict) and isinstance(new, dict)):
        return new
    merged = dict(old)
    for key, value in new.items():
        if key not in old:
            raise ConfigError(f"{where}: no field {key!r}; fields are {sorted(old)}")
        merged[key] = _merged(old[key], value, f"{where}.{key}")
    return merged


def _union_args(hint: Any) -> tuple[Any, ...]:
    if typing.get_origin(hint) in (typing.Union, types.UnionType):
        return typing.get_args(hint)
    return (hint,)


def _wants_float(hint: Any) -> bool:
    """A float field (maybe optional) that does not also take ints."""
    args = _union_args(hint)
    return float in args and int not in args


def _floats_as_floats(cls: Any, data: dict[str, Any]) -> dict[str, Any]:
    hints = typing.get_type_hints(cls)
    for f in fields(cls):
        hint, value = hints[f.name], data[f.name]
        nested = [a for a in _union_args(hint) if dataclasses.is_dataclass(a)]
        if nested and isinstance(value, dict):
            _floats_as_floats(nested[0], value)
        elif _is_int(value) and _wants_float(hint):
            data[f.name] = float(value)
    return data


def _from_dict(cls: type[T], data: dict[str, Any], where: str) -> T:
    if not isinstance(data, dict):
        raise ConfigError(f"{where}: expected a mapping, got {data!r}")
    hints = typing.get_type_hints(cls)
    known = {f.name for f in fields(cls)}  # type: ignore[arg-type]
    unknown = set(data) - known
    if unknown:
        raise ConfigError(f"{where}: unknown field(s) {sorted(unknown)}")
    kwargs = {}
    for name, value in data.items():
        kwargs[name] = _coerce(hints[name], value, f"{where}.{name}")
    return cls(**kwargs)


def _coerce(hint: Any, value: Any, where: str) -> Any:
    for arg in _union_args(hint):  # a nested config, possibly optional
        if dataclasses.is_dataclass(arg) and isinstance(value, dict):
            return _from_dict(arg, value, where)
    return _coerce_plain(value)


def _plain_scalars(value: Any) -> Any:
    """numpy's numbers and bools as Python's (``np.int64(48)`` -> 48), also inside a list or
    tuple, and a numpy array as a tuple: a setting computed with numpy is the same setting,
    and the same cache key. A float narrower than Python's is taken as the shortest decimal
    that it rounds from (``np.float32(0.7)`` -> 0.7, not 0.699999988...), the number its
    writer meant. Other values come back as they are (the same object)."""
    if isinstance(value, list | tuple):
        items = [_plain_scalars(v) for v in value]
        if any(a is not b for a, b in zip(items, value, strict=True)):
            return type(value)(items)
        return value
    if type(value).__module__ != "numpy" or not callable(getattr(value, "tolist", None)):
        return value
    if getattr(value, "ndim", 0) > 0:  # an array: its items are numpy scalars or rows
        return tuple(_plain_scalars(v) for v in value)
    if value.dtype.kind == "f" and value.dtype.itemsize < 8 and math.isfinite(value):
        import numpy  # loaded already: value is one of its numbers

        return float(numpy.format_float_scientific(value, unique=True))  # not print options
    return value.tolist()


def _coerce_plain(value: Any) -> Any:
    if isinstance(value, list):
        return tuple(_coerce_plain(v) for v in value)
    return value


def _has_type(value: Any, hint: Any) -> bool:
    """Whether ``value`` is of the annotated type: bool, int (not a bool), float (an int
    too), str, a Literal, a tuple (of a given length or ``...``), a nested config, None in
    an optional."""
    if hint is Any:
        return True
    if hint is type(None) or hint is None:
        return value is None
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin in (typing.Union, types.UnionType):
        return any(_has_type(value, a) for a in args)
    if origin is Literal:
        return any(value == a and type(value) is type(a) for a in args)
    if origin is tuple:
        if not isinstance(value, tuple):
            return False
        if len(args) == 2 and args[1] is Ellipsis:
            return all(_has_type(v, args[0]) for v in value)
        return len(value) == len(args) and all(
            _has_type(v, a) for v, a in zip(value, args, strict=True)
        )
    if hint is bool:
        return isinstance(value, bool)
    if hint is int:
        return _is_int(value)
    if hint is float:
        return _is_num(value)
    return isinstance(value, hint)


def _type_name(hint: Any) -> str:
    """How an error names the type a field wants."""
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin in (typing.Union, types.UnionType):
        return " or ".join(_type_name(a) for a in args)
    if origin is Literal:
        return "one of " + ", ".join(repr(a) for a in args)
    if origin is tuple:
        if len(args) == 2 and args[1] is Ellipsis:
            plural = {int: "ints", float: "numbers", str: "strs", bool: "bools"}
            return f"a tuple of {plural.get(args[0], _type_name(args[0]))}"
        return f"a tuple of {len(args)} ({', '.join(_type_name(a) for a in args)})"
    if hint is type(None):
        return "None"
    names = {bool: "True or False", int: "an int", float: "a number", str: "a str"}
    return names.get(hint, f"a {getattr(hint, '__name__', hint)}")


def _is_int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _is_num(v: Any) -> bool:
    return isinstance(v, int | float) and not isinstance(v, bool)


@dataclass(frozen=True)
class RenderConfig(_Config):
    """How notes are rendered from a SoundFont into an NSynth-layout folder.

    Chapter: 02_data
    """

    soundfont: str | None = None
    """Path to a .sf2/.sf3 file; None means TimGM6mb.sf2 shipped inside pretty_midi."""
    bank: int = 0
    programs: tuple[int, ...] = tuple(range(128))
    """GM programs to render (0-based)."""
    include_non_melodic: bool = False
    """Render GM programs 112-127 (percussive, sound effects) too; excluded and counted if False."""
    pitch_range: tuple[int, int] = (48, 72)
    """Inclusive MIDI range of the requested pitches."""
    pitch_step: int = 1
    velocities: tuple[int, ...] = (60, 90, 120)
    sample_rate: int = 16000
    hold_s: float = 0.75
    """Seconds between note-on and note-off (our choice: long enough for 32 CQT frames)."""
    release_s: float = 0.25
    """Seconds recorded after note-off."""
    renderer: Literal["auto", "tinysoundfont", "midirenderer"] = "auto"
    pitch_check: bool = True
    """Exclude notes whose pyin pitch is off the requested one by more than the tolerance."""
    pitch_tolerance_cents: float = 50.0
    silence_db: float = -60.0
    """A note whose peak is below this level (dBFS) is silent and excluded."""
    # A note whose peak exceeds 1.0 would clip in the 16-bit wav: it is excluded and counted
    # ("clipped"). TimGM6mb has two presets (39, 94) rendered 8-32 times too loud.

    def __post_init__(self) -> None:
        super().__post_init__()
        _check(self, "bank", _is_int(self.bank) and 0 <= self.bank <= 128, "an int in 0..128")
        _check(
            self,
            "programs",
            isinstance(self.programs, tuple)
            and len(self.programs) > 0
            and all(_is_int(p) and 0 <= p <= 127 for p in self.programs)
            and len(set(self.programs)) == len(self.programs),
            "a non-empty tuple of GM programs in 0..127, none repeated",
        )
        _check(
            self,
            "pitch_range",
            isinstance(self.pitch_range, tuple)
            and len(self.pitch_range) == 2
            and all(_is_int(p) and 0 <= p <= 127 for p in self.pitch_range)
            and self.pitch_range[0] <= self.pitch_range[1],
            "(low, high) MIDI numbers with 0 <= low <= high <= 127",
        )
        _check(self, "pitch_step", _is_int(self.pitch_step) and self.pitch_step >= 1, "an int >= 1")
        _check(
            self,
            "velocities",
            isinstance(self.velocities, tuple)
            and len(self.velocities) > 0
            and all(_is_int(v) and 1 <= v <= 127 for v in self.velocities)
            and len(set(self.velocities)) == len(self.velocities),
            "a non-empty tuple of MIDI velocities in 1..127, none repeated",
        )
        _check(
            self,
            "sample_rate",
            _is_int(self.sample_rate) and 8000 <= self.sample_rate,
            "an int >= 8000",
        )
        _check(self, "hold_s", _is_num(self.hold_s) and self.hold_s > 0, "a number > 0")
        _check(self, "release_s", _is_num(self.release_s) and self.release_s >= 0, "a number >= 0")
        _check(
            self,
            "renderer",
            self.renderer in ("auto", "tinysoundfont", "midirenderer"),
            "'auto', 'tinysoundfont' or 'midirenderer'",
        )
        _check(
            self,
            "pitch_tolerance_cents",
            _is_num(self.pitch_tolerance_cents) and self.pitch_tolerance_cents > 0,
            "a number > 0",
        )
        _check(self, "silence_db", _is_num(self.silence_db) and self.silence_db < 0, "a number < 0")

    @property
    def pitches(self) -> tuple[int, ...]:
        lo, hi = self.pitch_range
        return tuple(range(lo, hi + 1, self.pitch_step))


@dataclass(frozen=True)
class DataConfig(_Config):
    """Which notes are used and how instruments are split into training and held-out sets.

    ``source`` is ``"soundfont"`` (render with :class:`RenderConfig`), a folder in NSynth
    layout (``examples.json`` + ``audio/``), or an NSynth root holding ``nsynth-train`` and
    ``nsynth-test`` (then NSynth's official splits decide the held-out instruments).

    Chapter: 02_data
    """

    source: str = "soundfont"
    render: RenderConfig = field(default_factory=RenderConfig)
    pitch_range: tuple[int, int] | None = None
    """Keep only these MIDI pitches (inclusive); None keeps all."""
    velocities: tuple[int, ...] | None = None
    families: tuple[str, ...] | None = None
    """Keep only these instrument_family_str values; None keeps all."""
    instrument_sources: tuple[str, ...] | None = None
    """Keep only these instrument_source_str values (NSynth: acoustic, electronic, synthetic)."""
    heldout_per_family: int = 2
    """Instruments of each family held out as 'unseen' (each family keeps at least one)."""
    split_seed: int = 0
    min_notes_per_instrument: int = 4
    """Instruments with fewer usable notes are dropped (and counted)."""
    silence_db: float = -60.0
    """A loaded note whose peak is below this level (dBFS) is silent: excluded and counted."""
    heldout_split: str = "test"
    """For an NSynth root: the official split whose instruments are the unseen ones."""

    def __post_init__(self) -> None:
        super().__post_init__()
        _check(
            self, "source", isinstance(self.source, str) and self.source != "", "a non-empty str"
        )
        _check(
            self,
            "pitch_range",
            self.pitch_range is None
            or (len(self.pitch_range) == 2 and self.pitch_range[0] <= self.pitch_range[1]),
            "None or (low, high) with low <= high",
        )
        _check(
            self,
            "heldout_per_family",
            _is_int(self.heldout_per_family) and self.heldout_per_family >= 1,
            "an int >= 1",
        )
        _check(self, "split_seed", _is_int(self.split_seed), "an int")
        _check(self, "silence_db", _is_num(self.silence_db) and self.silence_db < 0, "a number < 0")
        _check(self, "heldout_split", self.heldout_split in ("valid", "test"), "'valid' or 'test'")
        _check(
            self,
            "min_notes_per_instrument",
            _is_int(self.min_notes_per_instrument) and self.min_notes_per_instrument >= 1,
            "an int >= 1",
        )


@dataclass(frozen=True)
class FeatureConfig(_Config):
    """The time-frequency front end. Defaults: a log-CQT from C2 with 80 bins, 12 per octave,
    hop 256, and 32 frames starting 64 ms into the note (chapter 2 explains each).

    Chapter: 02_data
    """

    kind: Literal["cqt", "mel"] = "cqt"
    """Log-magnitude CQT (a pitch shift is a shift along frequency) or log-mel."""
    sample_rate: int = 16000
    hop_length: int = 256
    fmin_midi: int = 36
    """Lowest CQT bin (C2)."""
    n_bins: int = 80
    """CQT bins, or mel bands for kind='mel'."""
    bins_per_octave: int = 12
    n_fft: int = 1024
    """FFT size of the mel front end."""
    n_frames: int = 32
    """Frames kept per note, from the held part."""
    offset_s: float = 0.064
    """Where the kept frames start, after the onset."""
    log_floor: float = 1e-4
    """log(magnitude + floor)."""
    backend: Literal["librosa", "torch"] = "librosa"
    """'librosa' (the reference) or 'torch' (pitchtimbre.data.frontend: the same filters,
    batched, on the GPU when there is one; within 1e-3 of librosa in the log where the
    magnitude exceeds 10 * log_floor). Part of the cache key."""

    def __post_init__(self) -> None:
        super().__post_init__()
        _check(self, "kind", self.kind in ("cqt", "mel"), "'cqt' or 'mel'")
        _check(self, "backend", self.backend in ("librosa", "torch"), "'librosa' or 'torch'")
        for name in ("sample_rate", "hop_length", "n_bins", "bins_per_octave", "n_fft", "n_frames"):
            _check(
                self, name, _is_int(getattr(self, name)) and getattr(self, name) > 0, "an int > 0"
            )
        _check(self, "fmin_midi", _is_int(self.fmin_midi) and 0 <= self.fmin_midi < 128, "0..127")
        _check(self, "offset_s", _is_num(self.offset_s) and self.offset_s >= 0, "a number >= 0")
        _check(self, "log_floor", _is_num(self.log_floor) and self.log_floor > 0, "a number > 0")
        if self.kind == "cqt":
            top = self.bin_midi(self.n_bins - 1)
            nyquist_midi = 69 + 12 * math.log2(self.sample_rate / 2 / 440)
            _check(
                self,
                "n_bins",
                top < nyquist_midi,
                f"small enough that the top CQT bin stays below Nyquist (MIDI {nyquist_midi:.0f})",
            )

    def bin_midi(self, index: float) -> float:
        """The MIDI pitch at the centre of CQT bin ``index`` (fractional MIDI when there are
        more than 12 bins per octave). Mel bands have no such pitch: ConfigError."""
        if self.kind != "cqt":
            raise ConfigError(
                f"FeatureConfig.kind is {self.kind!r}: only CQT bins sit at MIDI pitches "
                "(a semitone apart); mel bands widen with frequency"
            )
        return self.fmin_midi + index * 12 / self.bins_per_octave

    @property
    def seconds_needed(self) -> float:
        """Audio needed per note to fill ``n_frames`` frames after ``offset_s``."""
        return self.offset_s + self.n_frames * self.hop_length / self.sample_rate


@dataclass(frozen=True)
class PairConfig(_Config):
    """The weakly supervised pair sampler.

    Proportions are for (same pitch & same instrument, same pitch & other instrument,
    other pitch & same instrument, other pitch & other instrument). 'Same pitch, same
    instrument' is another velocity of that note.

    The third kind is the only one that pulls a timbre latent together across pitches. Giving
    it more weight does not take more pitch out of z^t: on the validation split of training
    instruments (cpu data, 3,000 steps, seed 0; see ``LossConfig``) proportions (0.2, 0.2,
    0.4, 0.2) left the exact pitch probe from z^t at chance as before (0.045 against 0.029)
    but collapsed the timbre latent (KL 14 against 29) and its instrument probe (0.52 against
    0.91).

    Chapter: 02_data
    """

    batch_size: int = 64
    proportions: tuple[float, float, float, float] = (0.25, 0.25, 0.25, 0.25)
    draw_batches: int = 1
    """Batches the sampler draws in one pass, handed out one per step. 1 draws batch by
    batch. On a GPU, where each of the sampler's few dozen small kernels costs about as much
    to launch as a convolution, 25 spreads that cost over 25 steps, and with it the
    synchronisations of the rejection rounds for the fourth kind of pair (two or three a
    pass). The pairs follow the same distribution either way, but they are other
    pairs, so the setting is part of a model's cache key."""

    def __post_init__(self) -> None:
        super().__post_init__()
        _check(self, "batch_size", _is_int(self.batch_size) and self.batch_size >= 1, "an int >= 1")
        _check(
            self,
            "draw_batches",
            _is_int(self.draw_batches) and self.draw_batches >= 1,
            "an int >= 1",
        )
        _check(
            self,
            "proportions",
            len(self.proportions) == 4
            and all(_is_num(p) and p >= 0 for p in self.proportions)
            and sum(self.proportions) > 0,
            "four non-negative numbers with a positive sum",
        )


@dataclass(frozen=True)
class ModelConfig(_Config):
    """Encoders (pitch, timbre) and decoder: 1-D convolutions over time, frequency as channels.

    Chapter: 03_generative_model
    """

    latent_pitch: int = 16
    latent_timbre: int = 16
    hidden: int = 128
    layers: int = 3
    """Convolutions per network; the last one emits the output."""
    kernel_size: int = 5
    head_kernel_size: int = 1
    """Kernel of each network's last convolution: 1 = a per-frame linear read-out (our
    choice: ~0.39 M parameters in all at the defaults, near the reference's ~0.37 M)."""
    leaky_slope: float = 0.2
    """Slope of the LeakyReLU between convolutions for inputs below 0 (0 would be a ReLU)."""
    logvar_range: tuple[float, float] = (-12.0, 8.0)
    """The encoders' log-variances are clipped to this range, so that a variance
    exp(log s^2) can neither vanish (e^-12, a std of 0.0025) nor overflow."""
    sigma: float | None = 0.3
    """Std of the Gaussian likelihood p(x_t | z^p_t, z^t_t), fixed; None learns one scalar.
    0.3 is about where a learned sigma settles on the normalised CQT (0.28-0.29 after 3,000
    steps); fixed there, the balance of the loss terms holds from the first step instead of
    drifting ~12x as a learned sigma falls from 1 (see ``LossConfig`` for the runs)."""

    def __post_init__(self) -> None:
        super().__post_init__()
        _check(
            self,
            "sigma",
            self.sigma is None or (_is_num(self.sigma) and self.sigma > 0),
            "None or > 0",
        )
        for name in ("latent_pitch", "latent_timbre", "hidden", "layers"):
            _check(
                self, name, _is_int(getattr(self, name)) and getattr(self, name) >= 1, "an int >= 1"
            )
        for name in ("kernel_size", "head_kernel_size"):
            k = getattr(self, name)
            _check(self, name, _is_int(k) and k >= 1 and k % 2 == 1, "an odd int >= 1")
        _check(
            self,
            "leaky_slope",
            _is_num(self.leaky_slope) and 0 <= self.leaky_slope < 1,
            "a number in [0, 1)",
        )
        _check(
            self,
            "logvar_range",
            isinstance(self.logvar_range, tuple)
            and len(self.logvar_range) == 2
            and all(_is_num(v) and math.isfinite(v) for v in self.logvar_range)
            and self.logvar_range[0] < self.logvar_range[1],
            "a tuple (low, high) of finite numbers, low < high",
        )


@dataclass(frozen=True)
class LossConfig(_Config):
    """The total loss: -ELBO(X1) - ELBO(X2) + lambda_p L_c^p + lambda_t L_c^t.

    The ELBO is normalised PER FRAME (mean over frames and batch, summed over frequency and
    latent dimensions), so lambda does not depend on the number of frames. Summed over 32
    frames, the same balance would need lambda about 32 times larger.

    lambda = 20, with the likelihood's sigma fixed at 0.3 (``ModelConfig.sigma``), was chosen
    on a validation split carved from the TRAINING instruments (two per family: 27, trained
    on the other 46; cpu data, 3,000 steps; never the held-out ones). Seeds 0 and 2:

    ===============  ===========  ============  ===========  ==========  ==========
    sigma, lambda    instr.<-z^t  timbre ratio  pitch ratio  pitch<-z^t  instr.<-z^p
    ===============  ===========  ============  ===========  ==========  ==========
    learned, 10      0.93, 0.83   3.2, 3.9      7.9, 5.6     0.06, 0.04  0.08, 0.16
    0.5, 10          0.92, 0.84   3.9, 4.0      11.5, 9.0    0.04, 0.04  0.05, 0.08
    0.3, 10          0.96, 0.97   2.5, 2.4      7.1, 7.5     0.06, 0.07  0.06, 0.08
    0.3, 20          0.91, 0.92   4.4, 4.7      13.4, 13.6   0.03, 0.05  0.05, 0.04
    ===============  ===========  ============  ===========  ==========  ==========

    Seed 1, run for the first and third rows only: instrument probe 0.93 (learned, 10) and
    0.97 (0.3, 10); timbre ratio 3.4 and 2.3.
    A stronger timbre term alone, lambda_timbre 40 with lambda_pitch 20 (seed 0), collapsed
    the instrument probe to 0.53 (timbre ratio 5.9, timbre KL 79).

    A learned sigma starts at 1, where reconstruction is weak beside the KL and contrastive
    terms; on some seeds the timbre latent then gives way (timbre KL 8 against 14) and its
    instrument probe drops, and sigma 0.5 does the same. Fixed at 0.3, about where a learned
    sigma settles, the seeds agree, but the timbre clusters loosen; lambda 20 tightens them
    again at twice the KL (larger latents) and a higher reconstruction error. On the
    held-out instruments (cpu profile) sigma 0.3 with lambda 20 gave instrument probes of
    0.90 and 0.90 for seeds 0 and 1, where the learned sigma with lambda 10 gave 0.92 and 0.70.
    Raw divergence alone cannot be trusted: read the ratios and the probes.

    The same held-out instruments (cpu profile, seed 0, 3,000 steps; measured on 2026-11-26
    with torch's AVX2 CPU kernels; AVX-512 kernels train slightly different weights, see
    chapter 5) against the reference measurement's settings, for chapter 7:

    ==================================  ==============  ============  ==========
    proposed model                      timbre dense.   timbre ratio  pitch<-z^t
    ==================================  ==============  ============  ==========
    learned sigma, lambda 10 (split 0)  0.97            2.36          0.061
    sigma 0.3, lambda 20 (split 0)      1.22            3.20          0.077
    sigma 0.3, lambda 20 (split 1)      1.20            3.47          0.124
    sigma 0.3, lambda 20 (split 2)      1.19            3.61          0.084
    ==================================  ==============  ============  ==========

    Splits are ``DataConfig.split_seed``; Solo Vox (program 85) is held out in all three. The
    pitch left in z^t moves more with which instruments are unseen than with the settings.

    Chapter: 04_contrastive_loss
    """

    lambda_pitch: float = 20.0
    lambda_timbre: float = 20.0
    beta: float = 1.0
    """Weight of both KL terms (1 = the plain ELBO)."""
    contrastive: str = "paper"
    """A name in ``pitchtimbre.losses.CONTRASTIVE_LOSSES`` ('paper' = D11 + D22 +/- D12)."""
    distance: str = "euclidean"
    """A name in ``pitchtimbre.losses.DISTANCES``."""
    margin: float = 5.0
    """Margin of the 'hinge' contrastive loss, max(0, margin - d) for different pairs."""
    on: Literal["mean", "sample"] = "mean"
    """Distances between posterior means (default) or reparameterised samples."""
    distance_eps: float = 1e-8
    """Added under the square root so that the gradient of a zero distance is finite."""

    def __post_init__(self) -> None:
        super().__post_init__()
        for name in ("lambda_pitch", "lambda_timbre", "beta"):
            _check(
                self,
                name,
                _is_num(getattr(self, name)) and getattr(self, name) >= 0,
                "a number >= 0",
            )
        _check(self, "contrastive", isinstance(self.contrastive, str), "a loss name")
        _check(self, "distance", isinstance(self.distance, str), "a distance name")
        _check(self, "margin", _is_num(self.margin) and self.margin > 0, "a number > 0")
        _check(self, "on", self.on in ("mean", "sample"), "'mean' or 'sample'")
        _check(self, "distance_eps", _is_num(self.distance_eps) and self.distance_eps >= 0, ">= 0")

    @property
    def is_vanilla(self) -> bool:
        return self.lambda_pitch == 0 and self.lambda_timbre == 0


DEVICE_NAMES = "'auto', 'cpu', 'mps' or 'cuda[:N]'"
"""The values ``train.device`` takes."""


def is_device_name(name: object) -> bool:
    """Whether ``name`` is one of :data:`DEVICE_NAMES` (whether this machine has that device,
    :func:`pitchtimbre.machine.pick_device` tells).

    Chapter: 05_training
    """
    return isinstance(name, str) and re.fullmatch(r"auto|cpu|mps|cuda(:[0-9]+)?", name) is not None


@dataclass(frozen=True)
class TrainConfig(_Config):
    """The optimisation budget and bookkeeping.

    The budget matters most for the timbre space. With our earlier settings (learned
    sigma, lambda 10; cpu data, 28 held-out instruments) the instrument probe from z^t was
    0.69 after 1,000 steps, below the input spectrograms' own 0.88, and 0.92 after 3,000
    (the reference measurement's budget). Measured again on 2026-11-26 (seed 0): 0.70 after
    1,000 steps, and 0.67 for the vanilla model; 0.92 after 3,000. At 1,000 steps four
    seeded splits (``DataConfig.split_seed`` 0-3) gave 0.69, 0.66, 0.70 and 0.90 against the input's 0.88,
    0.84, 0.88 and 0.91; cosine learning-rate schedules (peak 2e-3 or 4e-3, on a validation
    split) gave 0.82 and 0.86 against 0.89 for a constant 1e-3. Seed 1 reached only 0.70
    after 3,000 steps: that seed dependence came from the learned sigma (see ``LossConfig``).

    Chapter: 05_training
    """

    steps: int = 3000
    lr: float = 1e-3
    seed: int = 0
    log_every: int = 25
    checkpoint_every: int = 500
    device: str = "auto"
    """'auto' picks CUDA, then Apple MPS, then CPU (:data:`DEVICE_NAMES`)."""
    amp: bool = True
    """bf16 autocast on CUDA GPUs with bf16 units, compute capability 8.0+ (ignored elsewhere)."""
    compile: bool = False
    """Wrap the model in torch.compile (inductor needs a C compiler). The noise drawn from
    the seeded generator splits the forward pass into three graphs."""
    grad_clip: float | None = 10.0
    features_on: Literal["auto", "device", "host"] = "auto"
    """Where the training features live: 'auto' keeps them on the device when they take under
    half of its free memory (of this process's share of it, when several processes train on
    the device at once), else streams batches from host memory (logged)."""
    parallel_models: int = 1
    """How many models ``reproduce`` (and a chapter's ``models()``) trains at once, each in a
    worker process of its own with an equal share of the CPU threads (each model's progress
    bar then moves at its logged steps); 1 trains them one after another in this process,
    with a progress bar that moves every step. Under ``torchrun`` models
    are always trained one after another. Not part of the cache key: like ``amp``, it can
    change the rounding but not what is learned (on a CPU, fewer threads per process may
    split a reduction differently: the ci model's weights moved by up to 1.7e-3 after 60
    steps, the cpu model's not at all, after 3,000). On two CPU cores two cpu-profile models
    side by side took 55.0 s against 59.8 s one after another over 300 steps each
    (``benchmarks/bench_parallel.py``), but 550 s against 557 s over the full 3,000
    (``benchmarks/RESULTS.md``). On a GPU the processes time-slice one device; that was not
    measured."""

    def __post_init__(self) -> None:
        super().__post_init__()
        _check(
            self,
            "features_on",
            self.features_on in ("auto", "device", "host"),
            "'auto', 'device' or 'host'",
        )
        _check(self, "steps", _is_int(self.steps) and self.steps >= 1, "an int >= 1")
        _check(self, "lr", _is_num(self.lr) and self.lr > 0, "a number > 0")
        _check(self, "seed", _is_int(self.seed), "an int")
        _check(self, "log_every", _is_int(self.log_every) and self.log_every >= 1, "an int >= 1")
        _check(
            self,
            "checkpoint_every",
            _is_int(self.checkpoint_every) and self.checkpoint_every >= 1,
            "an int >= 1",
        )
        _check(self, "device", is_device_name(self.device), DEVICE_NAMES)
        _check(
            self,
            "grad_clip",
            self.grad_clip is None or (_is_num(self.grad_clip) and self.grad_clip > 0),
            "None or > 0",
        )
        _check(
            self,
            "parallel_models",
            _is_int(self.parallel_models) and self.parallel_models >= 1,
            "an int >= 1",
        )


@dataclass(frozen=True)
class EvalConfig(_Config):
    """How held-out instruments are evaluated (poster: 9 frames per note).

    Chapter: 06_metrics
    """

    frames: int = 9
    """Encoder-mean frames per note used by denseness and divergence (the poster's t=1..9)."""
    knn_k: int = 5

    def __post_init__(self) -> None:
        super().__post_init__()
        _check(self, "frames", _is_int(self.frames) and self.frames >= 1, "an int >= 1")
        _check(self, "knn_k", _is_int(self.knn_k) and self.knn_k >= 1, "an int >= 1")


@dataclass(frozen=True)
class ExperimentConfig(_Config):
    """One experiment: data, features, pairs, model, loss, training, evaluation, seeds.

    Chapter: 01_introduction
    """

    profile: str = "cpu"
    data: DataConfig = field(default_factory=DataConfig)
    features: FeatureConfig = field(default_factory=FeatureConfig)
    pairs: PairConfig = field(default_factory=PairConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    loss: LossConfig = field(default_factory=LossConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)
    seeds: tuple[int, ...] = (0,)
    exercise_steps: int = 400
    """Training steps of each model the exercises chapter trains with a modified loss."""

    def __post_init__(self) -> None:
        super().__post_init__()
        _check(self, "profile", self.profile in PROFILES, f"one of {PROFILES}")
        _check(
            self,
            "exercise_steps",
            _is_int(self.exercise_steps) and self.exercise_steps >= 1,
            "an int >= 1",
        )
        _check(
            self,
            "seeds",
            isinstance(self.seeds, tuple)
            and len(self.seeds) >= 1
            and all(_is_int(s) for s in self.seeds),
            "a non-empty tuple of ints",
        )
        _check(
            self,
            "eval",
            self.eval.frames <= self.features.n_frames,
            f"frames <= features.n_frames ({self.features.n_frames})",
        )
        renders = renders_soundfont(self.data.source)
        if renders and self.features.sample_rate != self.data.render.sample_rate:
            raise ConfigError(
                "features.sample_rate must equal data.render.sample_rate "
                f"({self.features.sample_rate} != {self.data.render.sample_rate})"
            )
        needed = self.features.seconds_needed
        if renders and needed > self.data.render.hold_s:
            raise ConfigError(
                f"data.render.hold_s: must cover the {needed:.3f} s of frames the features take "
                f"(features.offset_s + n_frames * hop_length / sample_rate), got "
                f"{self.data.render.hold_s}"
            )


def renders_soundfont(source: str) -> bool:
    """True when ``data.source`` names notes rendered with ``data.render``: the embedded
    SoundFont (``"soundfont"``) or a .sf2/.sf3 file.

    Chapter: 02_data
    """
    return source == "soundfont" or Path(source).suffix.lower() in (".sf2", ".sf3")


def cuda_available() -> bool:
    """True when torch is importable and sees a CUDA device (picks the `gpu` profile).

    Chapter: 01_introduction
    """
    try:
        import torch
    except ImportError:  # pragma: no cover - torch is a dependency
        return False
    return bool(torch.cuda.is_available())


def resolve_profile(profile: str | None = None) -> str:
    """The profile to use: the argument, else ``$PITCHTIMBRE_PROFILE``, else ``gpu`` when
    CUDA is available and ``cpu`` otherwise.

    Chapter: 01_introduction
    """
    chosen = profile or os.environ.get(PROFILE_ENV) or ("gpu" if cuda_available() else "cpu")
    if chosen not in PROFILES:
        raise ConfigError(
            f"profile: must be one of {PROFILES}, got {chosen!r} (check --profile or {PROFILE_ENV})"
        )
    return chosen


def profile_config(profile: str | None = None) -> ExperimentConfig:
    """The experiment settings of a profile (see the module docstring).

    Chapter: 01_introduction
    """
    name = resolve_profile(profile)
    if name == "ci":
        # Two CPU cores, every chapter in minutes: all 112 melodic programs, every other
        # pitch, two velocities; a smaller network and a short budget.
        return ExperimentConfig(
            profile="ci",
            data=DataConfig(render=RenderConfig(pitch_step=2, velocities=(70, 110))),
            model=ModelConfig(hidden=64),
            train=TrainConfig(steps=400, checkpoint_every=100, log_every=10),
            seeds=(0,),
            exercise_steps=150,
        )
    if name == "cpu":
        # The reference measurement's data, network and budget (3,000 steps: 2 to 8.5
        # minutes a model on the two-core CPUs of benchmarks/RESULTS.md), one seed so that
        # the whole book takes about 15 minutes or less on all but the slowest of them.
        # With sigma fixed and lambda 20 (see LossConfig) seeds 0 and 1 agree on the
        # held-out instruments (instrument probe 0.90 and 0.90, timbre ratio 3.2 and 3.3).
        return ExperimentConfig(
            profile="cpu",
            train=TrainConfig(steps=3000, checkpoint_every=500),
            seeds=(0,),
            exercise_steps=200,
        )
    return ExperimentConfig(
        profile="gpu",
        features=FeatureConfig(backend="torch"),
        pairs=PairConfig(batch_size=128, draw_batches=25),
        model=ModelConfig(hidden=256),
        train=TrainConfig(steps=4000, checkpoint_every=1000),
        seeds=(0, 1, 2),
        exercise_steps=1000,
    )
