from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from pitchtimbre.cli import main, os_error_line, parse_int_list, parse_range
from pitchtimbre.config import profile_config
from pitchtimbre.data import load_dataset


def run_cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "pitchtimbre", *args], capture_output=True, text=True, check=False
    )


def test_parsers():
    assert parse_int_list("0 1,5 7:9") == (0, 1, 5, 7, 8, 9)
    assert parse_range("48:72") == (48, 72) and parse_range("60") == (60, 60)
    with pytest.raises(ValueError, match="no upper end"):
        parse_range("60:")  # not quietly 60:60
    with pytest.raises(ValueError, match="the range 72:48 runs backwards; write 48:72"):
        parse_range("72:48")
    with pytest.raises(ValueError, match="the range 9:7 runs backwards; write 7:9"):
        parse_int_list("9:7")


def test_reproduce_options_override_the_profile():
    from pitchtimbre.cli import build_config, make_parser

    args = ["reproduce", "--out", "o", "--profile", "ci"]
    plain = build_config(make_parser().parse_args(args))
    assert (plain.train.parallel_models, plain.train.steps, plain.seeds) == (1, 400, (0,))
    changed = build_config(
        make_parser().parse_args([*args, "--parallel", "3", "--steps", "20", "--seeds", "2"])
    )
    assert (changed.train.parallel_models, changed.train.steps, changed.seeds) == (3, 20, (0, 1))


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
    cfg = profile_config("ci").with_overrides({"data.source": str(toy_folder)})
    fingerprint = load_dataset(cfg.data, cfg.features, progress=False).fingerprint
    assert f"fingerprint         {fingerprint} (features, labels, split" in out


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
        (["data", "--source", "{tmp}/nowhere", "--profile", "ci"], "nowhere: no such file"),
        (
            ["data", "--source", "{tmp}/examples.json", "--profile", "ci"],
            "examples.json: pass the folder that holds it",
        ),
        (["render", "--out", "{tmp}/o", "--pitches", "high"], "--pitches: cannot read 'high'"),
        (
            ["render", "--out", "{tmp}/o", "--pitches", "80:40"],
            "argument --pitches: the range 80:40 runs backwards; write 40:80",
        ),
        (
            ["render", "--out", "{tmp}/o", "--pitches", "60:"],
            "argument --pitches: cannot read '60:'; write a range such as '48:72'",
        ),
        (
            ["render", "--out", "{tmp}/o", "--velocities", "abc"],
            "argument --velocities: cannot read 'abc'; write numbers such as '60 90 120'",
        ),
        (  # not the 201 numbers one by one
            ["render", "--out", "{tmp}/o", "--programs", "0:200"],
            "20, 21, 2... 199, 200), 201 items",
        ),
        (
            ["render", "--out", "{tmp}/o", "--programs", "5:2"],
            "--programs: the range 5:2 runs backwards; write 2:5",
        ),
        (["render", "--out", "{tmp}/o", "--programs", "0 0"], "none repeated"),
        (
            ["render", "--out", "{tmp}/o", "--programs", "0", "--pitches", "20:60"],
            "RenderConfig.pitch_range: the pitch check (pyin) needs MIDI >= 25 at 16000 Hz, got 20;",
        ),
        (
            ["reproduce", "--out", "{tmp}/o", "--profile", "ci", "--steps", "0"],
            "--steps: must be >= 1, got 0",
        ),
        (
            ["reproduce", "--out", "{tmp}/o", "--profile", "ci", "--parallel", "0"],
            "--parallel: must be >= 1, got 0",
        ),
        # a bad --out fails at once, before any rendering or training
        (["render", "--out", "{tmp}/bad.sf2"], "--out {tmp}/bad.sf2: is a file, not a folder"),
        (["reproduce", "--out", "{tmp}/bad.sf2", "--profile", "ci"], "is a file, not a folder"),
        (["render", "--out", "/proc/pitchtimbre/o"], "/proc/pitchtimbre/o: cannot write into it"),
        (["render", "--out", ""], "--out: empty; pass the folder to write into"),
        (["data", "--source", " "], "--source: empty; leave --source out for the default"),
        (
            ["evaluate", "--checkpoint", "{tmp}", "--source", "soundfont", "--out", "{tmp}/e"],
            "is a folder; pass the checkpoint.pt inside it",
        ),
        (
            ["evaluate", "--checkpoint", "{tmp}/bad.sf2", "--source", "x", "--out", "{tmp}/e"],
            "bad.sf2: not a PyTorch checkpoint file",
        ),
    ],
)
def test_bad_input_gives_one_clear_line(tmp_path, args, message):
    (tmp_path / "bad.sf2").write_bytes(b"junk")
    (tmp_path / "examples.json").write_text("{}")
    proc = run_cli(*[a.format(tmp=tmp_path) for a in args])
    assert proc.returncode == 2
    assert message.format(tmp=tmp_path) in proc.stderr
    assert "Traceback" not in proc.stderr


@pytest.mark.parametrize(
    "command",
    [
        ["reproduce", "--profile", "ci", "--source", "{missing}"],
        ["evaluate", "--checkpoint", "{missing}", "--source", "soundfont"],
        ["render", "--soundfont", "{missing}", "--programs", "0"],
    ],
)
def test_a_failed_command_leaves_no_output_folder_it_created(tmp_path, command):
    missing = str(tmp_path / "nothere.sf2")
    out = tmp_path / "new" / "out"
    code = main([*(part.format(missing=missing) for part in command), "--out", str(out)])
    assert code == 2 and not (tmp_path / "new").exists()  # nor the parent it made
    kept = tmp_path / "kept"  # a folder that was there before stays, empty or not
    kept.mkdir()
    assert main([*(p.format(missing=missing) for p in command), "--out", str(kept)]) == 2
    assert kept.is_dir()


def test_an_unusable_cache_folder_is_named(tmp_path):
    a_file = tmp_path / "cache"
    a_file.write_text("not a folder")
    proc = subprocess.run(
        [sys.executable, "-m", "pitchtimbre", "data", "--profile", "ci"],  # renders into it
        capture_output=True,
        text=True,
        check=False,
        env={**os.environ, "PITCHTIMBRE_CACHE": str(a_file)},
    )
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    assert f"PITCHTIMBRE_CACHE={a_file}: cannot use it as a folder" in proc.stderr


def test_an_unreadable_file_is_one_error_line(tmp_path, monkeypatch, capsys):
    import pitchtimbre.cli as cli

    def denied(args):
        raise PermissionError(13, "Permission denied", str(tmp_path / "examples.json"))

    monkeypatch.setattr(cli, "cmd_data", denied)
    assert main(["data"]) == 2
    err = capsys.readouterr().err
    assert err == (
        f"error: {tmp_path / 'examples.json'}: Permission denied; you may not read or write it; "
        "check its permissions\n"
    )
    with pytest.raises(PermissionError):  # -v keeps the traceback, for a bug report
        main(["-v", "data"])
    full = OSError(28, "No space left on device", "a.tmp", None, "results.json")
    assert (
        os_error_line(full)
        == "a.tmp -> results.json: No space left on device; the disk is full; free some space"
    )


def test_ctrl_c_ends_with_one_line_and_the_shells_status_for_it(monkeypatch, capsys):
    import pitchtimbre.cli as cli

    def stopped(args):
        raise KeyboardInterrupt

    monkeypatch.setattr(cli, "cmd_data", stopped)
    assert main(["data"]) == 130  # 128 + SIGINT, as a shell reports a command stopped so
    out = capsys.readouterr()
    assert out.out == ""
    assert out.err == (
        "interrupted: finished files and caches are intact; run the command again to continue\n"
    )


def test_a_reader_that_stops_early_gets_no_traceback(tmp_path):
    # more lines than a pipe holds, so the command is still writing when the reader stops
    features = tmp_path / "features"
    features.mkdir()
    for i in range(3000):
        (features / f"cqt-{i:016x}.npz").write_bytes(b"")
    env = {**os.environ, "PITCHTIMBRE_CACHE": str(tmp_path)}
    proc = subprocess.Popen(
        [sys.executable, "-m", "pitchtimbre", "cache"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env=env,
    )
    assert proc.stdout.readline().startswith(b"features")
    proc.stdout.close()
    err = proc.stderr.read().decode()
    assert proc.wait(timeout=60) == 0 and err == ""
