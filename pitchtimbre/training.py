"""One trainer for both models: vanilla (lambda_p = lambda_t = 0) and proposed.

The training notes stay on the device; each step samples a batch of pairs there (no
per-item Python), computes :func:`~pitchtimbre.losses.pair_loss` and takes an Adam step.
Checkpoints are written atomically every ``train.checkpoint_every`` steps with everything
needed to continue (weights, optimiser, random generators, history), so a killed run
resumes and, on the CPU, ends with exactly the weights of an uninterrupted one.

Trained models are cached by a hash of their settings and data: a second ``reproduce``, or
a later chapter, loads instead of retraining.

Chapter: 05_training
"""

from __future__ import annotations

import hashlib
import importlib
import json
import logging
import math
import os
import time
from collections.abc import Callable
from contextlib import AbstractContextManager, nullcontext
from pathlib import Path
from typing import Any

import torch

from . import distributed
from .cache import atomic_write_json, cache_dir, stable_hash
from .checkpoints import (
    CHECKPOINT_FILE,
    CHECKPOINT_FORMAT,
    CHECKPOINT_VERSION,
    HISTORY_FILE,
    TrainResult,
    read_checkpoint,
    result_from_state,
    save_checkpoint,
)
from .code_identity import loss_source, modules_digest
from .config import ExperimentConfig, TrainConfig
from .data.dataset import NoteDataset
from .data.pairs import PairSampler
from .errors import CheckpointError, ConfigError, DataError, TrainingDiverged
from .interrupts import defer_ctrl_c
from .losses import BUILTIN_CONTRASTIVE_LOSSES, ContrastiveLoss, get_contrastive, pair_loss
from .machine import pick_device, processes_per_device
from .model import PitchTimbreVAE

log = logging.getLogger(__name__)

TERMS = ("total", "recon", "kl_pitch", "kl_timbre", "contrastive_pitch", "contrastive_timbre")


def uses_autocast(train: TrainConfig, device: torch.device) -> bool:
    """Whether the training step runs under bf16 autocast: on CUDA when ``train.amp``, on a
    GPU with bf16 units (compute capability 8.0 or later: A100, L4, H100, ...).

    Older GPUs (Colab's T4, the V100) have no bf16 arithmetic of their own, nor do most
    CPUs, where it ran slower than float32: it stays off there.

    Chapter: 05_training
    """
    return train.amp and device.type == "cuda" and torch.cuda.get_device_capability(device)[0] >= 8


def training_precision(use_amp: bool, device: torch.device) -> AbstractContextManager:
    """The region a training step's forward pass runs in: bf16 autocast on ``device`` when
    ``use_amp`` (see :func:`uses_autocast`), else no autocast object at all (torch before
    2.5 refuses to make one for Apple's 'mps' even switched off).

    Chapter: 05_training
    """
    return (
        torch.autocast(device_type=device.type, dtype=torch.bfloat16) if use_amp else nullcontext()
    )


def model_name(cfg: ExperimentConfig) -> str:
    """'vanilla' when both lambdas are 0, else 'proposed'.

    Chapter: 05_training
    """
    return "vanilla" if cfg.loss.is_vanilla else "proposed"


def run_label(cfg: ExperimentConfig, fn: ContrastiveLoss | None = None, *extra: str) -> str:
    """How a progress bar names a training run: "proposed (seed 0)", with the contrastive
    loss where it is not the poster's ("proposed (seed 0, loss hinge)": a built-in loss's
    registered name, else the function's name) and ``extra``.

    Chapter: 05_training
    """
    loss = cfg.loss.contrastive
    if fn is not None:
        builtin = (name for name, f in BUILTIN_CONTRASTIVE_LOSSES.items() if f is fn)
        loss = next(builtin, getattr(fn, "__name__", type(fn).__name__))
    loss = None if cfg.loss.is_vanilla else loss.lstrip("_")
    parts = [f"seed {cfg.train.seed}", *([f"loss {loss}"] if loss not in (None, "paper") else [])]
    return f"{model_name(cfg)} ({', '.join([*parts, *extra])})"


def contrastive_identity(fn: ContrastiveLoss | None, cfg: ExperimentConfig) -> str:
    """What the cache key records of the contrastive loss: a built-in loss's name; for a
    custom function, passed as ``fn`` or registered under ``LossConfig.contrastive`` with
    :func:`~pitchtimbre.losses.register_contrastive`, its qualified name and a hash of
    :func:`loss_source` (so editing it retrains, and the same code finds its cached model
    again in a new session).

    Chapter: 05_training
    """
    if fn is None:
        name = cfg.loss.contrastive
        registered = get_contrastive(name)
        if BUILTIN_CONTRASTIVE_LOSSES.get(name) is registered:
            return name  # the package's own loss: its name, as cache keys have always held it
        return f"{name}={contrastive_identity(registered, cfg)}"
    name = getattr(fn, "__qualname__", type(fn).__qualname__)
    digest = hashlib.sha256(loss_source(fn).encode()).hexdigest()[:12]
    return f"{getattr(fn, '__module__', '?')}.{name}:{digest}"


# Settings that change how fast or where a model trains, not what it learns.
_NOT_IN_KEY = (
    "device",
    "amp",
    "compile",
    "log_every",
    "checkpoint_every",
    "features_on",
    "parallel_models",
)


def training_settings(cfg: ExperimentConfig) -> dict[str, Any]:
    """The settings that decide what a model learns (seed included); speed and placement
    settings, seeds of other runs and evaluation settings are left out.

    Chapter: 05_training
    """
    pairs = cfg.pairs.to_dict()
    if pairs["draw_batches"] == 1:  # batch by batch, as before the setting existed: same keys
        del pairs["draw_batches"]
    return {
        "model": cfg.model.to_dict(),
        "loss": cfg.loss.to_dict(),
        "pairs": pairs,
        "features": cfg.features.to_dict(),
        "train": {k: v for k, v in cfg.train.to_dict().items() if k not in _NOT_IN_KEY},
    }


TRAINER_MODULES = (
    "pitchtimbre.model",
    "pitchtimbre.losses",
    "pitchtimbre.data.pairs",
    "pitchtimbre.training",
    "pitchtimbre.distributed",
)
"""The modules whose code decides what a model learns: the network, the losses, the pair
sampler, the training loop and the gradient averaging of DistributedDataParallel."""


def _trainer_modules_digest() -> str:
    return modules_digest([importlib.import_module(name) for name in TRAINER_MODULES])


def _trainer_files_state() -> tuple:
    """Each trainer module's file, modification time and size: a cheap look for edits."""
    state = []
    for name in TRAINER_MODULES:
        file = getattr(importlib.import_module(name), "__file__", None)
        try:
            info = os.stat(file) if file else None
        except OSError:
            info = None
        state.append((file, None if info is None else (info.st_mtime_ns, info.st_size)))
    return tuple(state)


def trainer_code() -> str:
    """A hash of the code of ``TRAINER_MODULES`` (docstrings and comments left out), as this
    process imported it: editing the package's own loss, network or training loop retrains,
    where it would otherwise load a model the old code trained. When the files have changed
    since, a warning says to restart (a running kernel still runs the code it imported).

    Chapter: 05_training
    """
    global _warned_code_changed
    if (
        not _warned_code_changed
        and _trainer_files_state() != _IMPORTED_FILES_STATE
        and _trainer_modules_digest() != _IMPORTED_TRAINER_CODE
    ):
        _warned_code_changed = True
        log.warning(
            "pitchtimbre's trainer code (%s) changed on disk after this process imported "
            "it: models are keyed and trained by the code imported; restart the kernel (or "
            "the script) to use the edited code",
            ", ".join(TRAINER_MODULES),
        )
    return _IMPORTED_TRAINER_CODE


def model_key(
    cfg: ExperimentConfig, dataset: NoteDataset, contrastive_fn: ContrastiveLoss | None = None
) -> str:
    """Hash identifying a trained model: settings, data fingerprint, seed, loss function and
    the trainer's code.

    Chapter: 05_training
    """
    return stable_hash(
        {
            **training_settings(cfg),
            "data": dataset.fingerprint,
            "contrastive": contrastive_identity(contrastive_fn, cfg),
            "code": trainer_code(),
            "v": CHECKPOINT_VERSION,
            # each process samples its own share of a batch: another number of processes
            # trains another model
            **({"world": distributed.world_size()} if distributed.world_size() > 1 else {}),
        }
    )


def keeps_resident(need: int, device: torch.device, where: str) -> tuple[bool, int | None]:
    """Whether training features of ``need`` bytes live on ``device`` (``train.features_on``
    ``where``; see :class:`FeatureStore`), and the free device memory that 'auto' weighed
    them against: on CUDA, this process's share of it, as processes training side by side
    each see all of it (:func:`~pitchtimbre.machine.processes_per_device`); else None.

    Chapter: 05_training
    """
    free = None
    if device.type == "cuda":
        free = torch.cuda.mem_get_info(device)[0] // processes_per_device()
    if device.type == "cpu" and where == "auto":
        return True, free  # host memory is where they already are
    return where == "device" or (where == "auto" and (free is None or need < 0.5 * free)), free


class FeatureStore:
    """The training notes' features, where the training loop reads them.

    Resident on the training device when they fit (``train.features_on``: 'auto' keeps them
    there if they take under half of this process's share of the free device memory,
    :func:`keeps_resident`), else streamed: kept in host
    memory, each batch gathered and copied over (on CUDA through pinned memory, asynchronously). The
    choice is logged. ``rows`` picks the training notes out of ``features`` without copying
    them on the CPU.

    Chapter: 05_training
    """

    def __init__(
        self,
        features: torch.Tensor,
        device: torch.device,
        where: str = "auto",
        rows: torch.Tensor | None = None,
    ) -> None:
        self.device = device
        rows = torch.arange(len(features)) if rows is None else rows.cpu()
        need = len(rows) * features[0].numel() * features.element_size()
        resident, free = keeps_resident(need, device, where)
        self.resident = resident
        if resident and device.type == "cpu":
            self.features, self.rows = features, rows  # a view through ``rows``, no copy
        elif resident:
            self.features, self.rows = features[rows].to(device), None
        else:
            # streamed: on CUDA ``gather`` pins one batch at a time (pinning all the features would
            # double the host memory, and a gather from them lands in pageable memory anyway)
            self.features, self.rows = features, rows
        where_to = f"resident on {device}" if resident else f"streamed to {device} from host memory"
        log.info(
            "training features %s (%.1f MB; %s MB free on the device for this process)",
            where_to,
            need / 1e6,
            "?" if free is None else f"{free / 1e6:.0f}",
        )

    @property
    def n_bins(self) -> int:
        return int(self.features.shape[1])

    def gather(self, index: torch.Tensor) -> torch.Tensor:
        """The features of training notes ``index`` on the training device."""
        if self.rows is None:
            return self.features[index]
        rows = self.rows[index.cpu()]
        if self.device.type == "cpu":
            return self.features[rows]
        if self.device.type != "cuda":  # page-locked memory is CUDA's
            return self.features[rows].to(self.device)
        return gather_pinned(self.features, rows).to(self.device, non_blocking=True)


def gather_pinned(features: torch.Tensor, rows: torch.Tensor) -> torch.Tensor:
    """``features[rows]`` gathered straight into page-locked host memory, so that its copy
    to the GPU can run asynchronously. (A row gathered from a pinned tensor lands in ordinary
    memory; PyTorch's pinned-memory cache reuses a buffer only once its copy has finished.)

    Chapter: 05_training
    """
    out = torch.empty((len(rows), *features.shape[1:]), dtype=features.dtype, pin_memory=True)
    return torch.index_select(features, 0, rows, out=out)


def make_optimiser(
    model: torch.nn.Module, cfg: ExperimentConfig, device: torch.device
) -> torch.optim.Adam:
    """Adam with ``train.lr``. On CUDA it is the fused implementation: one kernel updates
    every parameter, where the default (foreach) launches about a dozen multi-tensor kernels
    and works out each parameter's bias correction in Python, which a small model's step
    notices. Elsewhere it is PyTorch's default.

    Chapter: 05_training
    """
    fused = True if device.type == "cuda" else None
    return torch.optim.Adam(model.parameters(), lr=cfg.train.lr, fused=fused)


def train_model(
    cfg: ExperimentConfig,
    dataset: NoteDataset,
    out_dir: Path | str,
    contrastive_fn: ContrastiveLoss | None = None,
    resume: bool = True,
    progress: bool = True,
    on_log: Callable[[int], None] | None = None,
) -> TrainResult:
    """Train one model on the training instruments of ``dataset`` (held-out instruments are
    never sampled) and write ``checkpoint.pt`` and ``history.json`` into ``out_dir``.

    ``resume`` continues from a checkpoint in ``out_dir`` written with the same settings.
    A NaN or infinite loss stops training with :class:`TrainingDiverged`, keeping the last
    good checkpoint. Ctrl-C lets training run on to its next logged step, writes a checkpoint
    there and raises ``KeyboardInterrupt`` (a second Ctrl-C stops at once, keeping the last
    periodic checkpoint), so that a resumed run trains the same weights; in a process where
    SIGINT is ignored (a background job) it stays ignored, and a worker of
    :mod:`pitchtimbre.parallel` takes it from its caller (:mod:`pitchtimbre.interrupts`).
    Under ``torchrun`` every process trains its share of each batch with
    DistributedDataParallel and rank 0 alone logs and writes (see
    :mod:`pitchtimbre.distributed`). ``on_log`` is called with the step where training
    starts and at every logged step (how a worker process reports its progress, see
    :mod:`pitchtimbre.parallel`).

    Chapter: 05_training
    """
    from tqdm.auto import tqdm

    out_dir = Path(out_dir)
    ckpt_path = out_dir / CHECKPOINT_FILE
    device = pick_device(cfg.train.device)
    distributed.init(device.type)
    device = distributed.local_device(device)
    world, rank, main = distributed.world_size(), distributed.rank(), distributed.is_main()
    if main:
        out_dir.mkdir(parents=True, exist_ok=True)
    seed = cfg.train.seed
    config_json = json.dumps(cfg.to_dict(), sort_keys=True)
    if contrastive_fn is None:
        get_contrastive(cfg.loss.contrastive)  # an unknown name fails here, before any work

    rows = torch.nonzero(dataset.is_train).flatten()  # the training notes, never the held-out
    if len(rows) == 0:
        raise DataError(
            "no training notes: every instrument is held out; lower data.heldout_per_family"
        )
    store = FeatureStore(dataset.features, device, cfg.train.features_on, rows=rows)
    torch.manual_seed(seed)  # the same initial weights on every rank
    model = PitchTimbreVAE(store.n_bins, cfg.model).to(device)
    optimiser = make_optimiser(model, cfg, device)
    if cfg.pairs.batch_size % world:
        raise ConfigError(
            f"pairs.batch_size: {cfg.pairs.batch_size} does not split evenly over {world} "
            "processes; pick a multiple of the number of processes"
        )
    share = cfg.pairs.with_overrides({"batch_size": cfg.pairs.batch_size // world})
    sampler = PairSampler(
        dataset.pitch[rows], dataset.instrument[rows], share, seed=seed + 7919 * rank, device=device
    )
    noise = torch.Generator(device=device)
    noise.manual_seed(seed + 1_000_003 + rank)
    history: list[dict[str, float]] = []
    step, seconds = 0, 0.0

    if resume and ckpt_path.is_file():
        # read onto the CPU: a generator's set_state takes a CPU byte tensor on every device
        # (load_state_dict puts the weights and Adam's moments on the training device)
        state = read_checkpoint(ckpt_path, map_location="cpu")
        theirs = ExperimentConfig.from_dict(json.loads(state["config"]))
        if training_settings(theirs) != training_settings(cfg):
            raise CheckpointError(
                f"{ckpt_path}: was written with other settings; delete it or train into another folder"
            )
        if int(state.get("world_size", 1)) != world:
            raise CheckpointError(
                f"{ckpt_path}: was written by {state.get('world_size', 1)} processes, this run has {world}; "
                "resume with the same number or train into another folder"
            )
        model.load_state_dict(state["model"])
        optimiser.load_state_dict(state["optimizer"])
        step, seconds = int(state["step"]), float(state["seconds"])
        history = json.loads(state["history"])
        if step < cfg.train.steps:  # a finished model needs no random numbers
            written_on = state.get("device_type", device.type)  # older files: unchecked
            if written_on != device.type:
                raise CheckpointError(
                    f"{ckpt_path}: training stopped at step {step} on {written_on}, and its "
                    f"random generators cannot continue on {device.type}; resume it with "
                    f"train.device='{written_on}', or train from step 0 (`reproduce --fresh`, or "
                    "`retrain=True`, or delete the file)"
                )
            # the sampler handed out one batch a step, so `step` says where it is in its draw
            sampler.load_state_dict(
                {
                    "generator": state["sampler_rng"][rank],
                    "position": step % cfg.pairs.draw_batches,
                }
            )
            noise.set_state(state["noise_rng"][rank])
            torch.set_rng_state(state["torch_rng"])
            log.info("resuming %s from step %d", ckpt_path, step)

    def write(complete: bool) -> None:
        # every rank contributes its random generators (a collective call); rank 0 writes
        rngs = distributed.gather_objects(
            (sampler.state_dict()["generator"].cpu(), noise.get_state().cpu())
        )
        if not main:
            return
        state = {
            "format": CHECKPOINT_FORMAT,
            "version": CHECKPOINT_VERSION,
            "config": config_json,
            "n_bins": store.n_bins,
            "seed": seed,
            "step": step,
            "complete": complete,
            "seconds": seconds,
            "world_size": world,
            "device_type": device.type,  # the generators' states belong to this kind of device
            "model": {k: v.detach().clone() for k, v in model.state_dict().items()},
            "optimizer": optimiser.state_dict(),
            "sampler_rng": [r[0] for r in rngs],
            "noise_rng": [r[1] for r in rngs],
            "torch_rng": torch.get_rng_state(),
            "history": json.dumps(history),
            "mean": dataset.mean,
            "std": dataset.std,
            "instruments": json.dumps(
                sorted(
                    {
                        dataset.instrument_names[i]
                        for i in dataset.instrument[rows].unique().tolist()
                    }
                )
            ),
            "contrastive": contrastive_identity(contrastive_fn, cfg),
            "code": trainer_code(),  # `python -m pitchtimbre cache --prune` reads it
        }
        save_checkpoint(ckpt_path, state)
        atomic_write_json(out_dir / HISTORY_FILE, history)

    if step >= cfg.train.steps:
        model.eval()
        return TrainResult(model, cfg, history, ckpt_path, seconds, True, {"step": step})

    use_amp = uses_autocast(cfg.train, device)
    net: torch.nn.Module = model
    if world > 1:
        from torch.nn.parallel import DistributedDataParallel

        net = DistributedDataParallel(
            model, device_ids=[device.index] if device.type == "cuda" else None
        )
    if cfg.train.compile:
        net = torch.compile(net)
    sums = torch.zeros(len(TERMS), device=device)
    last_good = step if step > 0 else None  # the checkpoint this run resumed from
    window_start = step
    model.train()
    bar = tqdm(
        total=cfg.train.steps,
        initial=step,
        desc=f"train {run_label(cfg, contrastive_fn)}",
        unit="step",
        disable=not (progress and main),
    )
    t_start = time.perf_counter() - seconds
    report = on_log if on_log is not None and main else (lambda step: None)
    report(step)
    ctrl_c, stop_deferring = defer_ctrl_c(enabled=world == 1)
    try:
        while step < cfg.train.steps:
            batch = sampler.sample()
            x1, x2 = store.gather(batch.first), store.gather(batch.second)
            with training_precision(use_amp, device):
                terms = pair_loss(
                    net,  # type: ignore[arg-type]
                    x1,
                    x2,
                    batch.same_pitch,
                    batch.same_timbre,
                    cfg.loss,
                    contrastive_fn=contrastive_fn,
                    generator=noise,
                )
            optimiser.zero_grad(set_to_none=True)
            terms.total.backward()
            if cfg.train.grad_clip is not None:
                torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.train.grad_clip)
            optimiser.step()
            step += 1
            sums += torch.stack([getattr(terms, t).detach().float() for t in TERMS])
            checkpoint_due = step % cfg.train.checkpoint_every == 0 and step < cfg.train.steps
            # a checkpoint step is also a logging step: its loss is checked before it is saved
            if step % cfg.train.log_every == 0 or step == cfg.train.steps or checkpoint_due:
                means = (distributed.mean_across_ranks(sums) / (step - window_start)).tolist()
                sums.zero_()
                window_start = step
                seconds = time.perf_counter() - t_start
                if not all(math.isfinite(v) for v in means):
                    where = (
                        f"kept at {ckpt_path} (step {last_good})"
                        if last_good is not None
                        else "none was written yet"
                    )
                    bad = ", ".join(f"{t}={v:.3g}" for t, v in zip(TERMS, means, strict=True))
                    raise TrainingDiverged(
                        f"training diverged before step {step} ({bad}); last good checkpoint {where}; "
                        "lower train.lr or the lambdas"
                    )
                entry = {
                    "step": step,
                    **dict(zip(TERMS, means, strict=True)),
                    "sigma": float(model.sigma.detach()),
                }
                entry["seconds"] = round(seconds, 3)
                history.append(entry)
                bar.set_postfix(
                    {
                        k: f"{entry[k]:.3g}"
                        for k in ("recon", "kl_pitch", "contrastive_pitch", "contrastive_timbre")
                    }
                )
                report(step)
            bar.update(1)
            if checkpoint_due:  # its loss was found finite just above
                write(complete=False)
                last_good = step
            stop_here = ctrl_c["stop"] and bool(history) and history[-1]["step"] == step
            if stop_here and step < cfg.train.steps:
                # a logged step: the weights, optimiser and generators are all of this step
                write(complete=False)
                log.warning("stopped at step %d; %s continues from there", step, ckpt_path)
                raise KeyboardInterrupt
    finally:
        bar.close()
        stop_deferring()
    seconds = time.perf_counter() - t_start
    write(complete=True)
    distributed.barrier()
    model.eval()
    if ctrl_c["stop"]:  # asked during the last step: the model is finished and saved
        raise KeyboardInterrupt
    return TrainResult(model, cfg, history, ckpt_path, seconds, False, {"step": step})


def steady_step_seconds(history: list[dict[str, float]]) -> float | None:
    """Seconds a step after the first logging window (the warm-up: the first kernels, the
    allocator), read from a training history; None with fewer than two logged steps.

    Chapter: 05_training
    """
    if len(history) < 2:
        return None
    first, last = history[0], history[-1]
    return (last["seconds"] - first["seconds"]) / (last["step"] - first["step"])


def model_dir(
    cfg: ExperimentConfig, dataset: NoteDataset, contrastive_fn: ContrastiveLoss | None = None
) -> Path:
    """Where the cached model for these settings lives.

    Chapter: 05_training
    """
    return (
        cache_dir()
        / "models"
        / f"{model_name(cfg)}-seed{cfg.train.seed}-{model_key(cfg, dataset, contrastive_fn)}"
    )


def trained_model(
    cfg: ExperimentConfig,
    dataset: NoteDataset,
    contrastive_fn: ContrastiveLoss | None = None,
    progress: bool = True,
    retrain: bool = False,
    folder: Path | None = None,
    on_log: Callable[[int], None] | None = None,
) -> TrainResult:
    """The model for ``cfg`` (seed ``cfg.train.seed``): loaded from the package cache when
    it was trained before, else trained (continuing an interrupted run) and cached.
    ``folder`` overrides where it lives (default: :func:`model_dir`); ``on_log`` goes to
    :func:`train_model`. A loss whose key changed while it trained (it keeps state: a
    counter, a list it appends to, a tensor it updates in place) gets a warning: as it is
    now, it cannot find its model.

    Chapter: 05_training
    """
    distributed.init(pick_device(cfg.train.device).type)  # under torchrun: join the group first
    distributed.barrier()  # every process sees the same cache state
    keyed = folder is None  # found by the loss's key: a loss that changes cannot find it again
    folder = model_dir(cfg, dataset, contrastive_fn) if folder is None else Path(folder)
    ckpt = folder / CHECKPOINT_FILE
    if ckpt.is_file() and not retrain:
        state = read_checkpoint(ckpt)
        if state.get("complete"):
            result = result_from_state(ckpt, state, device=pick_device(cfg.train.device))
            result.config = cfg
            return result
    identity = contrastive_identity(contrastive_fn, cfg) if keyed else None
    result = train_model(
        cfg, dataset, folder, contrastive_fn, resume=not retrain, progress=progress, on_log=on_log
    )
    if identity is not None and contrastive_identity(contrastive_fn, cfg) != identity:
        log.warning(
            "the contrastive loss %s changed while it trained (a value it keeps: an attribute "
            "it sets, a list it appends to, a tensor it updates in place): its model is cached "
            "under the loss as it was before, so a call with the loss as it is now trains "
            "another model; keep such state outside the loss (the loss as it was, as a "
            "restarted kernel makes it, finds this model again)",
            identity.split(":")[0],
        )
    return result


_IMPORTED_TRAINER_CODE = _trainer_modules_digest()  # the code this process runs
_IMPORTED_FILES_STATE = _trainer_files_state()
_warned_code_changed = False
