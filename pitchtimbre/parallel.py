"""Several models trained at once, each in a worker process of its own
(``train.parallel_models``).

Each process runs the same ``trained_model`` it would run alone, with the same seeds and an
equal share of the CPU threads, into the cache folder the caller chose; the caller then
loads the model from there. On a CPU fewer threads can round a reduction differently, so
the weights may differ slightly from those of one process (the ci model's by up to 1.7e-3
after 60 steps; the cpu model's not at all; see ``TrainConfig.parallel_models``). The
processes are loky's (the library joblib uses): a script without an
``if __name__ == "__main__":`` guard is safe.

Chapter: 05_training
"""

from __future__ import annotations

import logging
import os
import pickle
import re
import shutil
import signal
import tempfile
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import FIRST_COMPLETED, wait
from pathlib import Path
from typing import Any, TypeVar

import torch

from . import distributed
from .checkpoints import CHECKPOINT_FILE, TrainResult, read_checkpoint
from .config import ExperimentConfig
from .data.dataset import NoteDataset
from .errors import CheckpointError, PitchTimbreError, TrainingInterrupted, WorkerCrashed
from .interrupts import leave_announcing_to_caller, restore_handler
from .losses import BUILTIN_CONTRASTIVE_LOSSES, CONTRASTIVE_LOSSES, ContrastiveLoss
from .machine import share_device
from .training import model_dir, run_label, trained_model, trainer_code

log = logging.getLogger(__name__)

POLL_SECONDS = 0.5
"""How often the caller reads the workers' progress files to move their bars."""

TrainJob = tuple[ExperimentConfig, ContrastiveLoss | None]
"""One model to train: its settings (seed included) and its contrastive loss, if custom."""
K = TypeVar("K")


def is_trained(
    cfg: ExperimentConfig, dataset: NoteDataset, contrastive_fn: ContrastiveLoss | None = None
) -> bool:
    """True when the package cache holds the finished model for these settings.

    Chapter: 05_training
    """
    ckpt = model_dir(cfg, dataset, contrastive_fn) / CHECKPOINT_FILE
    if not ckpt.is_file():
        return False
    try:
        return bool(read_checkpoint(ckpt).get("complete"))
    except CheckpointError:
        return False  # training it says what is wrong with the file


def processes_for(cfg: ExperimentConfig, jobs: int) -> int:
    """How many processes train ``jobs`` models: ``train.parallel_models``, never more than
    the models, and 1 (this process, one model after another) under ``torchrun``.

    Chapter: 05_training
    """
    if distributed.world_size() > 1:
        return 1
    return max(1, min(cfg.train.parallel_models, jobs))


_dataset: NoteDataset | None = None  # a worker's copy of the notes, sent once per worker


PARENT_CHECK_SECONDS = 1.0
"""How often a worker checks that the process that started it is still there."""


def exit_with_parent(parent: int, every: float = PARENT_CHECK_SECONDS) -> None:
    """Wait (in a worker's thread) until the process ``parent`` is gone, then end this
    process at once. A caller killed by SIGTERM, SIGHUP (its terminal closed) or SIGKILL runs
    no clean-up, and its workers would otherwise train on, then hold their memory (a GPU's
    too), forever. Each model continues later from its last checkpoint.

    Chapter: 05_training
    """
    while os.getppid() == parent:
        time.sleep(every)
    os._exit(1)


_stopping = False  # a worker was asked to stop: it starts no other model
_in_job = False  # a worker is preparing or finishing a model (outside the training loop)


def _stop_asked(signum: int, frame: object) -> None:
    """A worker's SIGINT handler outside the training loop (the trainer installs its own in
    it): stop the model being prepared, and start no other."""
    global _stopping
    _stopping = True
    if _in_job:
        raise KeyboardInterrupt


def _receive_dataset(
    dataset: NoteDataset, threads: int, processes: int, parent: int, pids: str
) -> None:
    """A worker's start: keep the notes, take its share of the CPU threads (and of the GPU's
    free memory: ``processes`` train side by side, :func:`share_device`), end with the
    caller (:func:`exit_with_parent`) and take Ctrl-C from the caller alone. A Ctrl-C in a
    terminal reaches every process of the terminal's foreground group; a worker leaves it
    (a session of its own) and writes its process id into the folder ``pids``, so that the
    caller can pass the Ctrl-C on, once, and its trainer stops as a lone trainer does."""
    global _dataset
    _dataset = dataset
    torch.set_num_threads(threads)
    share_device(processes)
    if hasattr(os, "setsid"):
        os.setsid()
    signal.signal(signal.SIGINT, _stop_asked)
    leave_announcing_to_caller()
    Path(pids, str(os.getpid())).touch()
    threading.Thread(
        target=exit_with_parent, args=(parent,), name="exit-with-parent", daemon=True
    ).start()


def _step_writer(path: str) -> Callable[[int], None]:
    """A worker's progress report: the last logged step, written whole into ``path``. Not
    :func:`~pitchtimbre.cache.atomic_write_bytes`, which also syncs to disk: a report need
    not survive a crash, and the training loop should not wait for the disk."""

    def write(step: int) -> None:
        part = f"{path}.part"
        try:
            with open(part, "w") as f:
                f.write(str(step))
            os.replace(part, path)  # the caller never reads half a number
        except OSError as exc:  # a bar that stops moving is no reason to stop training
            log.debug("progress report %s not written: %s", path, exc)

    return write


def _read_step(path: Path) -> int | None:
    try:
        return int(path.read_text())
    except (OSError, ValueError):  # not written yet
        return None


def registered_here() -> dict[str, ContrastiveLoss]:
    """The contrastive losses registered in this process beyond the package's own (or over
    one of their names): a worker process starts with the package's registry only.

    Chapter: 05_training
    """
    return {
        name: fn
        for name, fn in CONTRASTIVE_LOSSES.items()
        if BUILTIN_CONTRASTIVE_LOSSES.get(name) is not fn
    }


def _pickled(fn: ContrastiveLoss) -> bytes | None:
    """``fn`` as a worker is sent it, or None where it cannot be pickled (a loss holding a
    lock or a file)."""
    from joblib.externals.loky.backend.reduction import dumps  # as loky sends a job

    try:
        return dumps(fn)
    except Exception:  # whatever pickling a reader's object raises
        return None


def _register_shared(shared: Mapping[str, bytes]) -> None:
    """Registers the caller's other losses in a worker, each on its own: one that cannot be
    unpickled here (its module was edited since the caller imported it, say) is left out
    with a warning instead of failing a job that does not train with it."""
    for name, blob in shared.items():
        try:
            CONTRASTIVE_LOSSES[name] = pickle.loads(blob)
        except Exception as exc:  # whatever unpickling a reader's object raises
            log.warning(
                "the registered loss %r could not be loaded in a training worker (%s: %s); "
                "a job that calls it by name will not find it",
                name,
                type(exc).__name__,
                exc,
            )


def _interruptible(*job: Any) -> str:
    """A worker's job, run by :func:`_train_in_worker`, stopped by Ctrl-C as a lone trainer
    is (see :func:`_receive_dataset`): a model stopped, saved or not, is reported as
    :class:`~pitchtimbre.errors.TrainingInterrupted`, and after a Ctrl-C the worker starts
    no other model."""
    global _stopping, _in_job
    if _stopping:  # Ctrl-C came while this job waited in the worker's queue
        raise TrainingInterrupted("stopped before it started")
    _in_job = True
    try:
        return _train_in_worker(*job)
    except KeyboardInterrupt:  # the trainer saved its logged step (or, asked twice, did not)
        _stopping = True
        raise TrainingInterrupted(f"stopped; {job[3]} continues from its checkpoint") from None
    finally:
        _in_job = False


def _train_in_worker(
    cfg: ExperimentConfig,
    contrastive_fn: ContrastiveLoss | None,
    retrain: bool,
    folder: str,
    progress_file: str | None,
    registered: Mapping[str, ContrastiveLoss],
    callers_trainer_code: str,
    shared: Mapping[str, bytes],
) -> str:
    """A worker's job: one model trained (or found) in ``folder`` with the caller's
    registered losses (``registered``, the one it trains with; ``shared``, the others,
    pickled), its logged steps written to ``progress_file``; returns its checkpoint. The
    caller chose ``folder`` by the trainer code it imported: a worker that imported other
    code (the files were edited since) refuses to train into it."""
    if trainer_code() != callers_trainer_code:
        raise PitchTimbreError(
            "pitchtimbre's trainer code changed on disk after this kernel (or script) "
            "imported it, so the workers would train other code than the one the model "
            "cache's key names; restart the kernel (or the script) and train again"
        )
    assert _dataset is not None, "the worker was started without its notes"
    _register_shared(shared)
    CONTRASTIVE_LOSSES.update(registered)
    result = trained_model(
        cfg,
        _dataset,
        contrastive_fn,
        progress=False,
        retrain=retrain,
        folder=Path(folder),
        on_log=None if progress_file is None else _step_writer(progress_file),
    )
    return str(result.checkpoint)


def move_bars(bars: Sequence[Any], reports: Sequence[Path | None], started: list[bool]) -> None:
    """Move each model's progress bar to the step its worker last reported. A bar's clock
    starts at its first report (not while its model waits for a worker), and a model that
    resumes at step S starts its bar at S, so that its rate and time left count only the
    steps trained now.

    Chapter: 05_training
    """
    for i, (bar, report) in enumerate(zip(bars, reports, strict=True)):
        step = None if report is None else _read_step(report)
        if step is None:
            continue
        if not started[i]:
            started[i] = True
            bar.reset()
            bar.initial = bar.n = bar.last_print_n = step
            bar.refresh()
        elif step > bar.n:
            bar.update(step - bar.n)


def train_in_processes(
    jobs: Sequence[TrainJob],
    dataset: NoteDataset,
    processes: int,
    retrain: bool = False,
    progress: bool = True,
) -> list[Path]:
    """Train the model of each job into the package cache, ``processes`` at a time, and
    return their checkpoints in the order of ``jobs``. ``retrain`` starts each from scratch;
    otherwise a finished model is kept and an interrupted one continues.

    The cache folders are chosen here (a loss written in a notebook has no source a worker
    could hash), the notes go to each worker once, and the losses registered here
    (:func:`registered_here`) go with each job, each loaded there on its own (one that fails
    to load is left out with a warning), those that cannot be pickled only with a job that
    trains with them. Each model has a progress bar here, moved at its logged steps: a
    worker writes its last logged step into a file that this process reads every
    ``POLL_SECONDS``. An error raised in a worker is raised here once the other models have
    finished (and are cached); a worker that dies (a segfault, no memory left) takes the
    others down with it, which raises :class:`WorkerCrashed`. Ctrl-C reaches each worker's
    trainer as it would a lone one: it runs on to its next logged step, saves it and stops
    (a second Ctrl-C stops every worker at once, their last periodic checkpoints kept),
    then ``KeyboardInterrupt`` is raised here; a model continues later from where it
    stopped. A caller killed outright (SIGTERM, a closed terminal) takes its workers with it
    within ``PARENT_CHECK_SECONDS``, each model kept at its last periodic checkpoint.

    Chapter: 05_training
    """
    from concurrent.futures import BrokenExecutor

    from joblib.externals.loky import ProcessPoolExecutor
    from tqdm.auto import tqdm

    if not jobs:
        return []
    threads = max(1, torch.get_num_threads() // processes)
    folders = [str(model_dir(cfg, dataset, fn)) for cfg, fn in jobs]
    log.info("training %d models in %d processes", len(jobs), processes)
    # an executor of its own, not loky's shared one: joblib (the pitch check) keeps that one
    # with settings of its own, and these workers hold GPU memory until they exit
    pids = Path(tempfile.mkdtemp(prefix="pitchtimbre-workers-"))
    try:
        executor = ProcessPoolExecutor(
            max_workers=processes,
            initializer=_receive_dataset,
            initargs=(dataset, threads, processes, os.getpid(), str(pids)),
        )
    except BaseException:
        shutil.rmtree(pids, ignore_errors=True)
        raise
    reports: Path | None = None
    futures: list = []
    bars: list = []
    errors: list[Exception] = []
    with _CtrlC(pids) as ctrl_c:
        try:
            if progress:
                reports = Path(tempfile.mkdtemp(prefix="pitchtimbre-progress-"))
            steps_of = [
                None if reports is None else reports / f"model-{i}" for i in range(len(jobs))
            ]
            registered = registered_here()  # a loss registered in a notebook cell, say
            # every one that can be pickled goes, pickled, and is loaded on its own in the
            # worker (a loss may call another by name); the one a job trains with goes as
            # it is, and fails that job alone if it cannot be sent (it holds a lock, say)
            pickled = {name: _pickled(fn) for name, fn in registered.items()}

            def losses_for(cfg: ExperimentConfig, fn: ContrastiveLoss | None) -> tuple:
                name = cfg.loss.contrastive
                own = {name: registered[name]} if fn is None and name in registered else {}
                shared = {k: b for k, b in pickled.items() if b is not None and k not in own}
                return own, shared

            code = trainer_code()
            for (cfg, fn), folder, at in zip(jobs, folders, steps_of, strict=True):
                report = None if at is None else str(at)
                own, shared = losses_for(cfg, fn)
                job = (cfg, fn, retrain, folder, report, own, code, shared)
                futures.append(executor.submit(_interruptible, *job))
            bars = [
                tqdm(
                    total=cfg.train.steps,
                    desc=f"train {run_label(cfg, fn, f'{processes} at a time')}",
                    unit="step",
                    position=i,
                    disable=not progress,
                )
                for i, (cfg, fn) in enumerate(jobs)
            ]
            started = [False] * len(jobs)
            running = set(futures)
            signalled: set[int] = set()
            while running and ctrl_c.presses < 2:
                finished, running = wait(running, timeout=POLL_SECONDS, return_when=FIRST_COMPLETED)
                move_bars(bars, steps_of, started)
                if ctrl_c.presses:
                    for future in futures:
                        future.cancel()  # those no worker has taken
                    running = {f for f in running if not f.cancelled()}
                    _pass_on_ctrl_c(pids, signalled)  # again each round: a late worker too
                for future in sorted(finished, key=futures.index):
                    try:
                        future.result()
                    except TrainingInterrupted:
                        continue  # stopped by the Ctrl-C passed on: saved, not an error
                    except Exception as exc:  # the other models still finish and are cached
                        errors.append(exc)
                        continue
                    bar = bars[futures.index(future)]
                    bar.update(bar.total - bar.n)  # also a model that was in the cache
                    bar.close()
        except BaseException:
            for future in futures:
                future.cancel()
            executor.shutdown(wait=False, kill_workers=True)
            raise
        finally:
            for bar in bars:
                bar.close()
            for folder in (reports, pids):
                if folder is not None:
                    shutil.rmtree(folder, ignore_errors=True)
    if ctrl_c.presses >= 2:
        executor.shutdown(wait=False, kill_workers=True)
        log.warning("stopped at once; each model continues from its last periodic checkpoint")
        raise KeyboardInterrupt
    executor.shutdown(wait=True)  # idle workers end on their own, leaving nothing behind
    if ctrl_c.presses:
        for exc in errors:  # what went wrong before the Ctrl-C, not to be lost with it
            log.error("while stopping: %s: %s", type(exc).__name__, exc)
        raise KeyboardInterrupt
    crashed = [e for e in errors if isinstance(e, BrokenExecutor)]
    if crashed:  # before any other error: the others may be its consequence
        codes = re.search(r"exit codes of the workers are (\{.*?\})", str(crashed[0]))
        how = f"exit {codes.group(1)}" if codes else "a segfault, or no memory left"
        raise WorkerCrashed(
            f"a training worker process died ({how}); run again to continue every model "
            "from its last checkpoint, or set train.parallel_models to 1 to train in this "
            "process and see the error here"
        ) from crashed[0]
    if errors:
        raise errors[0]
    return [Path(future.result()) for future in futures]


class _CtrlC:
    """Ctrl-C and Ctrl-Z while models train in workers. The Ctrl-C handler only counts the
    presses, and the caller's polling loop acts on them, so that no ``KeyboardInterrupt``
    is raised inside ``concurrent.futures``. The workers left the terminal's process group
    (:func:`_receive_dataset`), so Ctrl-Z (SIGTSTP) would stop the caller alone: the
    caller stops its workers (the ids in ``pids``) before it stops, and continues them when
    it continues. Installed only in the main thread, and neither where Ctrl-C is ignored
    nor, for Ctrl-Z, where there is no SIGTSTP (Windows)."""

    def __init__(self, pids: Path) -> None:
        self.pids = pids
        self.presses = 0
        self._previous: dict[int, Any] = {}

    def __enter__(self) -> _CtrlC:
        if threading.current_thread() is not threading.main_thread():
            return self
        wanted = {signal.SIGINT: self._count}
        if hasattr(signal, "SIGTSTP"):
            wanted[signal.SIGTSTP] = self._pause
        for signum, handler in wanted.items():
            if signal.getsignal(signum) is not signal.SIG_IGN:
                self._previous[signum] = signal.signal(signum, handler)
        return self

    def _count(self, signum: int, frame: object) -> None:
        self.presses += 1
        if self.presses == 1:
            log.warning(
                "Ctrl-C: each model runs on to its next logged step and saves it there; "
                "press Ctrl-C again to stop at once"
            )

    def _pause(self, signum: int, frame: object) -> None:
        workers = _our_workers(self.pids)
        for pid in workers:
            _signal_quietly(pid, signal.SIGSTOP)
        signal.signal(signal.SIGTSTP, signal.SIG_DFL)
        os.kill(os.getpid(), signal.SIGTSTP)  # stops here; runs on when continued (fg, bg)
        signal.signal(signal.SIGTSTP, self._pause)
        for pid in workers:
            _signal_quietly(pid, signal.SIGCONT)

    def __exit__(self, *exc: object) -> None:
        for signum, previous in self._previous.items():
            restore_handler(signum, previous)


def _our_workers(pids: Path) -> list[int]:
    """The process ids the workers wrote into ``pids`` that still belong to a worker: a
    worker leads a session of its own, which an unrelated process that took over a dead
    worker's id almost never does."""
    try:
        found = sorted(int(p.name) for p in pids.iterdir())
    except (OSError, ValueError):
        return []
    ours = []
    for pid in found:
        try:
            if os.getsid(pid) == pid:
                ours.append(pid)
        except OSError:  # gone
            pass
    return ours


def _signal_quietly(pid: int, signum: int) -> None:
    try:
        os.kill(pid, signum)
    except OSError:  # gone since, or no longer ours to signal
        pass


def _pass_on_ctrl_c(pids: Path, signalled: set[int]) -> None:
    """Send Ctrl-C (SIGINT) once to every worker that wrote its process id into ``pids``
    and has not had it yet: its trainer stops at its next logged step, saved, and the
    worker starts no other model. Only on POSIX: elsewhere ``os.kill`` would end the
    worker outright, and the console's Ctrl-C reaches the workers itself."""
    if os.name != "posix":
        return
    for pid in _our_workers(pids):
        if pid not in signalled:
            _signal_quietly(pid, signal.SIGINT)
            signalled.add(pid)


def trained_models(
    jobs: Mapping[K, TrainJob],
    dataset: NoteDataset,
    progress: bool = True,
    retrain: bool = False,
) -> tuple[dict[K, TrainResult], int]:
    """The model of each job, like ``trained_model`` gives one: loaded from the cache, or
    trained and cached. Those left to train are trained ``train.parallel_models`` at a time
    (the first job's setting) in worker processes, else one after another here. Returns the
    models, keyed like ``jobs``, and the number of processes that trained them;
    ``from_cache`` is False for every model trained by this call.

    Chapter: 05_training
    """
    pending: list[K] = []
    first = next(iter(jobs.values()), None)
    if first is not None and processes_for(first[0], len(jobs)) > 1:  # else: skip the reads
        pending = [
            k for k, (cfg, fn) in jobs.items() if retrain or not is_trained(cfg, dataset, fn)
        ]
    processes = processes_for(first[0], len(pending)) if pending else 1
    if processes > 1:
        train_in_processes([jobs[k] for k in pending], dataset, processes, retrain, progress)
    models: dict[K, TrainResult] = {}
    for key, (cfg, fn) in jobs.items():
        here = processes > 1 and key in pending
        result = trained_model(cfg, dataset, fn, progress=progress, retrain=retrain and not here)
        result.from_cache = result.from_cache and not here
        models[key] = result
    return models, processes
