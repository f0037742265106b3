from __future__ import annotations

import importlib
import json
import os
import signal
import sys
import threading

import numpy as np
import pytest
import torch

from pitchtimbre import distributed, parallel, training
from pitchtimbre.book import Chapter
from pitchtimbre.checkpoints import load_checkpoint, read_checkpoint
from pitchtimbre.config import DataConfig, ExperimentConfig, ModelConfig, TrainConfig
from pitchtimbre.data import load_dataset
from pitchtimbre.data.pitch_check import pitch_errors_by_pitch
from pitchtimbre.errors import ConfigError, PitchTimbreError, TrainingDiverged, WorkerCrashed
from pitchtimbre.experiment import reproduce
from pitchtimbre.losses import CONTRASTIVE_LOSSES
from pitchtimbre.parallel import is_trained, processes_for, train_in_processes, trained_models


def experiment(source: str, parallel_models: int) -> ExperimentConfig:
    return ExperimentConfig(
        profile="ci",
        data=DataConfig(source=source, heldout_per_family=1),
        model=ModelConfig(hidden=16, layers=2, kernel_size=3),
        train=TrainConfig(
            steps=20, log_every=5, checkpoint_every=10, parallel_models=parallel_models
        ),
        seeds=(0,),
    )


@pytest.fixture
def one_thread():
    """Processes sharing 2 cores train with 1 thread each: the reference does too, so the
    weights can be compared bit for bit."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def test_how_many_processes(monkeypatch):
    def cfg(n: int) -> ExperimentConfig:
        return ExperimentConfig(train=TrainConfig(parallel_models=n))

    assert processes_for(cfg(1), 6) == 1
    assert processes_for(cfg(3), 6) == 3
    assert processes_for(cfg(3), 2) == 2  # never more than the models
    assert processes_for(cfg(3), 1) == 1
    assert processes_for(cfg(3), 0) == 1
    with pytest.raises(ConfigError, match=r"TrainConfig\.parallel_models: must be an int >= 1"):
        cfg(0)
    monkeypatch.setattr(distributed, "world_size", lambda: 2)
    assert processes_for(cfg(3), 6) == 1  # under torchrun each rank trains one by one


def test_a_chapter_trains_its_two_models_side_by_side(
    toy_folder, tmp_path, monkeypatch, one_thread
):
    source = str(toy_folder)
    monkeypatch.setenv("PITCHTIMBRE_CACHE", str(tmp_path / "cache"))
    started = []
    real = parallel.train_in_processes
    monkeypatch.setattr(
        parallel,
        "train_in_processes",
        lambda jobs, *a, **k: started.append(len(jobs)) or real(jobs, *a, **k),
    )
    chapter = Chapter("05_training", experiment(source, 2), torch.device("cpu"))
    models = chapter.models()
    assert started == [2] and list(models) == ["vanilla", "proposed"]
    assert not any(m.from_cache for m in models.values())
    assert models["vanilla"].config.loss.lambda_pitch == 0.0
    assert models["proposed"].config.loss.lambda_pitch > 0.0
    again = chapter.models()  # both in the cache now: no process is started
    assert started == [2] and all(m.from_cache for m in again.values())


def test_a_chapters_models_are_those_of_the_seed_it_asks_for(toy_folder, monkeypatch):
    asked = []
    monkeypatch.setattr(
        parallel, "trained_models", lambda jobs, dataset: asked.append(jobs) or ({}, None)
    )
    cfg = experiment(str(toy_folder), 1).with_overrides({"seeds": (5, 6)})
    chapter = Chapter("05_training", cfg, torch.device("cpu"))
    chapter.models()  # the profile's first seed
    chapter.models(seed=6)
    seeds = [{name: job[0].train.seed for name, job in jobs.items()} for jobs in asked]
    assert seeds == [{"vanilla": 5, "proposed": 5}, {"vanilla": 6, "proposed": 6}]


def test_what_workers_retrained_the_caller_loads_and_does_not_train_again(
    toy_folder, tmp_path, monkeypatch
):
    """``retrain=True`` with models side by side: the workers retrain, the calling process
    then loads their models (workers stood in for here by training in this process)."""
    from pitchtimbre.experiment import model_configs

    monkeypatch.setenv("PITCHTIMBRE_CACHE", str(tmp_path / "cache"))
    cfg = experiment(str(toy_folder), 2)
    ds = load_dataset(cfg.data, cfg.features, progress=False)
    jobs = {name: (c, None) for name, c in model_configs(cfg).items()}
    workers, here = [], []

    def in_workers(job_list, dataset, processes, retrain, progress):
        workers.append((len(job_list), processes, retrain))
        for c, fn in job_list:
            training.trained_model(c, dataset, fn, progress=False, retrain=retrain)

    def trained_here(c, dataset, fn, progress, retrain):
        here.append(retrain)
        return training.trained_model(c, dataset, fn, progress=progress, retrain=retrain)

    monkeypatch.setattr(parallel, "train_in_processes", in_workers)
    monkeypatch.setattr(parallel, "trained_model", trained_here)
    first, processes = trained_models(jobs, ds, progress=False)
    took = {name: read_checkpoint(m.checkpoint)["seconds"] for name, m in first.items()}
    again, _ = trained_models(jobs, ds, progress=False, retrain=True)
    assert processes == 2 and workers == [(2, 2, False), (2, 2, True)]
    assert here == [False] * 4  # the caller only ever loads what the workers wrote
    assert not any(m.from_cache for m in [*first.values(), *again.values()])
    for name in jobs:  # the second call's models are the retrained ones, on disk (a training
        assert again[name].checkpoint == first[name].checkpoint  # time to the nanosecond)
        assert read_checkpoint(again[name].checkpoint)["seconds"] != took[name]


def test_reproduce_in_processes_trains_the_same_models(
    toy_folder, tmp_path, monkeypatch, one_thread
):
    source = str(toy_folder)
    monkeypatch.setenv("PITCHTIMBRE_CACHE", str(tmp_path / "cache-one"))
    alone = reproduce(experiment(source, 1), tmp_path / "alone", progress=False, figures=False)
    # a cache of its own: the workers must write where this process reads
    monkeypatch.setenv("PITCHTIMBRE_CACHE", str(tmp_path / "cache-two"))
    side = reproduce(experiment(source, 2), tmp_path / "side", progress=False, figures=False)
    assert alone["train_processes"] == 1 and side["train_processes"] == 2
    assert not any(side["loaded_from_cache"]["vanilla"] + side["loaded_from_cache"]["proposed"])
    for name in ("vanilla", "proposed"):
        (path,) = side["checkpoints"][name]
        assert path.startswith(str(tmp_path / "cache-two"))
        (reference,) = alone["checkpoints"][name]
        a, b = load_checkpoint(reference), load_checkpoint(path)
        for (key, x), y in zip(
            a.model.state_dict().items(), b.model.state_dict().values(), strict=True
        ):
            assert torch.equal(x, y), (name, key)
        assert [h["total"] for h in a.history] == [h["total"] for h in b.history]
    assert side["models"] == alone["models"]
    again = reproduce(experiment(source, 2), tmp_path / "again", progress=False, figures=False)
    assert again["train_processes"] == 1  # nothing left to train
    assert all(again["loaded_from_cache"]["vanilla"] + again["loaded_from_cache"]["proposed"])


def test_a_worker_error_reaches_the_caller(toy_folder, tmp_path, monkeypatch, one_thread):
    monkeypatch.setenv("PITCHTIMBRE_CACHE", str(tmp_path / "cache"))  # nothing trained yet
    source = str(toy_folder)
    cfg = experiment(source, 2)
    ds = load_dataset(cfg.data, cfg.features, progress=False)

    def diverging(z1, z2, same, loss_cfg):
        return (z1 - z2).sum() * float("nan")

    jobs = [(cfg, None), (cfg.with_overrides({"train.seed": 1}), diverging)]
    with pytest.raises(TrainingDiverged, match="training diverged before step 5"):
        train_in_processes(jobs, ds, processes=2, progress=False)
    assert is_trained(cfg, ds)  # the other model finished and is in the cache
    assert not is_trained(jobs[1][0], ds, diverging)


def test_the_pitch_check_still_starts_its_workers_after_training_in_processes(
    toy_folder, one_thread
):
    # joblib's pitch check and the trainer must not share one executor: joblib's needs
    # settings that a plain loky executor lacks (a notebook may render after it trains)
    source = str(toy_folder)
    cfg = experiment(source, 2)
    ds = load_dataset(cfg.data, cfg.features, progress=False)
    jobs = [(cfg.with_overrides({"train.seed": s}), None) for s in (3, 4)]
    assert len(train_in_processes(jobs, ds, processes=2, progress=False)) == 2
    t = np.arange(6400) / 16000
    heads = {
        p: np.stack([np.sin(2 * np.pi * 440 * 2 ** ((p - 69) / 12) * t)] * 2).astype(np.float32)
        for p in (60, 64, 67)
    }
    errors = pitch_errors_by_pitch(heads, 16000, workers=2, min_notes_for_processes=1)
    assert sorted(errors) == [60, 64, 67] and all((e < 10).all() for e in errors.values())


def test_a_loss_without_source_is_trained_where_the_caller_looks(
    toy_folder, tmp_path, monkeypatch, one_thread
):
    # a loss defined where inspect finds no source (as exec does here, and a notebook cell
    # does in a worker, while its caller has the cell's source) must be trained into the
    # folder its caller reads: the caller picks it
    namespace: dict = {}
    exec("def no_source(z1, z2, same, cfg):\n    return (z1 - z2).norm(dim=-1).mean()", namespace)
    source = str(toy_folder)
    monkeypatch.setenv("PITCHTIMBRE_CACHE", str(tmp_path / "cache"))
    cfg = experiment(source, 2)
    ds = load_dataset(cfg.data, cfg.features, progress=False)
    jobs = {s: (cfg.with_overrides({"train.seed": s}), namespace["no_source"]) for s in (0, 1)}

    def no_training_here(*args, **kwargs):
        raise AssertionError("the caller trained a model the workers had trained")

    monkeypatch.setattr(training, "train_model", no_training_here)
    models, processes = trained_models(jobs, ds, progress=False)
    assert processes == 2 and not any(m.from_cache for m in models.values())


def test_a_registered_loss_reaches_the_workers(toy_folder, tmp_path, monkeypatch, one_thread):
    """A loss registered in the caller (a notebook cell) and chosen by name is not in a fresh
    worker's registry: the workers get it with their job and train with it, into the folder
    the caller reads, and the result is the model the caller trains with it alone. It may
    call another registered loss by name; one that cannot be pickled and that no job trains
    with stays in the caller."""
    namespace: dict = {}
    exec(
        "from pitchtimbre.losses import get_contrastive\n"
        "def base(z1, z2, same, cfg):\n    return (z1 - z2).abs().mean()\n"
        "def mine(z1, z2, same, cfg):\n    return 2 * get_contrastive('base')(z1, z2, same, cfg)",
        namespace,
    )
    monkeypatch.setitem(CONTRASTIVE_LOSSES, "base", namespace["base"])
    monkeypatch.setitem(CONTRASTIVE_LOSSES, "mine", namespace["mine"])
    # another registered loss, which no job uses, holds a lock and cannot be pickled: it
    # stays here, or submitting the jobs would fail
    lock = threading.Lock()

    def unpicklable(z1, z2, same, cfg):
        with lock:
            return (z1 - z2).abs().mean()

    monkeypatch.setitem(CONTRASTIVE_LOSSES, "unpicklable", unpicklable)
    # and one whose module was edited after the caller imported it: it pickles here but
    # cannot be loaded in a worker, which leaves it out instead of failing every job
    module = tmp_path / "edited_losses.py"
    module.write_text("def gone(z1, z2, same, cfg):\n    return (z1 - z2).abs().mean()\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.delitem(sys.modules, "edited_losses", raising=False)
    edited = importlib.import_module("edited_losses")
    monkeypatch.setitem(sys.modules, "edited_losses", edited)  # removed again after the test
    monkeypatch.setitem(CONTRASTIVE_LOSSES, "gone", edited.gone)
    module.write_text("def renamed(z1, z2, same, cfg):\n    return (z1 - z2).abs().sum()\n")
    monkeypatch.setenv("PITCHTIMBRE_CACHE", str(tmp_path / "cache"))
    cfg = experiment(str(toy_folder), 2).with_overrides({"loss.contrastive": "mine"})
    ds = load_dataset(cfg.data, cfg.features, progress=False)
    jobs = {s: (cfg.with_overrides({"train.seed": s}), None) for s in (0, 1)}
    models, processes = trained_models(jobs, ds, progress=False)
    assert processes == 2 and not any(m.from_cache for m in models.values())
    monkeypatch.setenv("PITCHTIMBRE_CACHE", str(tmp_path / "alone"))
    alone = training.trained_model(jobs[1][0], ds, progress=False)
    for name, weight in alone.model.state_dict().items():
        assert torch.equal(weight, models[1].model.state_dict()[name]), name


def test_each_worker_knows_how_many_processes_share_its_device(
    toy_folder, tmp_path, monkeypatch, one_thread
):
    """So that each counts on its share of a GPU's free memory (FeatureStore)."""
    namespace: dict = {"seen": str(tmp_path / "seen")}
    exec(
        "import os\n"
        "from pitchtimbre.machine import processes_per_device\n"
        "def recording(z1, z2, same, cfg):\n"
        "    with open(os.path.join(seen, str(os.getpid())), 'w') as fh:\n"
        "        fh.write(str(processes_per_device()))\n"
        "    return (z1 - z2).abs().mean()\n",
        namespace,
    )
    (tmp_path / "seen").mkdir()
    monkeypatch.setitem(CONTRASTIVE_LOSSES, "recording", namespace["recording"])
    monkeypatch.setenv("PITCHTIMBRE_CACHE", str(tmp_path / "cache"))
    cfg = experiment(str(toy_folder), 2).with_overrides({"loss.contrastive": "recording"})
    ds = load_dataset(cfg.data, cfg.features, progress=False)
    jobs = {s: (cfg.with_overrides({"train.seed": s}), None) for s in (0, 1)}
    _, processes = trained_models(jobs, ds, progress=False)
    seen = {f.name: f.read_text() for f in (tmp_path / "seen").iterdir()}
    assert processes == 2 and str(os.getpid()) not in seen
    assert set(seen.values()) == {"2"} and len(seen) >= 1


def test_a_worker_loads_each_shared_loss_on_its_own(monkeypatch, caplog):
    """A registered loss the worker cannot unpickle is left out, named in a warning; the
    others are registered."""
    from joblib.externals.loky.backend.reduction import dumps

    registry = {}
    monkeypatch.setattr(parallel, "CONTRASTIVE_LOSSES", registry)
    with caplog.at_level("WARNING", logger="pitchtimbre.parallel"):
        parallel._register_shared({"broken": b"not a pickle", "fine": dumps(torch.abs)})
    assert registry == {"fine": torch.abs}
    assert "'broken' could not be loaded" in caplog.text


def test_a_worker_that_imported_other_trainer_code_refuses_to_train():
    """The caller keys the folder by the code it imported; a worker started after the files
    were edited imports the new code, and must not train it into that folder."""
    with pytest.raises(PitchTimbreError, match=r"changed on disk.*restart the kernel"):
        parallel._train_in_worker(
            ExperimentConfig(), None, False, "unused", None, {}, "the caller's older code", {}
        )


def test_a_dead_worker_is_a_clear_error(toy_folder, one_thread):
    source = str(toy_folder)
    cfg = experiment(source, 2)
    ds = load_dataset(cfg.data, cfg.features, progress=False)
    parent = os.getpid()

    def dying(z1, z2, same, loss_cfg):
        if os.getpid() != parent:
            os.kill(os.getpid(), signal.SIGKILL)  # as the system does when memory runs out
        return (z1 - z2).norm(dim=-1).mean()

    jobs = [(cfg.with_overrides({"train.seed": 5}), dying), (cfg, None)]
    with pytest.raises(
        WorkerCrashed,
        match=r"worker process died \(exit \{SIGKILL\(-9\)\}\); run again.*parallel_models",
    ):
        train_in_processes(jobs, ds, processes=2, progress=False)


def test_each_model_has_a_progress_bar_that_reaches_its_end(
    toy_folder, tmp_path, monkeypatch, capsys, one_thread
):
    import tempfile

    monkeypatch.setenv("PITCHTIMBRE_CACHE", str(tmp_path / "cache"))
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path / "tmp"))  # where the reports go
    (tmp_path / "tmp").mkdir()
    cfg = experiment(str(toy_folder), 2)
    ds = load_dataset(cfg.data, cfg.features, progress=False)
    jobs = [(cfg, None), (cfg.with_overrides({"train.seed": 1, "loss.lambda_pitch": 0.0}), None)]
    capsys.readouterr()
    train_in_processes(jobs, ds, processes=2, progress=True)
    err = capsys.readouterr().err
    assert "train proposed (seed 0, 2 at a time)" in err
    assert "train proposed (seed 1, 2 at a time)" in err  # lambda_timbre is still > 0
    assert err.count("20/20") >= 2  # both bars end full
    assert list((tmp_path / "tmp").iterdir()) == []  # the progress reports are removed


def test_a_worker_reports_its_logged_steps_in_its_progress_file(toy_folder, tmp_path, monkeypatch):
    monkeypatch.setenv("PITCHTIMBRE_CACHE", str(tmp_path / "cache"))
    cfg = experiment(str(toy_folder), 2)
    ds = load_dataset(cfg.data, cfg.features, progress=False)
    seen = []
    writer = parallel._step_writer(str(tmp_path / "steps"))

    def record(step: int) -> None:
        writer(step)
        seen.append(parallel._read_step(tmp_path / "steps"))

    training.trained_model(cfg, ds, progress=False, on_log=record)
    assert seen == [0, 5, 10, 15, 20]  # the start, then every logged step, read back whole
    assert not (tmp_path / "steps.part").exists()
    monkeypatch.setattr(parallel, "_dataset", ds)  # as the worker's initializer leaves it
    path = parallel._train_in_worker(
        cfg,
        None,
        False,
        str(tmp_path / "m"),
        str(tmp_path / "w"),
        registered={},
        callers_trainer_code=training.trainer_code(),
        shared={},
    )
    assert path == str(tmp_path / "m" / training.CHECKPOINT_FILE)
    assert parallel._read_step(tmp_path / "w") == 20
    assert parallel._read_step(tmp_path / "missing") is None


def test_workers_take_ctrl_c_from_the_caller_alone(toy_folder, tmp_path, monkeypatch, one_thread):
    # a terminal's Ctrl-C reaches its foreground process group: a worker leaves it (a session
    # of its own), and while it trains, its trainer's own handler takes the caller's Ctrl-C
    monkeypatch.setenv("PITCHTIMBRE_CACHE", str(tmp_path / "cache"))
    cfg = experiment(str(toy_folder), 2)
    ds = load_dataset(cfg.data, cfg.features, progress=False)
    parent = os.getpid()
    checked = tmp_path / "checked"  # a file per process that ran the checks
    checked.mkdir()

    def checks_sigint(z1, z2, same, loss_cfg):
        (checked / str(os.getpid())).touch()
        if os.getpid() != parent:
            if os.getsid(0) != os.getpid():
                raise RuntimeError("a worker shares the caller's session")
            if signal.getsignal(signal.SIGINT) in (signal.SIG_IGN, parallel._stop_asked):
                raise RuntimeError("the trainer does not handle Ctrl-C in a worker")
        return (z1 - z2).norm(dim=-1).mean()

    jobs = [(cfg.with_overrides({"train.seed": s}), checks_sigint) for s in (0, 1)]
    assert len(train_in_processes(jobs, ds, processes=2, progress=False)) == 2
    ran_in = {int(p.name) for p in checked.iterdir()}
    assert len(ran_in) == 2 and parent not in ran_in  # both models, each in a worker


CALLER = """
import os, signal, sys, time
# as in a terminal's foreground: a background job (CI, say) starts with Ctrl-C ignored,
# which the caller respects, so these tests would wait for nothing
signal.signal(signal.SIGINT, signal.default_int_handler)
from pitchtimbre.config import DataConfig, ExperimentConfig, ModelConfig, TrainConfig
from pitchtimbre.data import load_dataset
from pitchtimbre.parallel import train_in_processes

def slow(z1, z2, same, cfg):  # records its worker, then keeps it training
    mark = os.path.join(sys.argv[2], str(os.getpid()))
    if not os.path.exists(mark):
        print(f"worker {os.getpid()} trains", file=sys.stderr, flush=True)
    with open(mark, "w"):
        pass
    time.sleep(0.05)
    return (z1 - z2).norm(dim=-1).mean()

cfg = ExperimentConfig(
    profile="ci",
    data=DataConfig(source=sys.argv[1], heldout_per_family=1),
    model=ModelConfig(hidden=8, layers=2, kernel_size=3),
    train=TrainConfig(steps=100000, log_every=int(sys.argv[3]), checkpoint_every=50000),
)
ds = load_dataset(cfg.data, cfg.features, progress=False)
jobs = [(cfg.with_overrides({"train.seed": s}), slow) for s in (0, 1)]
train_in_processes(jobs, ds, processes=2, progress=False)
"""


def _start_caller(toy_folder, tmp_path, log_every: int = 5):
    """The caller script in a process of its own, once both its workers train; with the
    folder where they write their process ids."""
    import subprocess
    import time

    pids = tmp_path / "workers"
    pids.mkdir()
    script = tmp_path / "caller.py"
    script.write_text(CALLER)
    env = {
        **os.environ,
        "PITCHTIMBRE_CACHE": str(tmp_path / "cache"),
        "OMP_NUM_THREADS": "1",
        "TMPDIR": str(tmp_path),  # a caller killed outright cannot remove its temporary folders
    }
    # a process group of its own, with its parent (this test) in another group of the same
    # session, as a shell's job is: a stop signal's default action then stops it (in an
    # orphaned group, a background CI job's, the kernel would discard it)
    with open(tmp_path / "caller.err", "wb") as err:  # the caller's and its workers' stderr
        caller = subprocess.Popen(
            [sys.executable, str(script), str(toy_folder), str(pids), str(log_every)],
            env=env,
            process_group=0,
            stderr=err,
        )
    deadline = time.monotonic() + 120
    while len(list(pids.iterdir())) < 2 and time.monotonic() < deadline:
        if caller.poll() is not None:
            raise AssertionError("the caller ended before its workers trained")
        time.sleep(0.2)
    return caller, [int(p.name) for p in pids.iterdir()]


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


def _gone_within(workers: list[int], seconds: float) -> list[int]:
    """The workers still alive after ``seconds`` (then killed, never left to other tests)."""
    import time

    deadline = time.monotonic() + seconds
    while any(_alive(pid) for pid in workers) and time.monotonic() < deadline:
        time.sleep(0.1)
    left = [pid for pid in workers if _alive(pid)]
    for pid in left:
        os.kill(pid, signal.SIGKILL)
    return left


def _press_ctrl_c(caller, after: list[float]) -> None:
    """Send the caller Ctrl-C (SIGINT) once after each pause in ``after`` (seconds), then
    wait for it to end, as an interrupted command does, with a non-zero status."""
    import time

    try:
        for pause in after:
            time.sleep(pause)
            caller.send_signal(signal.SIGINT)
        assert caller.wait(timeout=60) != 0
    finally:
        if caller.poll() is None:
            caller.kill()


@pytest.mark.skipif(os.name != "posix", reason="POSIX signals")
def test_ctrl_c_stops_every_worker_at_its_next_logged_step_with_a_checkpoint(toy_folder, tmp_path):
    """As a lone trainer does: the steps trained so far are kept (there is no periodic
    checkpoint in this run), and every model continues from them."""
    caller, workers = _start_caller(toy_folder, tmp_path)
    _press_ctrl_c(caller, after=[1.0])  # a few logged steps (every 5) in
    assert _gone_within(workers, 10) == []
    said = (tmp_path / "caller.err").read_text()
    assert all(f"worker {pid} trains" in said for pid in workers)  # their stderr is here
    assert said.count("Ctrl-C: each model runs on to its next logged step") == 1
    assert "Ctrl-C: stopping at the next logged step" not in said  # the workers' trainers
    states = [
        read_checkpoint(p) for p in sorted((tmp_path / "cache").glob("models/*/checkpoint.pt"))
    ]
    assert len(states) == 2
    for state in states:
        assert state["step"] > 0 and state["step"] % 5 == 0 and not state["complete"]
        assert json.loads(state["history"])[-1]["step"] == state["step"]


@pytest.mark.skipif(os.name != "posix", reason="POSIX signals")
def test_a_second_ctrl_c_stops_every_worker_at_once(toy_folder, tmp_path):
    """No logged step comes in this run (one in 100,000 steps), so one Ctrl-C alone would
    leave the workers training: only the second can stop them, and they save nothing."""
    caller, workers = _start_caller(toy_folder, tmp_path, log_every=100000)
    _press_ctrl_c(caller, after=[0.0, 0.2])
    assert _gone_within(workers, 10) == []
    said = (tmp_path / "caller.err").read_text()
    assert "stopped at once; each model continues from its last periodic checkpoint" in said
    assert list((tmp_path / "cache").glob("models/*/checkpoint.pt")) == []


def _state(pid: int) -> str:
    """The process's state letter from /proc (R running, S sleeping, T stopped)."""
    return open(f"/proc/{pid}/stat").read().rsplit(")", 1)[1].split()[0]


@pytest.mark.skipif(not os.path.isdir("/proc/self"), reason="reads process states in /proc")
def test_ctrl_z_stops_the_workers_with_their_caller_and_fg_continues_them(toy_folder, tmp_path):
    """The workers left the terminal's process group, so Ctrl-Z (SIGTSTP) reaches the
    caller alone: it must stop them too, or they train on while the job is stopped."""
    import time

    caller, workers = _start_caller(toy_folder, tmp_path)
    try:
        caller.send_signal(signal.SIGTSTP)
        deadline = time.monotonic() + 10
        while _state(caller.pid) != "T" and time.monotonic() < deadline:
            time.sleep(0.05)
        assert _state(caller.pid) == "T"
        assert [_state(pid) for pid in workers] == ["T", "T"]
        caller.send_signal(signal.SIGCONT)  # fg or bg
        deadline = time.monotonic() + 10
        while "T" in [_state(pid) for pid in workers] and time.monotonic() < deadline:
            time.sleep(0.05)
        assert "T" not in [_state(pid) for pid in [caller.pid, *workers]]
    finally:
        caller.kill()
        caller.wait(timeout=30)
    assert _gone_within(workers, 10) == []


@pytest.mark.skipif(os.name != "posix", reason="POSIX signals")
def test_workers_end_when_their_caller_is_killed(toy_folder, tmp_path):
    """SIGTERM (``kill``, ``timeout``) or a closed terminal ends the caller without its
    clean-up; its workers must not train on, holding their memory, with nobody to read them."""
    caller, workers = _start_caller(toy_folder, tmp_path)
    try:
        caller.send_signal(signal.SIGTERM)
        caller.wait(timeout=30)
    finally:
        if caller.poll() is None:
            caller.kill()
    # they check every PARENT_CHECK_SECONDS (1 s)
    assert _gone_within(workers, 10) == [], "workers outlived their caller by 10 s"


def test_move_bars_follows_the_reports_and_starts_a_resumed_bar_where_it_resumes(tmp_path):
    import io

    from tqdm import tqdm

    out = io.StringIO()
    bars = [tqdm(total=100, file=out, mininterval=0) for _ in range(3)]
    reports = [tmp_path / "a", tmp_path / "b", None]  # the third: progress off
    started = [False, False, False]
    parallel.move_bars(bars, reports, started)
    assert [b.n for b in bars] == [0, 0, 0] and started == [False, False, False]
    write_a, write_b = (parallel._step_writer(str(r)) for r in reports[:2])
    write_a(0)  # a fresh model
    write_b(40)  # a model resuming at step 40
    parallel.move_bars(bars, reports, started)
    assert [b.n for b in bars] == [0, 40, 0] and started == [True, True, False]
    assert bars[1].initial == 40  # its rate counts only the steps trained now
    write_a(25)
    write_b(65)
    parallel.move_bars(bars, reports, started)
    assert [b.n for b in bars] == [25, 65, 0]
    for bar in bars:
        bar.close()
