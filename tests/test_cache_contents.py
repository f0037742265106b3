from __future__ import annotations

import os
import shutil
import time
from pathlib import Path

import pytest
from conftest import tiny_config

from pitchtimbre.cache import cache_dir
from pitchtimbre.cache_contents import (
    PRUNE_MIN_AGE_S,
    cache_entries,
    human_size,
    model_staleness,
    prune_cache,
)
from pitchtimbre.cli import main
from pitchtimbre.data import load_dataset
from pitchtimbre.training import (
    CHECKPOINT_FILE,
    read_checkpoint,
    save_checkpoint,
    trained_model,
    trainer_code,
)


def _age(path: Path, seconds: float) -> None:
    """Make ``path`` and everything in it look written ``seconds`` ago."""
    when = time.time() - seconds
    for item in [path, *path.rglob("*")] if path.is_dir() else [path]:
        os.utime(item, (when, when))


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
    temporary = current / f".{CHECKPOINT_FILE}.0123abcd.tmp"  # a killed checkpoint write
    temporary.write_bytes(b"x" * 100)
    notes = cache_dir() / "notes" / "timgm6mb-1111111111111111"  # a finished render
    notes.mkdir(parents=True)
    (notes / "examples.json").write_text("{}")
    staging = cache_dir() / "notes" / "timgm6mb-0000000000000000.partial-89abcdef"
    staging.mkdir(parents=True)
    (staging / "audio").mkdir()
    (staging / "audio" / "a.wav").write_bytes(b"y" * 1000)
    (staging / ".render_summary.json.fedcba98.tmp").write_bytes(b"{")
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
    assert "other trainer code" in entries[c["other_code"]].stale
    assert "no checkpoint" in entries[c["no_checkpoint"]].stale
    assert entries[c["damaged"]].stale.startswith("unreadable (a damaged or truncated")
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
    # the model folder's size holds its checkpoint and history, not the leftover beside them
    current_files = [p for p in c["current"].iterdir() if p != c["temporary"]]
    assert entries[c["current"]].size == sum(p.stat().st_size for p in current_files) + 100


def test_prune_keeps_recent_entries_and_what_can_still_be_used(cache_with_models):
    c = cache_with_models
    can_go = ["other_code", "no_checkpoint", "damaged", "temporary", "staging"]
    # all written just now: a run in progress may own them
    assert prune_cache() == []
    for name in can_go:
        _age(c[name], PRUNE_MIN_AGE_S + 60)
    _age(c["current"], 10 * PRUNE_MIN_AGE_S)  # old, but loadable: stays
    _age(c["notes"], 10 * PRUNE_MIN_AGE_S)  # notes and features are never pruned
    dry = prune_cache(dry_run=True)
    assert {e.path for e in dry} == {c[name] for name in can_go}
    assert all(c[name].exists() for name in can_go)
    gone = prune_cache()
    assert {e.path for e in gone} == {c[name] for name in can_go}
    assert not any(c[name].exists() for name in can_go)
    assert (c["notes"] / "examples.json").is_file()
    assert any((cache_dir() / "features").iterdir())
    again = trained_model(c["cfg"], c["ds"], progress=False)
    assert again.from_cache and again.checkpoint.parent == c["current"]
    assert model_staleness(c["current"]) is None


def test_the_cache_command_lists_and_prunes(cache_with_models, capsys):
    c = cache_with_models
    assert main(["cache"]) == 0
    out = capsys.readouterr().out
    assert f"models/{c['other_code'].name}  can go: trained by other trainer code" in out
    assert "5 can go (" in out and "cache --prune` removes them" in out
    _age(c["no_checkpoint"], PRUNE_MIN_AGE_S + 60)
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


def test_an_empty_or_missing_cache_lists_nothing(tmp_path):
    assert cache_entries(tmp_path / "absent") == []
    assert cache_entries(tmp_path) == []
    assert prune_cache(tmp_path) == []


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
