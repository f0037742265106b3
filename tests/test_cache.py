from __future__ import annotations

import os
import stat

import pytest

from pitchtimbre import cache
from pitchtimbre.cache import atomic_path, atomic_write_bytes, atomic_write_json
from pitchtimbre.errors import ConfigError


def test_atomic_write_replaces_the_target_and_leaves_no_temporary(tmp_path):
    target = tmp_path / "sub" / "results.json"
    atomic_write_json(target, {"a": 1})
    atomic_write_bytes(target, b"second")
    assert target.read_bytes() == b"second"
    assert sorted(p.name for p in target.parent.iterdir()) == ["results.json"]


def test_a_failed_write_keeps_the_old_file(tmp_path):
    target = tmp_path / "model.pt"
    target.write_bytes(b"old")
    with pytest.raises(RuntimeError), atomic_path(target) as tmp:
        tmp.write_bytes(b"half")
        raise RuntimeError("killed mid-write")
    assert target.read_bytes() == b"old"
    assert [p.name for p in tmp_path.iterdir()] == ["model.pt"]


@pytest.mark.skipif(os.name != "posix", reason="folders are synced on POSIX only")
def test_the_rename_is_flushed_to_the_folder(monkeypatch, tmp_path):
    events: list[str] = []
    real_fsync, real_replace = os.fsync, os.replace

    def fsync(fd: int) -> None:
        events.append("fsync folder" if stat.S_ISDIR(os.fstat(fd).st_mode) else "fsync file")
        real_fsync(fd)

    def replace(src, dst) -> None:
        events.append("rename")
        real_replace(src, dst)

    monkeypatch.setattr(cache.os, "fsync", fsync)
    monkeypatch.setattr(cache.os, "replace", replace)
    atomic_write_bytes(tmp_path / "x.bin", b"data")
    assert events == ["fsync file", "rename", "fsync folder"]


@pytest.mark.skipif(os.name != "posix", reason="file modes are POSIX")
def test_written_files_and_folders_get_the_mode_a_plain_open_gives(tmp_path):
    """mkstemp's private 0600 would make a teacher's render unreadable to the class."""
    old = os.umask(0o027)
    try:
        atomic_write_bytes(tmp_path / "shared.json", b"{}")
    finally:
        os.umask(old)
    assert stat.S_IMODE((tmp_path / "shared.json").stat().st_mode) == 0o640
    old = os.umask(0o027)
    try:
        staging = [cache.new_staging_folder(tmp_path, "notes.partial-") for _ in range(2)]
    finally:
        os.umask(old)
    assert staging[0] != staging[1] and all(p.name.startswith("notes.partial-") for p in staging)
    assert stat.S_IMODE(staging[0].stat().st_mode) == 0o750  # not mkdtemp's 0700


def test_an_unusable_cache_folder_is_a_clear_error(tmp_path, monkeypatch):
    a_file = tmp_path / "file"
    a_file.write_text("x")
    monkeypatch.setenv("PITCHTIMBRE_CACHE", str(a_file))
    with pytest.raises(
        ConfigError, match=rf"PITCHTIMBRE_CACHE={a_file}: cannot use it as a folder"
    ):
        cache.cache_dir()
    monkeypatch.setenv("PITCHTIMBRE_CACHE", str(tmp_path / "new" / "cache"))
    assert cache.cache_dir().is_dir()  # created when missing


def test_pages_show_cache_paths_without_the_building_machines_folders(tmp_path, monkeypatch):
    repo, home = tmp_path / "repo", tmp_path / "home"
    (repo / "book").mkdir(parents=True)
    home.mkdir()
    monkeypatch.setenv("HOME", str(home))
    monkeypatch.chdir(repo / "book")  # where a chapter runs
    shown = cache.display_path
    assert (
        shown(repo / ".cache" / "models" / "m" / "checkpoint.pt")
        == "../.cache/models/m/checkpoint.pt"
    )
    assert shown(repo / "book" / "figure.png") == "figure.png"
    assert shown(home / ".cache" / "pitchtimbre") == "~/.cache/pitchtimbre"
    assert shown(tmp_path / "elsewhere") == str(tmp_path / "elsewhere")
    monkeypatch.chdir("/")  # a working folder of "/": nothing is shown relative to it
    assert shown(tmp_path / "elsewhere") == str(tmp_path / "elsewhere")


def test_a_chapters_header_names_its_cache_as_the_page_reaches_it(tmp_path, monkeypatch, capsys):
    from pitchtimbre.book import setup_chapter

    (tmp_path / "book").mkdir()
    monkeypatch.setenv(cache.CACHE_ENV, str(tmp_path / ".cache"))
    monkeypatch.chdir(tmp_path / "book")
    setup_chapter("01_introduction", profile="ci")
    assert capsys.readouterr().out.splitlines()[0].endswith("cache ../.cache")


def test_the_data_summary_names_its_feature_cache_as_the_page_reaches_it(tmp_path, monkeypatch):
    from pitchtimbre.data.dataset import DataSummary

    (tmp_path / "book").mkdir()
    monkeypatch.chdir(tmp_path / "book")
    summary = DataSummary(
        "toy", 4, 2, 1, 1, (60, 62), (90,), {}, [str(tmp_path / ".cache" / "f.npz")]
    )
    assert summary.lines()[-1] == "cache               ../.cache/f.npz"
