from __future__ import annotations

import functools
import json
import subprocess
import sys
from types import SimpleNamespace

import pytest
import torch
from conftest import instruments_on_a_line, write_nsynth_folder

from pitchtimbre.config import DataConfig, ExperimentConfig, ModelConfig, TrainConfig
from pitchtimbre.data import NoteDataset, load_dataset
from pitchtimbre.errors import DataError
from pitchtimbre.experiment import (
    aggregate,
    directions,
    evaluate_checkpoint,
    instrument_probe_table,
    load_results,
    markdown_table,
    pitch_leak_table,
    reproduce,
)
from pitchtimbre.machine import pick_device
from pitchtimbre.metrics import input_probes

METRIC_KEYS = {"denseness", "divergence", "ratio", "probe"}


def small_experiment(source: str, seeds: tuple[int, ...] = (0, 1)) -> ExperimentConfig:
    return ExperimentConfig(
        profile="ci",
        data=DataConfig(source=source, heldout_per_family=1),
        model=ModelConfig(hidden=16, layers=2, kernel_size=3),
        train=TrainConfig(steps=20, log_every=5, checkpoint_every=10),
        seeds=seeds,
    )


def check_space(node: dict) -> None:
    assert set(node) == METRIC_KEYS
    assert set(node["probe"]) == {"pitch", "instrument"}


@pytest.fixture(scope="module")
def reproduced(tmp_path_factory):
    folder = write_nsynth_folder(
        tmp_path_factory.mktemp("src") / "toy",
        [
            ("bass_a", "bass", 0.2),
            ("bass_b", "bass", 0.4),
            ("bass_c", "bass", 0.6),
            ("flute_a", "flute", 0.5),
            ("flute_b", "flute", 0.7),
            ("flute_c", "flute", 0.9),
        ],
    )
    out = tmp_path_factory.mktemp("out")
    return reproduce(small_experiment(str(folder)), out, progress=False), out, folder


def test_results_json_schema(reproduced):
    results, out, folder = reproduced
    on_disk = json.loads((out / "results.json").read_text())
    assert on_disk == json.loads(json.dumps(results))
    assert on_disk["profile"] == "ci" and on_disk["seeds"] == [0, 1]
    assert on_disk["source"].startswith("folder ")
    for name in ("vanilla", "proposed"):
        for space in ("pitch", "timbre"):
            check_space(on_disk["models"][name][space])
            assert set(on_disk["poster"][name][space]) == {"denseness", "divergence", "ratio"}
        assert len(on_disk["checkpoints"][name]) == 2
    assert [row["seed"] for row in on_disk["per_seed"]] == [0, 1]
    assert on_disk["poster"]["vanilla"]["pitch"]["denseness"] == 3.334
    assert on_disk["poster"]["proposed"]["timbre"]["divergence"] == 2.654
    cfg = small_experiment(str(folder))
    ds = load_dataset(cfg.data, cfg.features, progress=False)
    held = ds.heldout()  # the probes on the held-out notes' own spectrograms
    assert on_disk["input_probe"] == input_probes(
        held.features, held.pitch, held.instrument, cfg.eval
    )
    mean = (
        on_disk["per_seed"][0]["proposed"]["pitch"]["denseness"]
        + on_disk["per_seed"][1]["proposed"]["pitch"]["denseness"]
    ) / 2
    assert on_disk["models"]["proposed"]["pitch"]["denseness"] == pytest.approx(mean)
    summary = (out / "results.md").read_text()
    assert summary.startswith("| run |")
    # the machine the timings belong to: in results.json and under the table in results.md
    assert on_disk["machine"]["device"] == str(pick_device(small_experiment("x").train.device))
    assert on_disk["machine"]["torch"] == torch.__version__
    assert f"cpu: {on_disk['machine']['cpu']}" in summary
    # and the data they trained on: a fingerprint of the features, labels and split
    fingerprint = ds.fingerprint
    assert on_disk["data"]["fingerprint"] == fingerprint
    notes, heldout = on_disk["data"]["notes"], on_disk["data"]["heldout_notes"]
    assert 0 < heldout < notes
    assert summary.endswith(
        f"\nData: {notes:,} notes, {heldout:,} of them from "
        f"{on_disk['data']['instruments_heldout']} held-out instruments; "
        f"fingerprint {fingerprint}\n"
    )
    assert set(on_disk["seconds"]) == {"data", "training", "evaluation"}
    assert all(v >= 0 for v in on_disk["seconds"].values())
    for name in ("vanilla", "proposed"):
        assert len(on_disk["train_step_ms"][name]) == 2
        assert all(ms > 0 for ms in on_disk["train_step_ms"][name])
        # the steps after the first logging window are a part of the whole training time
        train = small_experiment("x").train
        timed = zip(on_disk["train_step_ms"][name], on_disk["train_seconds"][name], strict=True)
        for ms, secs in timed:
            assert ms / 1000 * (train.steps - train.log_every) <= secs + 0.1  # both rounded
    assert (out / "figures" / "metrics.png").stat().st_size > 10_000
    assert (out / "figures" / "loss_curves.png").stat().st_size > 10_000


def test_a_second_reproduce_loads_the_cached_models(reproduced):
    results, out, folder = reproduced
    again = reproduce(small_experiment(str(folder)), out / "again", progress=False, figures=False)
    assert all(again["loaded_from_cache"]["vanilla"] + again["loaded_from_cache"]["proposed"])
    assert again["checkpoints"] == results["checkpoints"]
    assert again["models"] == results["models"]


def test_a_damaged_or_foreign_results_file_is_named(tmp_path):
    (tmp_path / "results.json").write_text('{"models": {"vanilla": ')  # cut short
    with pytest.raises(DataError, match=r"results\.json: not readable JSON .* reproduce --out"):
        load_results(tmp_path)
    (tmp_path / "results.json").write_text("[1, 2]")
    with pytest.raises(DataError, match=r"results\.json: not a results\.json of pitchtimbre"):
        load_results(tmp_path / "results.json")


def test_aggregate_and_directions():
    a = {"pitch": {"denseness": 1.0, "divergence": 2.0}}
    b = {"pitch": {"denseness": 3.0, "divergence": 2.0}}
    mean, spread = aggregate([a, b])
    assert mean == {"pitch": {"denseness": 2.0, "divergence": 2.0}}
    assert (
        spread["pitch"]["denseness"] == pytest.approx(2**0.5)
        and spread["pitch"]["divergence"] == 0.0
    )
    v = {s: {"denseness": 2.0, "divergence": 1.0, "ratio": 0.5} for s in ("pitch", "timbre")}
    p = {s: {"denseness": 1.0, "divergence": 3.0, "ratio": 3.0} for s in ("pitch", "timbre")}
    assert directions({"vanilla": v, "proposed": p})["all_four"]
    p["timbre"]["divergence"] = 0.5
    d = directions({"vanilla": v, "proposed": p})
    assert not d["all_four"] and not d["timbre_divergence"] and d["pitch_divergence"]
    assert d["pitch_ratio"] and d["timbre_ratio"]
    p["pitch"]["ratio"] = 0.4  # the ratios are reported, not part of the four
    d = directions({"vanilla": v, "proposed": p})
    assert not d["pitch_ratio"] and d["timbre_ratio"] and d["pitch_denseness"]


def scores(dense: float, div: float, probes: tuple[float, float]) -> dict:
    """One model's metrics: both spaces alike, except their kNN probes (pitch, instrument)."""
    space = {"denseness": dense, "divergence": div, "ratio": div / dense}
    return {
        "pitch": {**space, "probe": {"pitch": probes[0], "instrument": probes[1]}},
        "timbre": {**space, "ratio": 2 * div / dense, "probe": {"pitch": 0.25, "instrument": 0.75}},
    }


def test_markdown_table_rows_and_verdict_from_the_metrics():
    from pitchtimbre.experiment import poster_table

    models = {"vanilla": scores(2.0, 1.0, (0.9, 0.6)), "proposed": scores(0.5, 4.0, (0.95, 0.125))}
    zero = aggregate([models["vanilla"]])[1]
    results = {
        "models": models,
        "spread": {
            "vanilla": zero,
            "proposed": aggregate([models["proposed"], scores(0.7, 4.0, (0.95, 0.125))])[1],
        },
        "poster": poster_table(),
        "directions": directions(models),
    }
    table = markdown_table(results)
    # columns: pitch dens., div., ratio; timbre dens., div., ratio; pitch<-z^p, instr.<-z^t,
    # pitch<-z^t, instr.<-z^p
    assert (
        "| ours: vanilla | 2.000 | 1.000 | 0.500 | 2.000 | 1.000 | 1.000 | 0.900 | 0.750 | 0.250 | 0.600 |"
        in table
    )
    row = next(line for line in table.splitlines() if line.startswith("| ours: proposed"))
    assert row.split(" | ")[1:4] == ["0.500 ± 0.141", "4.000", "8.000 ± 1.616"]
    assert row.split(" | ")[7:] == ["0.950", "0.750", "0.250", "0.125 |"]
    assert "**reproduced** (every metric and ratio agrees)" in table
    models["proposed"]["timbre"].update(divergence=0.5, ratio=0.5)
    table = markdown_table({**results, "directions": directions(models)})
    assert "**NOT reproduced** (timbre_divergence, timbre_ratio)." in table


def test_markdown_table_names_the_verdict(reproduced):
    results, _, _ = reproduced
    table = markdown_table(results)
    assert "poster: vanilla | 3.334 | 2.279" in table
    assert "Poster's four directions" in table
    x = results["input_probe"]
    assert (
        f"| input X (no model) | – | – | – | – | – | – | X: {x['pitch']:.3f} | X: {x['instrument']:.3f} | – | – |"
        in table
    )
    older = {k: v for k, v in results.items() if k != "input_probe"}  # a results.json from before
    assert "input X" not in markdown_table(older)


def flat(scores: dict, prefix: str = "") -> dict[str, float]:
    """{'pitch': {'probe': {'pitch': 1.0}}} -> {'pitch.probe.pitch': 1.0}"""
    out = {}
    for key, value in scores.items():
        if isinstance(value, dict):
            out.update(flat(value, f"{prefix}{key}."))
        else:
            out[prefix + key] = value
    return out


def test_evaluate_on_another_source(reproduced, tmp_path):
    results, _, folder = reproduced
    ckpt = results["checkpoints"]["proposed"][0]
    other = write_nsynth_folder(
        tmp_path / "other", [("reed_x", "reed", 0.3), ("reed_y", "reed", 0.8)]
    )
    ev = evaluate_checkpoint(ckpt, str(other), tmp_path / "ev", progress=False)
    assert set(ev["models"]) == {"proposed"}
    check_space(ev["models"]["proposed"]["pitch"])
    table = markdown_table(load_results(tmp_path / "ev"))  # one model, no verdict
    rows = [line.split(" | ")[0] for line in table.splitlines() if line.startswith("| ")][1:]
    assert rows == ["| ours: proposed", "| input X (no model)", "| poster: proposed"]
    assert "directions" not in table
    assert set(ev["input_probe"]) == {"pitch", "instrument"}
    assert ev["checkpoints"] == {"proposed": [ckpt]}
    assert ev["data"]["left_out_seen_instruments"] == [] and ev["data"]["instruments"] == 2
    assert json.loads((tmp_path / "ev" / "results.json").read_text())["models"] == json.loads(
        json.dumps(ev["models"])
    )
    # on its own source, the instruments it was trained on are left out and listed
    own = evaluate_checkpoint(ckpt, str(folder), None, progress=False)
    assert len(own["data"]["left_out_seen_instruments"]) == 4 and own["data"]["instruments"] == 2
    # ... which leaves the reproduction's held-out instruments, scored as reproduce scored
    # them: the same notes, normalised by the training notes' statistics in the checkpoint
    scores, reproduced_scores = (
        flat(own["models"]["proposed"]),
        flat(results["per_seed"][0]["proposed"]),
    )
    assert len(scores) == 10 and scores == pytest.approx(reproduced_scores, rel=1e-5)
    lonely = write_nsynth_folder(tmp_path / "lonely", [("reed_z", "reed", 0.3)])
    with pytest.raises(DataError, match="needs at least two instruments to evaluate"):
        evaluate_checkpoint(ckpt, str(lonely), None, progress=False)
    assert ev["trained_steps"] == {"proposed": [20]} and ev["complete"] is True


def test_evaluate_ignores_the_training_runs_choice_of_instruments(reproduced, tmp_path):
    """A model trained on some families (NSynth's names) is evaluated on every instrument of
    another source (here reeds, a family it never trained on)."""
    results, _, _ = reproduced
    state = torch.load(results["checkpoints"]["proposed"][0], weights_only=True)
    cfg = ExperimentConfig.from_dict(json.loads(state["config"]))
    picky = cfg.with_overrides({"data.families": ("bass", "flute")})
    (tmp_path / "picky").mkdir()
    torch.save({**state, "config": json.dumps(picky.to_dict())}, tmp_path / "picky" / "c.pt")
    other = write_nsynth_folder(
        tmp_path / "other", [("reed_x", "reed", 0.3), ("reed_y", "reed", 0.8)]
    )
    ev = evaluate_checkpoint(tmp_path / "picky" / "c.pt", str(other), None, progress=False)
    assert ev["data"]["instruments"] == 2


def test_evaluate_keeps_a_reproduction_and_flags_a_half_trained_model(reproduced, tmp_path, caplog):
    results, out, _ = reproduced
    other = write_nsynth_folder(
        tmp_path / "other", [("reed_x", "reed", 0.3), ("reed_y", "reed", 0.8)]
    )
    ckpt = results["checkpoints"]["vanilla"][0]
    before = (out / "results.json").read_bytes()
    with pytest.raises(DataError, match=r"results\.json: holds a reproduction's results"):
        evaluate_checkpoint(ckpt, str(other), out, progress=False)
    assert (out / "results.json").read_bytes() == before
    # a checkpoint of an interrupted run: evaluated, but said so and recorded
    state = torch.load(ckpt, weights_only=True)
    (tmp_path / "half").mkdir()
    torch.save({**state, "complete": False, "step": 10}, tmp_path / "half" / "checkpoint.pt")
    with caplog.at_level("WARNING", logger="pitchtimbre.experiment"):
        ev = evaluate_checkpoint(tmp_path / "half" / "checkpoint.pt", str(other), None, False)
    assert "training stopped at step 10 of 20" in caplog.text
    assert ev["trained_steps"] == {"vanilla": [10]} and ev["complete"] is False


def test_evaluate_command_bad_input(tmp_path, reproduced):
    _, _, folder = reproduced
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "pitchtimbre",
            "evaluate",
            "--checkpoint",
            str(tmp_path / "none.pt"),
            "--source",
            str(folder),
            "--out",
            str(tmp_path / "o"),
        ],
        capture_output=True,
        text=True,
        check=False,
    )
    assert (
        proc.returncode == 2
        and "none.pt: checkpoint not found" in proc.stderr
        and "Traceback" not in proc.stderr
    )


def test_fresh_retrains_instead_of_loading(reproduced):
    _, out, folder = reproduced
    again = reproduce(
        small_experiment(str(folder), seeds=(0,)),
        out / "fresh",
        progress=False,
        figures=False,
        fresh=True,
    )
    assert not any(again["loaded_from_cache"]["vanilla"] + again["loaded_from_cache"]["proposed"])


def held_out(pitch, inst) -> SimpleNamespace:
    """What the per-instrument tables read of a NoteDataset, for three instruments, two of
    them with a preset name (as a SoundFont render has) and one without (as NSynth)."""
    held = SimpleNamespace(
        pitch=pitch,
        instrument=inst,
        instrument_names=["oboe", "horn", "tuba"],
        preset_names={"horn": "French Horn", "tuba": "Tuba"},
    )
    held.instrument_label = functools.partial(NoteDataset.instrument_label, held)
    return held


def test_instrument_probe_table_lists_the_worst_instruments_first():
    x, pitch, inst = instruments_on_a_line()
    held = held_out(pitch, inst)
    apart = (100.0 * inst + 0.1 * pitch)[:, None]  # every instrument far from the others
    lines = instrument_probe_table({"input X": x, "apart": apart}, held, k=1).splitlines()
    assert lines[:2] == ["| instrument | input X | apart |", "|---|---|---|"]
    assert lines[2:] == [
        "| French Horn (horn) | 0.33 (Tuba) | 1.00 |",
        "| Tuba (tuba) | 0.33 (French Horn) | 1.00 |",
        "| oboe | 1.00 | 1.00 |",
    ]
    assert len(instrument_probe_table({"input X": x}, held, k=1, worst=2).splitlines()) == 4


def test_pitch_leak_table_lists_the_most_leaking_instruments_first():
    x, pitch, inst = instruments_on_a_line()
    held = held_out(pitch, inst)
    pitch_only = (0.1 * pitch + 0.001 * inst)[:, None]  # every note's pitch readable
    spaces = {"pitch only": pitch_only, "x": x}
    lines = pitch_leak_table(spaces, held, k=1).splitlines()  # sorted by "x", the last
    assert lines == [
        "| instrument | pitch only | x |",
        "|---|---|---|",
        "| French Horn (horn) | 1.00 (0.0) | 1.00 (0.0) |",
        "| Tuba (tuba) | 1.00 (0.0) | 1.00 (0.0) |",
        "| oboe | 1.00 (0.0) | 0.33 (1.0) |",
    ]
    by_first = pitch_leak_table(spaces, held, k=1, sort_by="pitch only", worst=1).splitlines()
    assert by_first[2:] == ["| oboe | 1.00 (0.0) | 0.33 (1.0) |"]  # all tie: held-out order
    with pytest.raises(ValueError, match="sort_by='tuba' is not one of"):
        pitch_leak_table(spaces, held, k=1, sort_by="tuba")
    with pytest.raises(ValueError, match="at least one note space"):
        pitch_leak_table({}, held, k=1)


def test_pitch_leak_table_breaks_ties_by_the_smaller_error():
    # instrument 0 at 0, 10, 20 (pitches 0, 1, 2); instrument 2 huddles near pitch 0 and
    # reads 0, 0, 0 (1/3 exact, mean error 1); instrument 1 reads 2, 1, 0 (1/3, 4/3)
    x = torch.tensor([0.0, 10.0, 20.0, 20.1, 10.1, -0.5, 0.1, 0.2, 0.3])[:, None]
    pitch = torch.arange(3).repeat(3)
    inst = torch.arange(3).repeat_interleave(3)
    assert pitch_leak_table({"x": x}, held_out(pitch, inst), k=1).splitlines()[2:] == [
        "| oboe | 0.67 (0.7) |",
        "| Tuba (tuba) | 0.33 (1.0) |",
        "| French Horn (horn) | 0.33 (1.3) |",
    ]
