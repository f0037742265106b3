from __future__ import annotations

import json
import subprocess
import sys

import pytest

from pitchtimbre.cli import main, parse_int_list, parse_range


def run_cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "pitchtimbre", *args], capture_output=True, text=True, check=False
    )


def test_parsers():
    assert parse_int_list("0 1,5 7:9") == (0, 1, 5, 7, 8, 9)
    assert parse_range("48:72") == (48, 72)


def test_render_command_writes_a_folder(tmp_path):
    out = tmp_path / "notes"
    proc = run_cli(
        "render",
        "--out",
        str(out),
        "--programs",
        "0 40",
        "--pitches",
        "60:61",
        "--velocities",
        "90",
        "--quiet",
    )
    assert proc.returncode == 0, proc.stderr
    assert "wrote 4 of 4 notes" in proc.stdout
    assert len(json.loads((out / "examples.json").read_text())) == 4


def test_data_command_prints_a_summary(toy_folder, capsys):
    assert main(["data", "--source", str(toy_folder), "--profile", "ci", "--quiet"]) == 0
    out = capsys.readouterr().out
    assert "notes               72" in out
    assert (
        "2 train / 4 held out (2 families)" in out
    )  # two of each three-instrument family held out
    assert "pitch range         MIDI 60..65" in out
    assert "features            (80, 32) per note (cqt)" in out
    cache = next(line.split()[-1] for line in out.splitlines() if line.startswith("cache"))
    assert cache.endswith(".npz")


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (
            ["render", "--out", "{tmp}/o", "--soundfont", "{tmp}/missing.sf2"],
            "missing.sf2: SoundFont not found",
        ),
        (
            ["render", "--out", "{tmp}/o", "--soundfont", "{tmp}/bad.sf2"],
            "bad.sf2: is not a SoundFont",
        ),
        (["render", "--out", "{tmp}/o", "--programs", "0 300"], "RenderConfig.programs: must be"),
        (["data", "--source", "{tmp}/nowhere", "--profile", "ci"], "nowhere: not a source"),
        (["render", "--out", "{tmp}/o", "--pitches", "high"], "--pitches: cannot read 'high'"),
        (
            ["reproduce", "--out", "{tmp}/o", "--profile", "ci", "--steps", "0"],
            "TrainConfig.steps: must be an int >= 1, got 0",
        ),
    ],
)
def test_bad_input_gives_one_clear_line(tmp_path, args, message):
    (tmp_path / "bad.sf2").write_bytes(b"junk")
    proc = run_cli(*[a.format(tmp=tmp_path) for a in args])
    assert proc.returncode == 2
    assert message in proc.stderr
    assert "Traceback" not in proc.stderr
