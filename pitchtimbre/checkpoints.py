"""Checkpoint files: what a trained model's folder holds, and reading it back.

The training loop (:mod:`pitchtimbre.training`) decides what goes into a checkpoint; this
module writes the file atomically and reads it back with clear errors. It is kept out of
the trainer's code that keys the model cache (:data:`~pitchtimbre.training.TRAINER_MODULES`):
a better error message here changes no model, so it retrains none.

Chapter: 05_training
"""

from __future__ import annotations

import json
import pickle
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from .cache import atomic_path
from .config import ExperimentConfig
from .errors import CheckpointError
from .model import PitchTimbreVAE

CHECKPOINT_FORMAT = "pitchtimbre-checkpoint"
CHECKPOINT_VERSION = 2
CHECKPOINT_FILE = "checkpoint.pt"
HISTORY_FILE = "history.json"


@dataclass
class TrainResult:
    """A trained model and how it got there.

    Chapter: 05_training
    """

    model: PitchTimbreVAE
    config: ExperimentConfig
    history: list[dict[str, float]]
    checkpoint: Path
    seconds: float
    from_cache: bool = False
    meta: dict[str, Any] = field(default_factory=dict)


def save_checkpoint(path: Path, state: dict[str, Any]) -> None:
    """Write a checkpoint atomically (a killed write leaves the previous one intact).

    Chapter: 05_training
    """
    with atomic_path(path) as tmp:
        torch.save(state, tmp)


def checkpoint_problem(state: object) -> str | None:
    """Why what ``torch.load`` returned is not a checkpoint this package reads, or None when
    it is one (read by :func:`read_checkpoint` and by ``python -m pitchtimbre cache``).

    Chapter: 05_training
    """
    if not isinstance(state, dict):
        return "not a pitchtimbre checkpoint"
    if state and all(isinstance(v, torch.Tensor) for v in state.values()):
        return "bare weights (a state_dict) without the settings that built them"
    if state.get("format") != CHECKPOINT_FORMAT:
        return f"not a pitchtimbre checkpoint (no '{CHECKPOINT_FORMAT}' marker)"
    if state.get("version") != CHECKPOINT_VERSION:
        return f"checkpoint version {state.get('version')}, this package reads {CHECKPOINT_VERSION}"
    return None


def pickled_class(exc: BaseException) -> str | None:
    """The class or function named by ``torch.load(..., weights_only=True)``'s refusal of a
    file that pickles one (a model saved whole with ``torch.save(model)``), else None.

    Chapter: 05_training
    """
    if not isinstance(exc, pickle.UnpicklingError):
        return None
    found = re.search(r"(?:GLOBAL|Unsupported class) ([\w.]+)", str(exc))  # torch 2.4 on, before
    return found.group(1) if found else None


def _damaged(path: Path, exc: BaseException) -> CheckpointError:
    """The error for a checkpoint torch cannot read, with torch's reason: its message runs to
    a page (advice on ``weights_only``, terminal colour codes), the reason is one paragraph
    of it, cut here to its first sentence or 160 characters."""
    text = re.sub(r"\x1b\[[0-9;]*m", "", str(exc)).split("WeightsUnpickler error:", 1)[-1]
    paragraph = next((p for p in re.split(r"\n\s*\n", text) if p.strip()), "")
    text = " ".join(paragraph.split())
    sentence = re.match(r"(.+?[.!?])(\s|$)", text)
    text = sentence.group(1) if sentence else text
    text = text if len(text) <= 160 else text[:157].rsplit(" ", 1)[0] + " ..."
    return CheckpointError(
        f"{path}: a damaged or truncated checkpoint ({exc.__class__.__name__}: {text}); "
        "delete it and retrain (`reproduce --fresh` retrains every model)"
    )


def read_checkpoint(path: Path | str, map_location: str | torch.device = "cpu") -> dict[str, Any]:
    """The raw checkpoint dict, read with ``weights_only=True``; clear errors when missing,
    unreadable or not ours.

    Chapter: 05_training
    """
    path = Path(path)
    if path.is_dir():
        raise CheckpointError(f"{path}: is a folder; pass the {CHECKPOINT_FILE} inside it")
    if not path.is_file():
        raise CheckpointError(
            f"{path}: checkpoint not found; train one with `python -m pitchtimbre reproduce` "
            "or pass the checkpoints listed in results.json"
        )
    try:
        with open(path, "rb") as fh:
            head = fh.read(4)
    except OSError as exc:
        raise CheckpointError(f"{path}: cannot read it ({exc.strerror})") from None
    if head != b"PK\x03\x04":  # torch.save writes a zip archive
        raise CheckpointError(f"{path}: not a PyTorch checkpoint file")
    try:
        state = torch.load(path, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as exc:  # weights_only refuses classes and functions
        found = pickled_class(exc)
        if found is None:
            raise _damaged(path, exc) from None
        raise CheckpointError(
            f"{path}: holds a Python object ({found}), which torch reads only by "
            "running code from the file; pitchtimbre reads only the checkpoints its training "
            "writes (a model saved whole with torch.save(model) is not one): train with "
            "`python -m pitchtimbre reproduce` or `pitchtimbre.training.trained_model`"
        ) from None
    except Exception as exc:
        raise _damaged(path, exc) from None
    problem = checkpoint_problem(state)
    if problem is not None:
        raise CheckpointError(
            f"{path}: {problem}; train one with this version of pitchtimbre "
            "(`python -m pitchtimbre reproduce`)"
        )
    return state


def build_model(
    state: dict[str, Any], device: torch.device | str = "cpu"
) -> tuple[PitchTimbreVAE, ExperimentConfig]:
    """The model a checkpoint describes, with its weights. A checkpoint whose weights do not
    fit the architecture its config describes raises :class:`CheckpointError`.

    Chapter: 05_training
    """
    cfg = ExperimentConfig.from_dict(json.loads(state["config"]))
    model = PitchTimbreVAE(int(state["n_bins"]), cfg.model)
    theirs = state["model"]
    ours = model.state_dict()
    for name, tensor in ours.items():
        if name not in theirs:
            raise CheckpointError(
                f"checkpoint lacks parameter {name!r}: it is of another architecture"
            )
        if tuple(theirs[name].shape) != tuple(tensor.shape):
            raise CheckpointError(
                f"checkpoint parameter {name!r} has shape {tuple(theirs[name].shape)}, the model "
                f"expects {tuple(tensor.shape)}: it is of another architecture"
            )
    extra = set(theirs) - set(ours)
    if extra:
        raise CheckpointError(
            f"checkpoint has parameters {sorted(extra)[:3]} this model lacks: another architecture"
        )
    model.load_state_dict(theirs)
    return model.to(device), cfg


def load_checkpoint(path: Path | str, device: torch.device | str = "cpu") -> TrainResult:
    """A trained model from a checkpoint file (eval mode), with its config and history.

    Chapter: 05_training
    """
    path = Path(path)
    return result_from_state(path, read_checkpoint(path), device)


def result_from_state(
    path: Path, state: dict[str, Any], device: torch.device | str = "cpu"
) -> TrainResult:
    """The trained model (eval mode) that ``state``, read from ``path`` by
    :func:`read_checkpoint`, describes; a field lost or mangled raises
    :class:`CheckpointError` naming the file.

    Chapter: 05_training
    """
    try:
        model, cfg = build_model(state, device)
        history = json.loads(state.get("history", "[]"))
        meta = {
            k: state[k]
            for k in ("step", "seed", "mean", "std", "instruments", "contrastive", "complete")
        }
    except CheckpointError as exc:
        raise CheckpointError(f"{path}: {exc}") from None
    except (KeyError, ValueError, TypeError, AttributeError) as exc:  # a field lost or mangled
        raise CheckpointError(
            f"{path}: a damaged checkpoint ({exc.__class__.__name__}: {exc}); delete it and retrain"
        ) from None
    model.eval()
    return TrainResult(model, cfg, history, path, float(state.get("seconds", 0.0)), True, meta)
