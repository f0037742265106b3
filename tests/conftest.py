"""Shared fixtures: an isolated cache, small NSynth-layout folders written by the tests, a
small SoundFont render, and the settings of a model that trains in a second."""

from __future__ import annotations

import importlib.util
import json
import os
import shutil
import sys
import tempfile
from collections.abc import Iterable
from pathlib import Path
from types import ModuleType

import numpy as np
import pytest
import soundfile
import torch

from pitchtimbre.config import DataConfig, ExperimentConfig, ModelConfig, RenderConfig, TrainConfig

SR = 16000


def tiny_config(source: str, **train: object) -> ExperimentConfig:
    """A small network trained for 40 steps on ``source`` (a folder the tests wrote)."""
    return ExperimentConfig(
        profile="ci",
        data=DataConfig(source=source, heldout_per_family=1),
        model=ModelConfig(hidden=16, layers=2, kernel_size=3),
        train=TrainConfig(**{"steps": 40, "log_every": 5, "checkpoint_every": 10, **train}),
    )


def import_file(path: Path, text: str, monkeypatch: pytest.MonkeyPatch | None = None) -> ModuleType:
    """Write ``text`` to ``path`` and import it as the module named by the file's stem, as a
    reader's edited file would be (run again, a kernel restart). With ``monkeypatch`` the
    module is also listed in ``sys.modules`` until the test ends: that is where ``inspect``
    looks for a class's source."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    spec = importlib.util.spec_from_file_location(path.stem, path)
    module = importlib.util.module_from_spec(spec)
    if monkeypatch is not None:
        monkeypatch.setitem(sys.modules, path.stem, module)
    spec.loader.exec_module(module)
    return module


def write_script(path: Path, text: str) -> Path:
    """Write ``text`` to ``path`` (its folders made) as an executable: the stand-ins the
    script tests put in place of python, apt-get or a project script."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    path.chmod(0o755)
    return path


_saved_env: dict[str, str | None] = {}


def pytest_configure(config: pytest.Config) -> None:
    """The whole session uses its own cache, never the user's, and no profile from outside.
    Set before any fixture runs, so module- and session-scoped fixtures see it too."""
    for key in ("PITCHTIMBRE_CACHE", "PITCHTIMBRE_PROFILE"):
        _saved_env[key] = os.environ.get(key)
    os.environ["PITCHTIMBRE_CACHE"] = tempfile.mkdtemp(prefix="pitchtimbre-test-cache-")
    os.environ.pop("PITCHTIMBRE_PROFILE", None)


def pytest_unconfigure(config: pytest.Config) -> None:
    shutil.rmtree(os.environ["PITCHTIMBRE_CACHE"], ignore_errors=True)
    for key, value in _saved_env.items():
        if value is None:
            os.environ.pop(key, None)
        else:
            os.environ[key] = value


def harmonic_tone(
    midi: float, brightness: float, seconds: float = 1.0, sr: int = SR, level: float = 0.3
) -> np.ndarray:
    """A decaying harmonic tone: ``brightness`` sets how slowly the harmonics fall off (the
    'timbre' of a test instrument)."""
    t = np.arange(round(seconds * sr)) / sr
    f0 = 440.0 * 2 ** ((midi - 69) / 12)
    x = np.zeros_like(t)
    for k in range(1, 16):
        if k * f0 >= sr / 2:
            break
        x += brightness ** (k - 1) * np.sin(2 * np.pi * k * f0 * t)
    env = np.minimum(1.0, t / 0.01) * np.exp(-t * 1.5)
    x = x * env
    return (level * x / np.abs(x).max()).astype(np.float32)


def write_nsynth_folder(
    folder: Path,
    instruments: Iterable[tuple[str, str, float]],
    pitches: Iterable[int] = range(60, 66),
    velocities: Iterable[int] = (75, 100),
    sr: int = SR,
    seconds: float = 1.0,
) -> Path:
    """A small NSynth-layout folder of harmonic tones. ``instruments`` holds
    (instrument_str, family, brightness)."""
    (folder / "audio").mkdir(parents=True, exist_ok=True)
    table = {}
    for i, (name, family, brightness) in enumerate(instruments):
        for p in pitches:
            for v in velocities:
                note = f"{name}-{p:03d}-{v:03d}"
                audio = harmonic_tone(p, brightness, seconds, sr, level=0.2 + 0.5 * v / 127)
                soundfile.write(folder / "audio" / f"{note}.wav", audio, sr, subtype="PCM_16")
                table[note] = {
                    "note_str": note,
                    "pitch": p,
                    "velocity": v,
                    "instrument": i,
                    "instrument_str": name,
                    "instrument_family": 0,
                    "instrument_family_str": family,
                    "instrument_source": 2,
                    "instrument_source_str": "synthetic",
                    "sample_rate": sr,
                    "qualities": [0] * 10,
                }
    (folder / "examples.json").write_text(json.dumps(table))
    return folder


TOY_INSTRUMENTS = [
    ("bass_synthetic_000", "bass", 0.2),
    ("bass_synthetic_001", "bass", 0.35),
    ("bass_synthetic_002", "bass", 0.5),
    ("flute_synthetic_003", "flute", 0.6),
    ("flute_synthetic_004", "flute", 0.7),
    ("flute_synthetic_005", "flute", 0.8),
]


@pytest.fixture
def toy_folder(tmp_path: Path) -> Path:
    """Six synthetic instruments in two families, 6 pitches, 2 velocities (72 notes)."""
    return write_nsynth_folder(tmp_path / "toy", TOY_INSTRUMENTS)


SMALL_PROGRAMS = (0, 1, 24, 25, 40, 41, 56, 57, 113)


@pytest.fixture(scope="session")
def small_render_config() -> RenderConfig:
    """Eight melodic GM programs (4 families) and one percussive one, 5 pitches, 2 velocities."""
    return RenderConfig(programs=SMALL_PROGRAMS, pitch_range=(60, 64), velocities=(80, 110))


@pytest.fixture(scope="session")
def small_render(
    tmp_path_factory: pytest.TempPathFactory, small_render_config: RenderConfig
) -> Path:
    from pitchtimbre.data.render import render_soundfont

    out = tmp_path_factory.mktemp("render")
    render_soundfont(small_render_config, out, progress=False)
    return out


def instruments_on_a_line() -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """3 instruments x 3 pitches on a line: instrument 0 far away, 1 and 2 interleaved."""
    pitch = torch.arange(3).repeat(3)
    inst = torch.arange(3).repeat_interleave(3)
    x = torch.tensor([0.0, 10.0, 10.01])[inst] + 0.1 * pitch
    return x[:, None], pitch, inst
