from __future__ import annotations

import os
import shutil
import time
import zipfile
from pathlib import Path

import pytest
from conftest import tiny_config

from pitchtimbre import cache, cache_contents
from pitchtimbre.cache import cache_dir
from pitchtimbre.cache_contents import (
    OTHER_CODE,
    PRUNE_MIN_AGE_S,
    cache_entries,
    human_size,
    model_staleness,
    prune_cache,
)
from pitchtimbre.checkpoints import (
    CHECKPOINT_FILE,
    build_model,
    read_checkpoint,
    save_checkpoint,
)
from pitchtimbre.cli import main
from pitchtimbre.data import load_dataset
from pitchtimbre.training import trained_model, trainer_code

OLD = PRUNE_MIN_AGE_S + 60


def _age(path: Path, seconds: float) -> None:
    """Make ``path`` and everything in it look written ``seconds`` ago."""
    when = time.time() - seconds
    for item in [path, *path.rglob("*")] if path.is_dir() else [path]:
        os.utime(item, (when, when), follow_symlinks=False)


@pytest.fixture
def cache_with_models(toy_folder, tmp_path, monkeypatch):
    """A cache of its own holding one loadable model and, beside it, every kind of entry that
    can go."""
    monkeypatch.setenv("PITCHTIMBRE_CACHE", str(tmp_path / "cache"))
    cfg = tiny_config(str(toy_folder), steps=10)
    ds = load_dataset(cfg.data, cfg.features, progress=False)
    current = trained_model(cfg, ds, progress=False).checkpoint.parent
    models = current.parent
    other_code = models / "proposed-seed0-0000000000000001"
    shutil.copytree(current, other_code)
    state = read_checkpoint(other_code / CHECKPOINT_FILE)
    state["code"] = "an-older-trainer"
    save_checkpoint(other_code / CHECKPOINT_FILE, state)
    no_checkpoint = models / "proposed-seed0-0000000000000002"
    no_checkpoint.mkdir()
    damaged = models / "proposed-seed0-0000000000000003"
    shutil.copytree(current, damaged)
    ckpt = damaged / CHECKPOINT_FILE
    ckpt.write_bytes(ckpt.read_bytes()[:2000])
    # what killed writes leave, named by the helpers that write them (atomic_path's
    # temporary file, the renderer's staging folder)
    temporary = cache._new_temporary(current / CHECKPOINT_FILE)  # a killed checkpoint write
    temporary.write_bytes(b"x" * 100)
    notes = cache_dir() / "notes" / "timgm6mb-1111111111111111"  # a finished render
    notes.mkdir(parents=True)
    (notes / "examples.json").write_text("{}")
    staging = cache.new_staging_folder(notes.parent, "timgm6mb-0000000000000000.partial-")
    (staging / "audio").mkdir()
    (staging / "audio" / "a.wav").write_bytes(b"y" * 1000)
    cache._new_temporary(staging / "render_summary.json").write_bytes(b"{")
    return {
        "cfg": cfg,
        "ds": ds,
        "current": current,
        "other_code": other_code,
        "no_checkpoint": no_checkpoint,
        "damaged": damaged,
        "temporary": temporary,
        "staging": staging,
        "notes": notes,
    }


def test_the_listing_says_which_entries_can_go_and_why(cache_with_models):
    c = cache_with_models
    entries = {e.path: e for e in cache_entries()}
    assert trainer_code() == read_checkpoint(c["current"] / CHECKPOINT_FILE)["code"]
    assert entries[c["current"]].stale is None and entries[c["current"]].kind == "models"
    assert entries[c["other_code"]].stale == OTHER_CODE and entries[c["other_code"]].other_version
    assert "no checkpoint" in entries[c["no_checkpoint"]].stale
    assert entries[c["damaged"]].stale == "a damaged checkpoint (not a whole archive)"
    assert not entries[c["damaged"]].other_version
    assert entries[c["temporary"]].kind == "leftover"
    assert entries[c["temporary"]].size == 100
    # the staging folder is one entry, the temporary file inside it goes with it
    assert entries[c["staging"]].kind == "leftover"
    assert entries[c["staging"]].size == 1001
    assert not any(c["staging"] in p.parents for p in entries)
    # notes and features are listed, never marked
    kinds = {e.kind for e in entries.values() if e.stale is None}
    assert {"notes", "features", "models"} == kinds
    assert all(e.stale is None for e in entries.values() if e.kind in ("notes", "features"))
    # every byte counted once: the model folder's size leaves out the leftover inside it
    current_files = [p for p in c["current"].iterdir() if p != c["temporary"]]
    assert entries[c["current"]].size == sum(p.stat().st_size for p in current_files)
    on_disk = sum(p.stat().st_size for p in cache_dir().rglob("*") if p.is_file())
    assert sum(e.size for e in entries.values()) == on_disk


def test_prune_keeps_recent_entries_and_what_can_still_be_used(cache_with_models):
    c = cache_with_models
    can_go = ["no_checkpoint", "damaged", "temporary", "staging"]
    # all written just now: a run in progress may own them
    assert prune_cache().removed == []
    for name in [*can_go, "other_code"]:
        _age(c[name], OLD)
    _age(c["current"], 10 * PRUNE_MIN_AGE_S)  # old, but loadable: stays
    _age(c["notes"], 10 * PRUNE_MIN_AGE_S)  # notes and features are never pruned
    dry = prune_cache(dry_run=True)
    assert {e.path for e in dry.removed} == {c[name] for name in can_go}
    assert all(c[name].exists() for name in can_go)
    pruned = prune_cache()
    assert pruned.failed == {}
    assert {e.path for e in pruned.removed} == {c[name] for name in can_go}
    assert not any(c[name].exists() for name in can_go)
    # another version's model (the cache is shared by every environment) goes only when asked
    assert c["other_code"].exists()
    assert [e.path for e in prune_cache(other_code=True).removed] == [c["other_code"]]
    assert not c["other_code"].exists()
    assert (c["notes"] / "examples.json").is_file()
    assert any((cache_dir() / "features").iterdir())
    again = trained_model(c["cfg"], c["ds"], progress=False)
    assert again.from_cache and again.checkpoint.parent == c["current"]
    assert model_staleness(c["current"]) is None


def test_a_folder_being_written_into_stays_however_old_the_folder_itself(cache_with_models):
    """A long render writes into staging/audio/, which does not touch the staging folder's own
    time: the newest file inside it says whether it is in use."""
    c = cache_with_models
    for name in ("no_checkpoint", "damaged", "temporary", "staging"):
        _age(c[name], OLD)
    os.utime(c["staging"] / "audio" / "a.wav")  # a note written just now
    os.utime(c["damaged"] / CHECKPOINT_FILE)
    assert c["staging"].stat().st_mtime < time.time() - PRUNE_MIN_AGE_S
    removed = {e.path for e in prune_cache().removed}
    assert removed == {c["no_checkpoint"], c["temporary"]}
    assert (c["staging"] / "audio" / "a.wav").is_file() and c["damaged"].is_dir()


def test_folders_the_package_did_not_name_stay(cache_with_models):
    """A cache pointed at a project folder whose models/ holds the user's own work: old,
    without a pitchtimbre checkpoint, and not to be touched."""
    models = cache_with_models["current"].parent
    theirs = [models / "resnet_baseline", models / "old_runs" / "run1", models / "proposed-seed0"]
    for folder in theirs:
        folder.mkdir(parents=True)
        (folder / "weights.pt").write_bytes(b"mine")
    _age(models, OLD)
    listed = {e.path: e for e in cache_entries()}
    for folder in (models / "resnet_baseline", models / "old_runs", models / "proposed-seed0"):
        assert listed[folder].stale is None and listed[folder].note == cache_contents.NOT_OURS
    removed = {e.path for e in prune_cache(other_code=True).removed}
    assert cache_with_models["no_checkpoint"] in removed  # the package's own still go
    assert all(folder.is_dir() for folder in theirs)
    assert cache_contents.MODEL_FOLDER.match(cache_with_models["current"].name)  # model_dir's


def test_a_checkpoint_this_user_cannot_open_stays(cache_with_models, monkeypatch):
    # another user's model in a shared cache: unreadable to us says nothing of its content
    c = cache_with_models
    theirs = c["damaged"] / CHECKPOINT_FILE  # were it readable, it would go
    real_open = open

    def refuse(path, *args, **kwargs):
        if Path(path) == theirs:
            raise PermissionError(13, "Permission denied", str(path))
        return real_open(path, *args, **kwargs)

    monkeypatch.setattr(cache_contents, "open", refuse, raising=False)
    assert model_staleness(c["damaged"]) is None
    _age(c["damaged"], OLD)
    assert c["damaged"] not in {e.path for e in prune_cache(other_code=True).removed}
    assert theirs.is_file()


def test_another_users_entries_stay(cache_with_models, monkeypatch):
    c = cache_with_models
    for name in ("no_checkpoint", "staging"):
        _age(c[name], OLD)
    monkeypatch.setattr(os, "getuid", lambda: os.stat(c["no_checkpoint"]).st_uid + 1)
    entries = {e.path: e for e in cache_entries()}
    for name in ("no_checkpoint", "staging"):
        assert entries[c[name]].stale is None
        assert entries[c[name]].note.startswith("another user's (uid ")
    assert prune_cache().removed == [] and c["no_checkpoint"].exists()


def test_checkpoints_of_another_version_go_only_when_asked(cache_with_models):
    c = cache_with_models
    newer = c["current"].parent / "proposed-seed0-0000000000000006"
    shutil.copytree(c["current"], newer, ignore=shutil.ignore_patterns("*.tmp"))
    state = read_checkpoint(newer / CHECKPOINT_FILE)
    state["version"] = 99
    save_checkpoint(newer / CHECKPOINT_FILE, state)
    foreign = c["current"].parent / "proposed-seed0-0000000000000007"
    foreign.mkdir()
    with zipfile.ZipFile(foreign / CHECKPOINT_FILE, "w") as archive:  # whole, but not torch's
        archive.writestr("data.txt", "written by a newer torch, say")
    bare = c["current"].parent / "proposed-seed0-0000000000000008"
    bare.mkdir()
    save_checkpoint(bare / CHECKPOINT_FILE, state["model"])  # weights without their settings
    whole = c["current"].parent / "proposed-seed0-0000000000000009"
    whole.mkdir()
    save_checkpoint(whole / CHECKPOINT_FILE, build_model(state)[0])  # torch.save(model)
    assert model_staleness(newer) == ("checkpoint version 99, this package reads 2", True)
    assert model_staleness(foreign)[1] is True
    assert model_staleness(bare) == (
        "bare weights (a state_dict) without the settings that built them",
        True,
    )
    assert model_staleness(whole) == (
        "not a pitchtimbre checkpoint (a pickled pitchtimbre.model.PitchTimbreVAE)",
        True,
    )
    others = {newer, foreign, bare, whole}
    for path in others:
        _age(path, OLD)
    assert not others & {e.path for e in prune_cache().removed}
    assert others <= {e.path for e in prune_cache(other_code=True).removed}


def test_links_are_listed_never_followed_or_pruned(cache_with_models, tmp_path):
    c = cache_with_models
    outside = tmp_path / "project" / "build.partial-0badc0de"  # named like a staging folder
    outside.mkdir(parents=True)
    (outside / "keep.txt").write_text("not the cache's")
    (cache_dir() / "mydata").symlink_to(outside.parent)
    staging_link = cache_dir() / "notes" / "x.partial-12345678"
    staging_link.symlink_to(outside)
    temporary_link = c["current"].parent / ".results.json.0badc0de.tmp"  # named like a leftover
    temporary_link.symlink_to(outside / "keep.txt")
    _age(outside, OLD)
    _age(temporary_link, OLD)
    elsewhere = tmp_path / "other-disk" / "proposed-seed0-0000000000000004"
    elsewhere.mkdir(parents=True)  # a model folder with no checkpoint: it would go
    link = c["current"].parent / elsewhere.name
    link.symlink_to(elsewhere)
    dangling = c["current"].parent / "proposed-seed0-0000000000000005"
    dangling.symlink_to(tmp_path / "unplugged-disk" / "x")
    for path in (elsewhere, link, dangling):
        _age(path, OLD)
    entries = {e.path: e for e in cache_entries()}
    assert entries[link].note == entries[dangling].note == "a symbolic link: kept"
    assert entries[link].stale is None and entries[dangling].stale is None
    removed = {e.path for e in prune_cache(other_code=True).removed}
    assert not removed & {link, dangling, staging_link, temporary_link}
    assert temporary_link.is_symlink()
    assert entries[temporary_link].kind == "models"  # a link, not a leftover of ours
    assert link.is_symlink() and elsewhere.is_dir() and dangling.is_symlink()
    assert (outside / "keep.txt").is_file() and staging_link.is_symlink()
    assert entries[staging_link].note == "a symbolic link: kept"
    assert entries[cache_dir() / "mydata"].size == 0  # a link's own size is not data


def test_a_kind_folder_on_another_disk_is_searched(tmp_path, monkeypatch):
    root = tmp_path / "cache"
    root.mkdir()
    moved = tmp_path / "big-disk" / "models"
    (moved / "vanilla-seed0-0000000000000000").mkdir(parents=True)
    tmp = moved / "vanilla-seed0-0000000000000000" / ".checkpoint.pt.00000000.tmp"
    tmp.write_bytes(b"z" * 10)
    (root / "models").symlink_to(moved)
    _age(tmp, OLD)
    gone = prune_cache(root).removed
    assert [e.path for e in gone] == [root / "models" / tmp.parent.name / tmp.name]
    assert not tmp.exists()


def test_an_entry_that_vanishes_while_listed_is_left_out(cache_with_models, monkeypatch):
    # a render that finishes renames its staging folder between the search and the look
    c = cache_with_models
    look = cache_contents._size_and_mtime

    def racing(path, leftovers):
        if path == c["staging"]:
            shutil.rmtree(path)
        return look(path, leftovers)

    monkeypatch.setattr(cache_contents, "_size_and_mtime", racing)
    paths = {e.path for e in cache_entries()}
    assert c["staging"] not in paths and c["current"] in paths


def test_a_file_that_vanishes_inside_a_folder_leaves_the_folder_listed(
    cache_with_models, monkeypatch
):
    c = cache_with_models
    history = c["current"] / "history.json"
    lstat = Path.lstat

    def racing(self):
        if self == history:
            raise FileNotFoundError(2, "No such file or directory", str(self))
        return lstat(self)

    monkeypatch.setattr(Path, "lstat", racing)
    entry = next(e for e in cache_entries() if e.path == c["current"])
    assert entry.size == (c["current"] / CHECKPOINT_FILE).stat().st_size


def test_what_cannot_be_read_is_listed_with_a_note_and_kept(cache_with_models, monkeypatch):
    c = cache_with_models
    _age(c["no_checkpoint"], OLD)
    staleness = cache_contents.model_staleness

    def locked(folder):
        if folder == c["no_checkpoint"]:
            raise PermissionError(13, "Permission denied", str(folder / CHECKPOINT_FILE))
        return staleness(folder)

    monkeypatch.setattr(cache_contents, "model_staleness", locked)
    entries = {e.path: e for e in cache_entries()}
    assert entries[c["no_checkpoint"]].note == "cannot read it (Permission denied): kept"
    assert c["no_checkpoint"] not in {e.path for e in prune_cache().removed}

    iterdir = Path.iterdir
    models = c["current"].parent

    def locked_folder(self):
        if self == models:
            raise PermissionError(13, "Permission denied", str(self))
        return iterdir(self)

    monkeypatch.setattr(Path, "iterdir", locked_folder)
    entries = {e.path: e for e in cache_entries()}
    assert entries[models].note == "cannot read it (Permission denied): kept"
    assert entries[models].kind == "models"


def test_what_another_prune_removed_first_is_not_a_failure(cache_with_models, monkeypatch):
    c = cache_with_models
    _age(c["damaged"], OLD)
    unlink = os.unlink

    def beaten(path, *args, **kwargs):  # another prune removed it just before us
        unlink(path, *args, **kwargs)
        raise FileNotFoundError(2, "No such file or directory", str(path))

    monkeypatch.setattr(os, "unlink", beaten)
    pruned = prune_cache()
    assert pruned.failed == {} and c["damaged"] in {e.path for e in pruned.removed}
    assert not c["damaged"].exists()


def test_what_could_not_be_removed_is_reported(cache_with_models, monkeypatch, capsys):
    c = cache_with_models
    _age(c["damaged"], OLD)
    stuck = c["damaged"] / CHECKPOINT_FILE
    unlink = os.unlink

    def refuse(path, *args, **kwargs):
        if (Path(path).name == stuck.name and "dir_fd" in kwargs) or Path(path) == stuck:
            raise PermissionError(13, "Permission denied", str(path))
        return unlink(path, *args, **kwargs)

    monkeypatch.setattr(os, "unlink", refuse)
    assert main(["cache", "--prune"]) == 1
    out, err = capsys.readouterr()
    assert f"could not remove models/{c['damaged'].name}" in err and "Permission denied" in err
    assert "removed 0 entries" in out and stuck.is_file()
    _age(c["damaged"], OLD)
    pruned = prune_cache()
    assert c["damaged"] not in {e.path for e in pruned.removed}
    assert pruned.failed[c["damaged"]] == f"{stuck}: Permission denied"


def test_the_cache_command_lists_and_prunes(cache_with_models, capsys):
    c = cache_with_models
    assert main(["cache"]) == 0
    out = capsys.readouterr().out
    assert f"models/{c['other_code'].name}  can go with --other-code: trained by other" in out
    assert "can go now" not in out  # all written just now
    assert "can go once an hour old: 4 (may be runs in progress)" in out
    _age(c["no_checkpoint"], OLD)
    _age(c["other_code"], OLD)
    assert main(["cache"]) == 0
    out = capsys.readouterr().out
    assert "can go now: 1 (0 B), `python -m pitchtimbre cache --prune`" in out
    assert "can go once an hour old: 3" in out
    assert "written by another version of pitchtimbre: 1 (" in out
    assert main(["cache", "--other-code"]) == 2
    assert "--other-code: add --prune" in capsys.readouterr().err
    assert main(["cache", "--prune", "--dry-run"]) == 0
    out = capsys.readouterr().out
    assert main(["cache", "--dry-run"]) == 0  # --prune implied
    assert capsys.readouterr().out == out
    assert f"would remove models/{c['no_checkpoint'].name}" in out
    assert "would remove 1 entries" in out and c["no_checkpoint"].exists()
    assert main(["cache", "--prune"]) == 0
    out = capsys.readouterr().out
    assert f"removed models/{c['no_checkpoint'].name} (0 B): no checkpoint" in out
    assert not c["no_checkpoint"].exists() and c["other_code"].exists()
    assert main(["cache", "--prune", "--other-code"]) == 0
    assert f"removed models/{c['other_code'].name}" in capsys.readouterr().out
    assert not c["other_code"].exists()


def test_an_empty_or_missing_cache_lists_nothing(tmp_path):
    assert cache_entries(tmp_path / "absent") == []
    assert cache_entries(tmp_path) == []
    assert prune_cache(tmp_path).removed == []


def test_human_sizes():
    assert [human_size(n) for n in (0, 999, 1000, 1_640_000, 999_999_999, 2.5e9, 3e12)] == [
        "0 B",
        "999 B",
        "1.0 kB",
        "1.6 MB",
        "1.0 GB",
        "2.5 GB",
        "3.0 TB",
    ]
