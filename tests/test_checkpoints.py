"""Reading checkpoint files back: what is refused, and how the refusal reads (chapter 05)."""

from __future__ import annotations

import re

import pytest
import torch

from pitchtimbre.checkpoints import CHECKPOINT_FILE, checkpoint_problem, read_checkpoint
from pitchtimbre.config import ModelConfig
from pitchtimbre.errors import CheckpointError
from pitchtimbre.model import PitchTimbreVAE


def test_a_model_saved_whole_is_named_and_never_unpickled(tmp_path):
    """torch.save(model) pickles the class; reading it would run code from the file."""
    path = tmp_path / "whole.pt"
    torch.save(PitchTimbreVAE(12, ModelConfig(hidden=8, layers=1, kernel_size=3)), path)
    with pytest.raises(CheckpointError) as raised:
        read_checkpoint(path)
    message = str(raised.value)
    assert message.startswith(f"{path}: holds a Python object (pitchtimbre.model.PitchTimbreVAE)")
    assert "torch.save(model)" in message and "python -m pitchtimbre reproduce" in message
    assert "\x1b" not in message and "damaged" not in message


def test_bare_weights_are_told_apart_from_a_foreign_file(tmp_path):
    weights = PitchTimbreVAE(12, ModelConfig(hidden=8, layers=1, kernel_size=3)).state_dict()
    torch.save(weights, tmp_path / "weights.pt")
    with pytest.raises(CheckpointError, match=r"weights\.pt: bare weights \(a state_dict\)"):
        read_checkpoint(tmp_path / "weights.pt")
    assert checkpoint_problem({"epoch": 3}).startswith("not a pitchtimbre checkpoint (no ")
    assert checkpoint_problem([1, 2]) == "not a pitchtimbre checkpoint"
    assert checkpoint_problem({}).startswith("not a pitchtimbre checkpoint (no ")


def test_torchs_page_long_load_error_is_cut_to_its_first_sentence(tmp_path, monkeypatch):
    def fails(*args, **kwargs):
        raise RuntimeError(
            "\x1b[1mPytorchStreamReader\x1b[0m failed reading zip archive: failed finding "
            "central directory. " + "More detail follows. " * 40
        )

    path = tmp_path / "cut.pt"
    path.write_bytes(b"PK\x03\x04 and then nothing")
    monkeypatch.setattr(torch, "load", fails)
    with pytest.raises(CheckpointError) as raised:
        read_checkpoint(path)
    assert str(raised.value) == (
        f"{path}: a damaged or truncated checkpoint (RuntimeError: PytorchStreamReader failed "
        "reading zip archive: failed finding central directory.); delete it and retrain "
        "(`reproduce --fresh` retrains every model)"
    )


def test_a_damaged_pickle_gives_torchs_reason_not_its_advice(tmp_path):
    """torch wraps every refusal of ``weights_only`` in a page of advice; the reason is
    the paragraph after "WeightsUnpickler error:"."""
    import zipfile

    whole = tmp_path / "whole.pt"
    torch.save({"format": "pitchtimbre-checkpoint", "w": torch.zeros(3)}, whole)
    path = tmp_path / "bad.pt"
    with zipfile.ZipFile(whole) as source, zipfile.ZipFile(path, "w") as damaged:
        for name in source.namelist():
            data = source.read(name)
            damaged.writestr(name, b"\x00" + data[1:] if name.endswith("data.pkl") else data)
    with pytest.raises(CheckpointError) as raised:
        read_checkpoint(path)
    message = str(raised.value)  # torch's reason, "Unsupported operand 0" in torch 2.13
    assert re.fullmatch(
        re.escape(f"{path}: a damaged or truncated checkpoint (UnpicklingError: ")
        + r"[^;]{1,160}\); delete it and retrain .*",
        message,
    )
    assert "Weights only load failed" not in message and "weights_only" not in message


def test_a_pickled_class_is_named_in_older_torchs_words_too(tmp_path, monkeypatch):
    import pickle

    def refuses(*args, **kwargs):  # torch before 2.4 words the refusal so
        raise pickle.UnpicklingError(
            "Weights only load failed. Re-running `torch.load` with `weights_only` set to "
            "`False` will likely succeed. Unsupported class pitchtimbre.model.PitchTimbreVAE"
        )

    path = tmp_path / "whole.pt"
    path.write_bytes(b"PK\x03\x04")
    monkeypatch.setattr(torch, "load", refuses)
    with pytest.raises(CheckpointError, match=r"holds a Python object \(pitchtimbre\.model\.Pitch"):
        read_checkpoint(path)


@pytest.fixture
def trained_checkpoint(toy_folder, tmp_path, monkeypatch):
    """A finished checkpoint of a tiny model (two steps), in a cache of its own."""
    from conftest import tiny_config

    from pitchtimbre.data import load_dataset
    from pitchtimbre.training import trained_model

    monkeypatch.setenv("PITCHTIMBRE_CACHE", str(tmp_path / "cache"))
    cfg = tiny_config(str(toy_folder), steps=2)
    ds = load_dataset(cfg.data, cfg.features, progress=False)
    return trained_model(cfg, ds, progress=False).checkpoint


def test_a_checkpoint_write_that_fails_midway_leaves_the_previous_one(tmp_path, trained_checkpoint):
    from pitchtimbre import checkpoints

    path = tmp_path / "written" / CHECKPOINT_FILE
    before = read_checkpoint(trained_checkpoint)
    checkpoints.save_checkpoint(path, before)
    real_save = torch.save

    def dies_midway(state, target):
        real_save(state, target)
        with open(target, "r+b") as fh:  # half written, then the process is stopped
            fh.truncate(fh.seek(0, 2) // 2)
        raise KeyboardInterrupt

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(checkpoints.torch, "save", dies_midway)
        with pytest.raises(KeyboardInterrupt):
            checkpoints.save_checkpoint(path, {**before, "step": 999})
    assert read_checkpoint(path)["step"] == before["step"]
    assert [p.name for p in path.parent.iterdir()] == [CHECKPOINT_FILE]


@pytest.mark.parametrize("field", ["mean", "config", "history"])
def test_a_checkpoint_missing_or_mangling_a_field_is_named_as_damaged(
    tmp_path, trained_checkpoint, field
):
    from pitchtimbre.checkpoints import load_checkpoint, save_checkpoint

    state = read_checkpoint(trained_checkpoint)
    if field == "history":
        state[field] = "{not json"
    else:
        del state[field]
    damaged = tmp_path / "damaged" / CHECKPOINT_FILE
    save_checkpoint(damaged, state)
    with pytest.raises(CheckpointError) as raised:
        load_checkpoint(damaged)
    message = str(raised.value)
    assert message.startswith(f"{damaged}: ")
    assert "a damaged checkpoint" in message and message.endswith("delete it and retrain")
    assert load_checkpoint(trained_checkpoint).meta["step"] == 2
