"""The poster's experiment: vanilla vs proposed VAE on unseen instruments.

:func:`reproduce` trains both models with the same data, network, budget and seeds (the
vanilla VAE is the same trainer with lambda_p = lambda_t = 0), evaluates them on the
held-out instruments and writes ``results.json``, ``results.md`` and figures.
:func:`evaluate_checkpoint` evaluates one trained model on another source.

Chapter: 07_results
"""

from __future__ import annotations

import json
import logging
import statistics
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import torch

from . import distributed
from .cache import atomic_write_bytes, atomic_write_json
from .checkpoints import TrainResult, load_checkpoint
from .config import ExperimentConfig
from .data.dataset import NoteDataset, load_dataset, require_two_pitches
from .errors import ConfigError, DataError
from .losses import ContrastiveLoss
from .machine import describe_machine, machine_lines, pick_device
from .metrics import evaluate_latents, input_probes, pitch_leak_by_instrument, probe_by_instrument
from .parallel import trained_models
from .training import model_name, steady_step_seconds

log = logging.getLogger(__name__)

MODELS = ("vanilla", "proposed")
SPACES = ("pitch", "timbre")
POSTER: dict[str, dict[str, dict[str, float]]] = {
    "vanilla": {
        "pitch": {"denseness": 3.334, "divergence": 2.279},
        "timbre": {"denseness": 3.640, "divergence": 1.541},
    },
    "proposed": {
        "pitch": {"denseness": 2.891, "divergence": 3.551},
        "timbre": {"denseness": 3.420, "divergence": 2.654},
    },
}
"""The poster's result table (Tanaka et al. 2021). Absolute values depend on an unknown
latent scale: compare directions and ratios."""


def poster_table() -> dict[str, Any]:
    """The poster's four numbers per model, with the ratio divergence/denseness added.

    Chapter: 07_results
    """
    return {
        m: {s: {**v, "ratio": v["divergence"] / v["denseness"]} for s, v in spaces.items()}
        for m, spaces in POSTER.items()
    }


def model_configs(cfg: ExperimentConfig) -> dict[str, ExperimentConfig]:
    """The two models of the comparison: identical but for the contrastive weights.

    Chapter: 05_training
    """
    return {
        "vanilla": cfg.with_overrides({"loss.lambda_pitch": 0.0, "loss.lambda_timbre": 0.0}),
        "proposed": cfg,
    }


def _leaves(tree: dict, prefix: tuple[str, ...] = ()) -> dict[tuple[str, ...], float]:
    out = {}
    for k, v in tree.items():
        if isinstance(v, dict):
            out.update(_leaves(v, (*prefix, k)))
        else:
            out[(*prefix, k)] = v
    return out


def _tree(leaves: dict[tuple[str, ...], float]) -> dict:
    root: dict = {}
    for path, v in leaves.items():
        node = root
        for k in path[:-1]:
            node = node.setdefault(k, {})
        node[path[-1]] = v
    return root


def aggregate(per_seed: Sequence[dict]) -> tuple[dict, dict]:
    """Mean and spread (sample standard deviation; 0 for one seed) over seeds of metric trees.

    Chapter: 07_results
    """
    leaves = [_leaves(t) for t in per_seed]
    keys = leaves[0].keys()
    mean = {k: statistics.fmean(x[k] for x in leaves) for k in keys}
    spread = {
        k: (statistics.stdev([x[k] for x in leaves]) if len(leaves) > 1 else 0.0) for k in keys
    }
    return _tree(mean), _tree(spread)


def directions(models: dict) -> dict[str, bool]:
    """Does proposed beat vanilla on each of the poster's four metrics (and the ratios)?

    Chapter: 07_results
    """
    v, p = models["vanilla"], models["proposed"]
    out = {}
    for s in SPACES:
        out[f"{s}_denseness"] = p[s]["denseness"] < v[s]["denseness"]
        out[f"{s}_divergence"] = p[s]["divergence"] > v[s]["divergence"]
        out[f"{s}_ratio"] = p[s]["ratio"] > v[s]["ratio"]
    out["all_four"] = all(out[f"{s}_{m}"] for s in SPACES for m in ("denseness", "divergence"))
    return out


def evaluate_model(model, heldout: NoteDataset, cfg: ExperimentConfig) -> dict:
    """Metrics of a trained model on the held-out notes.

    Chapter: 06_metrics
    """
    return evaluate_latents(model, heldout.features, heldout.pitch, heldout.instrument, cfg.eval)


def _fmt(mean: float, spread: float | None) -> str:
    return f"{mean:.3f}" if not spread else f"{mean:.3f} ± {spread:.3f}"


def markdown_table(results: dict) -> str:
    """The reproduction table beside the poster's numbers, as markdown: every model the
    results hold (both for :func:`reproduce`, one for :func:`evaluate_checkpoint`, whose
    results have no verdict on the poster's directions, which need both).

    Chapter: 07_results
    """
    head = (
        "| run | pitch dens. ↓ | pitch div. ↑ | pitch ratio ↑ | timbre dens. ↓ | timbre div. ↑ "
        "| timbre ratio ↑ | kNN pitch←z^p | instr.←z^t | pitch←z^t | instr.←z^p |"
    )
    lines = [head, "|" + "---|" * 11]
    ours = [m for m in MODELS if m in results["models"]]
    for m in ours:
        mean, spread = results["models"][m], results["spread"][m]
        cells = [f"ours: {m}"]
        for s in SPACES:
            for k in ("denseness", "divergence", "ratio"):
                cells.append(_fmt(mean[s][k], spread[s][k]))
        for s, target in (
            ("pitch", "pitch"),
            ("timbre", "instrument"),
            ("timbre", "pitch"),
            ("pitch", "instrument"),
        ):
            cells.append(_fmt(mean[s]["probe"][target], spread[s]["probe"][target]))
        lines.append("| " + " | ".join(cells) + " |")
    if "input_probe" in results:  # results.json files written before it existed lack it
        x = results["input_probe"]
        cells = ["input X (no model)"] + ["–"] * 6
        cells += [f"X: {x['pitch']:.3f}", f"X: {x['instrument']:.3f}", "–", "–"]
        lines.append("| " + " | ".join(cells) + " |")
    for m in ours:
        p = results["poster"][m]
        cells = [f"poster: {m}"]
        for s in SPACES:
            cells += [
                f"{p[s]['denseness']:.3f}",
                f"{p[s]['divergence']:.3f}",
                f"{p[s]['ratio']:.3f}",
            ]
        cells += ["–"] * 4
        lines.append("| " + " | ".join(cells) + " |")
    if "directions" not in results:
        return "\n".join(lines) + "\n"
    d = results["directions"]
    verdict = "reproduced" if d["all_four"] else "NOT reproduced"
    lines.append("")
    lines.append(
        f"Poster's four directions (proposed denser and more divergent in both spaces): **{verdict}** "
        f"({', '.join(k for k, ok in d.items() if k != 'all_four' and not ok) or 'every metric and ratio agrees'})."
    )
    return "\n".join(lines) + "\n"


def _by_instrument_markdown(
    per: dict[str, dict[int, Any]],
    held: NoteDataset,
    order: list[int],
    cell: Callable[[Any], str],
    worst: int | None,
) -> str:
    """Markdown: one column per note space of ``per`` (name -> {instrument: result}), one row
    per instrument in ``order`` (the first ``worst``), each cell ``cell(result)``."""
    lines = ["| instrument | " + " | ".join(per) + " |", "|---" * (len(per) + 1) + "|"]
    for i in order[:worst]:
        cells = " | ".join(cell(p[i]) for p in per.values())
        lines.append(f"| {held.instrument_label(i)} | {cells} |")
    return "\n".join(lines) + "\n"


def instrument_probe_table(
    notes: dict[str, torch.Tensor], held: NoteDataset, k: int, worst: int | None = None
) -> str:
    """Markdown: the instrument probe of several note spaces (name -> [N, D], e.g. the input
    and each model's timbre space), one row per held-out instrument (its preset's name, where
    known, and its instrument name), each cell "accuracy (most often named instead)". Rows go
    from the lowest mean accuracy up; ``worst`` keeps only that many.

    Chapter: 07_results
    """
    per = {
        name: probe_by_instrument(x, held.pitch, held.instrument, k) for name, x in notes.items()
    }
    order = sorted(
        held.instrument.unique().tolist(), key=lambda i: sum(p[i][0] for p in per.values())
    )

    def cell(result: tuple[float, int | None]) -> str:
        acc, instead = result
        named = "" if instead is None else f" ({held.instrument_label(instead, short=True)})"
        return f"{acc:.2f}{named}"

    return _by_instrument_markdown(per, held, order, cell, worst)


def pitch_leak_table(
    notes: dict[str, torch.Tensor],
    held: NoteDataset,
    k: int,
    worst: int | None = None,
    sort_by: str | None = None,
) -> str:
    """Markdown: the pitch probe (from other instruments) of several note spaces (name ->
    [N, D], e.g. each model's timbre space), one row per held-out instrument, each cell
    "exact fraction (mean error in semitones)". Rows go from the most leakage in the space
    ``sort_by`` (default: the last one) down; ``worst`` keeps only that many.

    Chapter: 07_results
    """
    if not notes:
        raise ValueError("pitch_leak_table: give at least one note space")
    key = list(notes)[-1] if sort_by is None else sort_by
    if key not in notes:
        raise ValueError(f"pitch_leak_table: sort_by={key!r} is not one of {list(notes)}")
    per = {
        name: pitch_leak_by_instrument(x, held.pitch, held.instrument, k)
        for name, x in notes.items()
    }
    order = sorted(
        held.instrument.unique().tolist(), key=lambda i: (-per[key][i][0], per[key][i][1])
    )
    return _by_instrument_markdown(
        per, held, order, lambda result: f"{result[0]:.2f} ({result[1]:.1f})", worst
    )


def reproduce(
    cfg: ExperimentConfig,
    out: Path | str,
    contrastive_fn: ContrastiveLoss | None = None,
    progress: bool = True,
    figures: bool = True,
    fresh: bool = False,
    dataset: NoteDataset | None = None,
) -> dict:
    """Train (or load from the cache) vanilla and proposed for every seed, evaluate both on
    the held-out instruments, and write ``results.json``, ``results.md`` and figures to
    ``out``. ``dataset``: the notes of ``cfg`` when the caller has them loaded already (a
    chapter, not under ``torchrun``), else they are loaded here. An interrupted training
    continues from its last checkpoint; ``fresh`` retrains every model from scratch instead.
    Returns the results dict (under ``torchrun``: on rank 0; the others train their share
    and return an empty dict).

    ``results.json`` holds: ``profile``, ``source``, ``seeds``; ``models`` and ``spread``
    (mean and standard deviation over seeds of each model's metrics: per space ``denseness``,
    ``divergence``, ``ratio`` and the kNN ``probe`` accuracies), ``per_seed`` (the same per
    seed), ``poster`` (the poster's figures), ``input_probe`` (kNN on the spectrograms
    themselves), ``directions`` (which of the poster's four directions hold); ``checkpoints``,
    ``train_seconds`` and ``train_step_ms`` (per model, one per seed; milliseconds a step
    after the first logging window), ``loaded_from_cache``, ``train_processes``;
    ``seconds`` (the data, training and evaluation phases of this call), ``machine`` (CPU,
    GPU, torch and the training device, as :func:`~pitchtimbre.machine.describe_machine`
    names them); ``data`` (note and instrument counts, exclusions, and the fingerprint of
    :func:`data_line`) and ``config``. ``results.md`` holds the table and, under it, the
    machine and the data.

    Chapter: 07_results
    """
    out = Path(out)
    distributed.init(pick_device(cfg.train.device).type)  # joins a torchrun group, if any
    main = distributed.is_main()
    if main:
        out.mkdir(parents=True, exist_ok=True)
    clock = {"start": time.perf_counter()}
    if dataset is None:
        with distributed.main_first():  # under torchrun, rank 0 renders and caches the data
            dataset = load_dataset(cfg.data, cfg.features, progress=progress and main)
    elif dataset.features.shape[1:] != (cfg.features.n_bins, cfg.features.n_frames):
        raise ConfigError(
            f"reproduce: the dataset given has features {tuple(dataset.features.shape[1:])}, "
            f"the config asks for {(cfg.features.n_bins, cfg.features.n_frames)}: pass the "
            "notes of this config, or none"
        )
    clock["data"] = time.perf_counter()
    heldout = dataset.heldout()
    per_seed: list[dict[str, Any]] = []
    histories: dict[str, list[dict[str, float]]] = {}
    checkpoints: dict[str, list[str]] = {m: [] for m in MODELS}
    seconds: dict[str, list[float]] = {m: [] for m in MODELS}
    step_ms: dict[str, list[float | None]] = {m: [] for m in MODELS}
    cached: dict[str, list[bool]] = {m: [] for m in MODELS}
    jobs = {
        (seed, name): (
            mcfg.with_overrides({"train.seed": seed}),
            contrastive_fn if name == "proposed" else None,
        )
        for seed in cfg.seeds
        for name, mcfg in model_configs(cfg).items()
    }
    models, processes = trained_models(jobs, dataset, progress=progress, retrain=fresh)
    clock["training"] = time.perf_counter()
    for seed in cfg.seeds:
        row: dict[str, Any] = {"seed": seed}
        for name in MODELS:
            mcfg, result = jobs[seed, name][0], models[seed, name]
            if not main:
                continue  # rank 0 evaluates and writes
            row[name] = evaluate_model(result.model, heldout, mcfg)
            checkpoints[name].append(str(result.checkpoint))
            seconds[name].append(round(result.seconds, 1))
            steady = steady_step_seconds(result.history)
            step_ms[name].append(None if steady is None else round(1000 * steady, 2))
            cached[name].append(result.from_cache)
            histories.setdefault(name, result.history)
        per_seed.append(row)
    if not main:
        return {}
    means, spreads = {}, {}
    for name in MODELS:
        means[name], spreads[name] = aggregate([r[name] for r in per_seed])
    probe = input_probes(heldout.features, heldout.pitch, heldout.instrument, cfg.eval)
    clock["evaluation"] = time.perf_counter()
    results = {
        "profile": cfg.profile,
        "source": dataset.summary.source,
        "seeds": list(cfg.seeds),
        "models": means,
        "spread": spreads,
        "per_seed": per_seed,
        "poster": poster_table(),
        "input_probe": probe,
        "directions": directions(means),
        "checkpoints": checkpoints,
        "train_seconds": seconds,
        "train_step_ms": step_ms,
        "seconds": {
            "data": round(clock["data"] - clock["start"], 1),
            "training": round(clock["training"] - clock["data"], 1),
            "evaluation": round(clock["evaluation"] - clock["training"], 1),
        },
        "train_processes": processes,
        "loaded_from_cache": cached,
        "machine": describe_machine(distributed.local_device(pick_device(cfg.train.device))),
        "data": {
            "notes": dataset.summary.notes,
            "heldout_notes": len(heldout),
            "instruments_train": dataset.summary.instruments_train,
            "instruments_heldout": dataset.summary.instruments_heldout,
            "excluded": dataset.summary.excluded,
            "fingerprint": dataset.fingerprint,
        },
        "config": cfg.to_dict(),
    }
    atomic_write_json(out / "results.json", results)
    measured_on = "Measured on: " + "; ".join(machine_lines(results["machine"])) + "\n"
    trained_on = f"Data: {data_line(results['data'])}\n"
    atomic_write_bytes(
        out / "results.md", f"{markdown_table(results)}\n{measured_on}\n{trained_on}".encode()
    )
    if figures:
        from .viz import plot_loss_curves, plot_metrics, save_figure

        save_figure(plot_metrics(results), out / "figures" / "metrics.png")
        save_figure(plot_loss_curves(histories), out / "figures" / "loss_curves.png")
    return results


def data_line(data: dict) -> str:
    """The notes a reproduction was trained and evaluated on, with their fingerprint: a hash
    of the features, the labels, the split and the normalisation. Two machines that print the
    same fingerprint trained on the same data, so a difference in their results comes from
    the arithmetic (chapter 5), not from the notes.

    Chapter: 07_results
    """
    return (
        f"{data['notes']:,} notes, {data['heldout_notes']:,} of them from "
        f"{data['instruments_heldout']} held-out instruments; fingerprint {data['fingerprint']}"
    )


def load_results(path: Path | str) -> dict:
    """A results.json written by :func:`reproduce` (or a folder holding one).

    Chapter: 07_results
    """
    path = Path(path)
    if path.is_dir():
        path = path / "results.json"
    if not path.is_file():
        raise DataError(
            f"{path}: no results; run `python -m pitchtimbre reproduce --out {path.parent}` first"
        )
    rerun = f"run `python -m pitchtimbre reproduce --out {path.parent}` again"
    try:
        results = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise DataError(f"{path}: not readable JSON ({exc}); a half-copied file? {rerun}") from exc
    if not isinstance(results, dict) or "models" not in results:
        raise DataError(f"{path}: not a results.json of pitchtimbre; {rerun}")
    return results


def _refuse_reproduction_folder(out: Path) -> None:
    """Refuse to overwrite the results.json of a reproduction (both models, every seed) with
    one model's evaluation."""
    path = out / "results.json"
    if not path.is_file():
        return
    try:
        existing = json.loads(path.read_text())
    except (OSError, ValueError):
        return  # not ours, or unreadable: an evaluation may replace it
    if isinstance(existing, dict) and "directions" in existing:
        raise DataError(
            f"{path}: holds a reproduction's results, which an evaluation would overwrite; "
            "pass another --out folder"
        )


def evaluate_checkpoint(
    checkpoint: Path | str, source: str, out: Path | str | None = None, progress: bool = True
) -> dict:
    """Evaluate one trained model on another source (a SoundFont, an NSynth-layout folder or
    NSynth root, of which only the held-out split is read). Every instrument of the source
    counts as unseen, whatever families or instrument sources the training run kept, except
    any the model was trained on, which are left out and listed. Writes ``out/results.json``
    when ``out`` is given: :func:`reproduce`'s keys for one model and one seed (``profile``, ``source``,
    ``seeds``, ``models``, ``spread``, ``per_seed``, ``poster``, ``input_probe``,
    ``checkpoints``), its own ``data`` (``notes``, ``instruments``,
    ``left_out_seen_instruments``), and ``trained_steps`` and ``complete`` (whether training
    had finished); no ``directions``, which need both models.

    Chapter: 07_results
    """
    if out is not None:
        _refuse_reproduction_folder(Path(out))
    trained: TrainResult = load_checkpoint(checkpoint)
    step, steps = int(trained.meta["step"]), trained.config.train.steps
    if not trained.meta["complete"]:
        log.warning(
            "%s: training stopped at step %d of %d (an interrupted run): these are the scores "
            "of a half-trained model; rerun the same reproduce to finish it",
            checkpoint,
            step,
            steps,
        )
    # the training run's choice of instruments (NSynth families and sources) says nothing
    # about another source's; its data.pitch_range and data.velocities filters stay
    cfg = trained.config.with_overrides(
        {"data.source": source, "data.families": None, "data.instrument_sources": None}
    )
    dataset = load_dataset(
        cfg.data,
        cfg.features,
        progress=progress,
        stats=(trained.meta["mean"], trained.meta["std"]),
        all_heldout=True,
    )
    seen = set(json.loads(trained.meta["instruments"]))
    overlap = sorted(seen & set(dataset.instrument_names))
    if overlap:
        keep = [dataset.instrument_names[i] not in seen for i in dataset.instrument.tolist()]
        dataset = dataset.subset(torch.tensor(keep))
        if len(set(dataset.instrument.tolist())) < 2:
            raise DataError(
                f"{source}: fewer than two instruments the model has not seen in training"
            )
        require_two_pitches(dataset.pitch.tolist(), "unseen", source)
    name = model_name(cfg)
    metrics = evaluate_model(trained.model, dataset, cfg)
    seed = int(trained.meta["seed"])
    results = {
        "profile": cfg.profile,
        "source": dataset.summary.source,
        "seeds": [seed],
        "models": {name: metrics},
        "spread": {name: aggregate([metrics])[1]},
        "per_seed": [{"seed": seed, name: metrics}],
        "poster": poster_table(),
        "input_probe": input_probes(dataset.features, dataset.pitch, dataset.instrument, cfg.eval),
        "checkpoints": {name: [str(checkpoint)]},
        "trained_steps": {name: [step]},
        "complete": bool(trained.meta["complete"]),
        "data": {
            "notes": len(dataset),
            "instruments": len(set(dataset.instrument.tolist())),
            "left_out_seen_instruments": overlap,
        },
    }
    if out is not None:
        atomic_write_json(Path(out) / "results.json", results)
    return results
