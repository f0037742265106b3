"""Training speed and memory: our loop against a DataLoader loop, and against the model alone.

    python benchmarks/bench_training.py            # cpu-profile model, 100 timed steps, up to 100k notes
    python benchmarks/bench_training.py --small    # ci-profile model, 30 timed steps, up to 5k notes (CI)
    python benchmarks/bench_training.py --profile gpu --device cuda --compile

Three measurements, side by side in one run. Every loop trains the same ``PitchTimbreVAE``
with the same loss (``pair_loss``), Adam, gradient clipping, bf16 autocast on CUDA and
batch size (``pairs.batch_size`` of the profile):

1. **Throughput** in pairs per second.
   *ours* is ``train_model`` itself: features resident on the device, pairs sampled there by
   ``PairSampler``. Its steady per-step time is read from the trainer's own clock (the
   ``seconds`` of its history, written at every ``train.log_every`` step after a device
   synchronisation): from the end of the first logging window, which is the warm-up, to the
   last step. Setup (moving the features, building the sampler and the model) and the final
   checkpoint are outside that window; the row *train_model call, whole* includes them
   (spread over its steps).
   *DataLoader* is the loop most people write first: a ``Dataset`` whose ``__getitem__``
   draws one pair with Python's ``random`` from per-label index lists, a ``DataLoader``
   that collates a batch (``--workers`` processes, 0 by default; pinned memory on CUDA),
   and a copy to the device every step.
   ``ours / DataLoader`` above 1 means our loop trains faster.

2. **Pipeline overhead.** *model only* repeats a step on one fixed batch already on the
   device (no sampling, no gathering, no logging). ``model only / end to end`` is the share
   of our step spent in the model itself: 1.0 means the data pipeline costs nothing (the
   target on a GPU is 0.9 or more; above 1.0 is noise). The two *data only* rows time each pipeline without
   the model (a batch of pairs drawn and its features on the device), which explains the
   ratios where the model's step is long enough to hide the difference (the CPU).
   With ``--compile``, one more row: *ours* with ``train.compile`` (inductor; it needs a C
   compiler), and ``eager / compiled``, above 1 when compiling the model pays. On two CPU
   cores it did not (cpu profile: 84 to 87 ms against 66 to 71 ms a step on 2026-12-06); a GPU,
   where a small model's step is mostly kernel launches, is where it may.

3. **Peak memory against the number of notes.** For each N a fresh subprocess trains two
   steps on a few notes first (the kernels' libraries load at the first step), then builds
   N synthetic notes and runs ``train_model`` for a few steps. *host data* is the growth of
   the resident set size once the notes exist, *host peak* the growth of its high-water
   mark (``VmHWM``, reset after the warm-up) by the end of training, both over the process
   after the warm-up; on CUDA, *device peak* is the growth of
   ``torch.cuda.max_memory_allocated`` over the same point. The last lines give, from the
   smallest to the largest N, the slope in MiB per MiB of features (N x bins x frames x 4
   bytes): how many copies of the data training holds; and what is left, fixed (the model,
   the optimiser, a batch's activations, the allocators' buffers).

Data is synthetic unless ``--real-data``: random features of the profile's shape and labels
on a grid of instruments x pitches x velocities like the profile's (a quarter of the
instruments held out), so the benchmark renders nothing. The compute does not depend on the
feature values. Times are the fastest of ``--repeat`` rounds, each round timing every loop
one after another, so on a shared machine the absolute numbers are noisy but the
ratios compare loops measured under the same load. Prints tables; makes no assertions.
"""

from __future__ import annotations

import argparse
import ctypes
import json
import math
import random
import resource
import subprocess
import sys
import tempfile
import time
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch
from torch.utils.data import DataLoader, Dataset

from pitchtimbre.config import ExperimentConfig, profile_config
from pitchtimbre.data import NoteDataset, NoteRecord, PairSampler, load_dataset
from pitchtimbre.data.dataset import DataSummary
from pitchtimbre.losses import pair_loss
from pitchtimbre.machine import describe_machine, machine_lines
from pitchtimbre.model import PitchTimbreVAE
from pitchtimbre.training import (
    FeatureStore,
    make_optimiser,
    steady_step_seconds,
    train_model,
    training_precision,
    uses_autocast,
)

MIB = 2**20
PROC_STATUS = Path("/proc/self/status")
"""Linux's account of this process's memory (VmRSS, VmHWM); elsewhere only a peak is known."""


@dataclass(frozen=True)
class Size:
    """How much each part of the benchmark does."""

    profile: str
    timed_steps: int
    repeat: int
    notes: tuple[int, ...]
    memory_steps: int


SMALL = Size(profile="ci", timed_steps=30, repeat=3, notes=(500, 1000, 2000, 5000), memory_steps=3)
DEFAULT = Size(
    profile="cpu", timed_steps=100, repeat=3, notes=(1000, 5000, 20000, 100000), memory_steps=5
)


# --- the machine ---------------------------------------------------------------------------


def synchronise(device: torch.device) -> None:
    """Wait for queued device work, so that the clock reads finished work."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    elif device.type == "mps":
        torch.mps.synchronize()


def steady_seconds(
    device: torch.device, warmup: int, steps: int, step: Callable[[], object]
) -> float:
    """Seconds per call of ``step`` over ``steps`` calls after ``warmup`` untimed ones."""
    for _ in range(warmup):
        step()
    synchronise(device)
    start = time.perf_counter()
    for _ in range(steps):
        step()
    synchronise(device)
    return (time.perf_counter() - start) / steps


def host_memory_mib(peak: bool = False) -> float:
    """This process's resident set size (or, with ``peak``, its high-water mark) in MiB."""
    if PROC_STATUS.is_file():
        key = "VmHWM:" if peak else "VmRSS:"
        for line in PROC_STATUS.read_text().splitlines():
            if line.startswith(key):
                return int(line.split()[1]) / 1024  # kB
    # no /proc (macOS): only the peak is known; ru_maxrss is in bytes there, kB on Linux
    maxrss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return maxrss / MIB if sys.platform == "darwin" else maxrss / 1024


# --- data ----------------------------------------------------------------------------------


def synthetic_dataset(
    cfg: ExperimentConfig, n_notes: int | None = None, seed: int = 0
) -> NoteDataset:
    """Random features [N, bins, frames] with labels on the profile's grid of pitches and
    velocities, instrument after instrument; every fourth instrument is held out.

    ``n_notes`` None gives 96 instruments (about the size of the profile's own data).
    """
    pitches = cfg.data.render.pitches
    velocities = cfg.data.render.velocities
    per_instrument = len(pitches) * len(velocities)
    n = 96 * per_instrument if n_notes is None else n_notes
    note = torch.arange(n)
    instrument = note // per_instrument
    pitch = torch.tensor(pitches)[note % per_instrument // len(velocities)]
    velocity = torch.tensor(velocities)[note % len(velocities)]
    is_train = instrument % 4 != 3
    generator = torch.Generator().manual_seed(seed)
    features = torch.randn(n, cfg.features.n_bins, cfg.features.n_frames, generator=generator)

    n_instruments = int(instrument.max()) + 1
    names = [f"synthetic_{i:05d}" for i in range(n_instruments)]
    audio = Path("synthetic.wav")  # never read: the features are given
    records = [
        NoteRecord(
            note_str=f"{names[i]}-{p:03d}-{v:03d}",
            pitch=p,
            velocity=v,
            instrument=i,
            instrument_str=names[i],
            instrument_family=0,
            instrument_family_str="synthetic",
            instrument_source=2,
            instrument_source_str="synthetic",
            sample_rate=cfg.features.sample_rate,
            audio_path=audio,
        )
        for i, p, v in zip(instrument.tolist(), pitch.tolist(), velocity.tolist(), strict=True)
    ]
    n_train = len(set(instrument[is_train].tolist()))
    summary = DataSummary(
        source="synthetic",
        notes=n,
        instruments_train=n_train,
        instruments_heldout=n_instruments - n_train,
        families=1,
        pitch_range=(min(pitches), max(pitches)),
        velocities=tuple(velocities),
    )
    return NoteDataset(
        features=features,
        pitch=pitch,
        velocity=velocity,
        instrument=instrument,
        family=torch.zeros(n, dtype=torch.long),
        is_train=is_train,
        instrument_names=names,
        family_names=["synthetic"],
        records=records,
        mean=0.0,
        std=1.0,
        summary=summary,
        fingerprint=f"synthetic-{n}-{seed}",
    )


class RandomPairs(Dataset):
    """The baseline: one pair per item, drawn in Python from per-label index lists.

    The kind of pair is drawn with the profile's proportions, then an anchor that has a
    partner of that kind, then the partner, redrawn until its labels fit the kind.
    """

    def __init__(
        self,
        features: torch.Tensor,
        pitch: torch.Tensor,
        instrument: torch.Tensor,
        proportions: tuple[float, ...],
        length: int,
    ) -> None:
        self.features = features  # [N, F, T] on the CPU
        self.pitch: list[int] = pitch.tolist()
        self.instrument: list[int] = instrument.tolist()
        self.proportions = list(proportions)
        self.length = length
        self.by_note: dict[tuple[int, int], list[int]] = defaultdict(list)
        self.by_pitch: dict[int, list[int]] = defaultdict(list)
        self.by_instrument: dict[int, list[int]] = defaultdict(list)
        for i, (p, k) in enumerate(zip(self.pitch, self.instrument, strict=True)):
            self.by_note[k, p].append(i)
            self.by_pitch[p].append(i)
            self.by_instrument[k].append(i)
        n = len(self.pitch)
        block = [len(self.by_note[k, p]) for p, k in zip(self.pitch, self.instrument, strict=True)]
        self.anchors = [
            [i for i in range(n) if block[i] >= 2],
            [i for i in range(n) if len(self.by_pitch[self.pitch[i]]) > block[i]],
            [i for i in range(n) if len(self.by_instrument[self.instrument[i]]) > block[i]],
            list(range(n)),  # other pitch, other instrument: every note has one in this data
        ]

    def __len__(self) -> int:
        return self.length

    def __getitem__(self, index: int) -> tuple[torch.Tensor, torch.Tensor, bool, bool]:
        kind = random.choices(range(4), weights=self.proportions)[0]
        a = random.choice(self.anchors[kind])
        p, k = self.pitch[a], self.instrument[a]
        candidates = (
            self.by_note[k, p],
            self.by_pitch[p],
            self.by_instrument[k],
            range(len(self.pitch)),
        )[kind]
        want = (kind in (0, 1), kind in (0, 2))  # (same pitch, same instrument)
        while True:
            b = random.choice(candidates)
            same = (self.pitch[b] == p, self.instrument[b] == k)
            if b != a and same == want:
                return self.features[a], self.features[b], same[0], same[1]


# --- the three loops -----------------------------------------------------------------------


def timing_config(cfg: ExperimentConfig, device: torch.device, steps: int) -> ExperimentConfig:
    """``cfg`` training for ``steps`` steps on ``device``, with no checkpoint on the way."""
    return cfg.with_overrides(
        {"train.steps": steps, "train.checkpoint_every": steps + 1, "train.device": str(device)}
    )


def time_ours(
    cfg: ExperimentConfig, dataset: NoteDataset, device: torch.device, warmup: int, steps: int
) -> tuple[float, float]:
    """Seconds per steady step of ``train_model`` (the warm-up is its first logging window,
    ``warmup`` steps long) and seconds of the whole call (``warmup + steps`` steps)."""
    cfg = timing_config(cfg, device, warmup + steps).with_overrides({"train.log_every": warmup})
    with tempfile.TemporaryDirectory() as folder:
        start = time.perf_counter()
        result = train_model(cfg, dataset, folder, resume=False, progress=False)
        whole = time.perf_counter() - start
    # the history's first entry is at step `warmup`, the end of the warm-up window
    return steady_step_seconds(result.history), whole


def new_training(
    cfg: ExperimentConfig, n_bins: int, device: torch.device
) -> tuple[PitchTimbreVAE, torch.optim.Optimizer, torch.Generator]:
    """A model (the trainer's initial weights), its optimiser and a generator for the
    reparameterisation noise, like those ``train_model`` makes."""
    torch.manual_seed(cfg.train.seed)
    model = PitchTimbreVAE(n_bins, cfg.model).to(device).train()
    optimiser = make_optimiser(model, cfg, device)
    noise = torch.Generator(device=device).manual_seed(cfg.train.seed + 1)
    return model, optimiser, noise


def train_step(
    model: PitchTimbreVAE,
    optimiser: torch.optim.Optimizer,
    noise: torch.Generator,
    cfg: ExperimentConfig,
    batch: tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor],
) -> None:
    """One optimisation step on a batch already on the device, as ``train_model`` takes it."""
    x1, x2, same_pitch, same_timbre = batch
    amp = uses_autocast(cfg.train, x1.device)
    with training_precision(amp, x1.device):
        terms = pair_loss(model, x1, x2, same_pitch, same_timbre, cfg.loss, generator=noise)
    optimiser.zero_grad(set_to_none=True)
    terms.total.backward()
    if cfg.train.grad_clip is not None:
        torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.train.grad_clip)
    optimiser.step()


def pair_loader(
    cfg: ExperimentConfig, train: NoteDataset, device: torch.device, batches: int, workers: int
) -> DataLoader:
    """The straightforward baseline: a map-style :class:`RandomPairs` through a DataLoader."""
    batch_size = cfg.pairs.batch_size
    pairs = RandomPairs(
        train.features,
        train.pitch,
        train.instrument,
        cfg.pairs.proportions,
        length=batches * batch_size,
    )
    return DataLoader(
        pairs, batch_size=batch_size, num_workers=workers, pin_memory=device.type == "cuda"
    )


def time_dataloader(
    cfg: ExperimentConfig,
    train: NoteDataset,
    device: torch.device,
    warmup: int,
    steps: int,
    workers: int,
) -> float:
    """Seconds per steady step of the Dataset/DataLoader loop."""
    loader = pair_loader(cfg, train, device, warmup + steps, workers)
    model, optimiser, noise = new_training(cfg, train.features.shape[1], device)
    batches = iter(loader)

    def step() -> None:
        on_device = tuple(t.to(device, non_blocking=True) for t in next(batches))
        train_step(model, optimiser, noise, cfg, on_device)  # type: ignore[arg-type]

    return steady_seconds(device, warmup, steps, step)


def time_model_only(
    cfg: ExperimentConfig, train: NoteDataset, device: torch.device, warmup: int, steps: int
) -> float:
    """Seconds per step on one fixed batch (drawn once by the sampler) already on the device."""
    sampler = PairSampler(train.pitch, train.instrument, cfg.pairs, seed=cfg.train.seed)
    drawn = sampler.sample()
    batch = tuple(
        t.to(device)
        for t in (
            train.features[drawn.first],
            train.features[drawn.second],
            drawn.same_pitch,
            drawn.same_timbre,
        )
    )
    model, optimiser, noise = new_training(cfg, train.features.shape[1], device)
    return steady_seconds(
        device,
        warmup,
        steps,
        lambda: train_step(model, optimiser, noise, cfg, batch),  # type: ignore[arg-type]
    )


def time_data_only(
    cfg: ExperimentConfig,
    train: NoteDataset,
    device: torch.device,
    warmup: int,
    steps: int,
    workers: int,
) -> tuple[float, float]:
    """Seconds per batch of each pipeline alone, without the model: the trainer's
    ``PairSampler`` and ``FeatureStore.gather`` on the device, and a DataLoader batch of
    :class:`RandomPairs` copied to the device."""
    store = FeatureStore(train.features, device)
    sampler = PairSampler(
        train.pitch, train.instrument, cfg.pairs, seed=cfg.train.seed, device=device
    )
    loader = pair_loader(cfg, train, device, warmup + steps, workers)
    # a reduction of each batch stands in for the model, so that no work is skipped
    total = torch.zeros((), device=device)
    batches = iter(loader)

    def ours() -> None:
        nonlocal total
        drawn = sampler.sample()
        total += store.gather(drawn.first).sum() + store.gather(drawn.second).sum()

    def baseline() -> None:
        nonlocal total
        x1, x2, _, _ = (t.to(device, non_blocking=True) for t in next(batches))
        total += x1.sum() + x2.sum()

    return (
        steady_seconds(device, warmup, steps, ours),
        steady_seconds(device, warmup, steps, baseline),
    )


@dataclass
class Timings:
    """Fastest seconds per step of each loop over the rounds."""

    ours: float = math.inf
    ours_call: float = math.inf  # the whole train_model call, setup and checkpoint included
    dataloader: float = math.inf
    model_only: float = math.inf
    compiled: float = math.inf  # ours with train.compile, when asked
    data_ours: float = math.inf  # the pipelines alone, without the model
    data_dataloader: float = math.inf


def measure_speed(
    cfg: ExperimentConfig,
    dataset: NoteDataset,
    device: torch.device,
    steps: int,
    repeat: int,
    workers: int,
    compiled: bool = False,
) -> Timings:
    """The fastest time of each loop over ``repeat`` rounds. Each round runs the loops one
    after another, starting one later than the round before, so that a slow stretch of a
    shared machine does not always fall on the same loop. With ``compiled``, one more loop:
    ``train_model`` with ``train.compile`` (its first logging window, the warm-up, holds the
    compilation)."""
    warmup = cfg.train.log_every
    train = dataset.train()
    best = Timings()

    def ours() -> None:
        per_step, call = time_ours(cfg, dataset, device, warmup, steps)
        best.ours = min(best.ours, per_step)
        best.ours_call = min(best.ours_call, call / (warmup + steps))

    def dataloader() -> None:
        per_step = time_dataloader(cfg, train, device, warmup, steps, workers)
        best.dataloader = min(best.dataloader, per_step)

    def model_only() -> None:
        per_step = time_model_only(cfg, train, device, warmup, steps)
        best.model_only = min(best.model_only, per_step)

    def data_only() -> None:
        per_ours, per_dataloader = time_data_only(cfg, train, device, warmup, steps, workers)
        best.data_ours = min(best.data_ours, per_ours)
        best.data_dataloader = min(best.data_dataloader, per_dataloader)

    def ours_compiled() -> None:
        with_compile = cfg.with_overrides({"train.compile": True})
        per_step, _ = time_ours(with_compile, dataset, device, warmup, steps)
        best.compiled = min(best.compiled, per_step)

    loops = [ours, dataloader, model_only, data_only] + ([ours_compiled] if compiled else [])
    for r in range(repeat):
        for loop in loops[r % len(loops) :] + loops[: r % len(loops)]:
            loop()
    return best


def print_speed(t: Timings, batch_size: int, workers: int) -> None:
    def row(name: str, seconds: float) -> None:
        print(f"  {name:48s} {1000 * seconds:9.2f} {batch_size / seconds:9.0f}")

    print("1. training throughput")
    print(f"  {'loop':48s} {'ms/step':>9s} {'pairs/s':>9s}")
    row("ours: train_model, steady steps", t.ours)
    row("ours: train_model call, whole", t.ours_call)
    row(f"Dataset/DataLoader (num_workers={workers})", t.dataloader)
    print(f"  {'ours / DataLoader (pairs/s)':48s} {t.dataloader / t.ours:9.2f}x\n")
    print("2. pipeline overhead")
    print(f"  {'step':48s} {'ms/step':>9s} {'pairs/s':>9s}")
    row("end to end (ours, steady steps)", t.ours)
    row("model only (one fixed batch on the device)", t.model_only)
    print(f"  {'model only / end to end (GPU target >= 0.9)':48s} {t.model_only / t.ours:9.2f}")
    row("data only: PairSampler + FeatureStore.gather", t.data_ours)
    row(f"data only: DataLoader batch + copy (workers={workers})", t.data_dataloader)
    if math.isfinite(t.compiled):
        row("ours with train.compile (torch.compile), steady", t.compiled)
        print(f"  {'eager / compiled (above 1: compiling pays)':48s} {t.ours / t.compiled:9.2f}")
    print()


# --- memory against the number of notes ----------------------------------------------------


def release_freed_memory() -> None:
    """Hand the memory freed so far back to the system (glibc's malloc_trim), so that what
    comes next grows the resident set instead of reusing it unseen."""
    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):  # not glibc
        pass


def reset_host_peak() -> bool:
    """Set this process's high-water mark back to its resident set size (Linux's
    /proc/self/clear_refs); False where the system cannot."""
    try:
        Path("/proc/self/clear_refs").write_text("5")
    except OSError:
        return False
    return True


def memory_run(cfg: ExperimentConfig, device: torch.device, n_notes: int, steps: int) -> dict:
    """In a fresh process: memory growth from building ``n_notes`` synthetic notes and then
    training ``steps`` steps on them, over a baseline taken after two steps on a few notes
    (the kernels' libraries, oneDNN on the CPU and cuBLAS on CUDA, load at the first step:
    a one-off cost, not one that grows with the data)."""
    render = cfg.data.render
    warm = synthetic_dataset(cfg, 8 * len(render.pitches) * len(render.velocities))
    with tempfile.TemporaryDirectory() as folder:
        warm_cfg = timing_config(cfg, device, 2).with_overrides({"train.log_every": 1})
        train_model(warm_cfg, warm, folder, resume=False, progress=False)
    del warm
    release_freed_memory()
    if device.type == "cuda":
        torch.cuda.synchronize(device)
        torch.cuda.reset_peak_memory_stats(device)
        device_base = torch.cuda.memory_allocated(device)
    peak_reset = reset_host_peak()
    base = host_memory_mib()
    dataset = synthetic_dataset(cfg, n_notes)
    data = host_memory_mib()
    with tempfile.TemporaryDirectory() as folder:
        train_model(
            timing_config(cfg, device, steps), dataset, folder, resume=False, progress=False
        )
    measured = PROC_STATUS.is_file()  # else only a lifetime peak is known
    out = {
        "train_notes": int(dataset.is_train.sum()),
        "data_mib": data - base if measured else None,
        "peak_mib": host_memory_mib(peak=True) - base if measured else None,
        "peak_reset": peak_reset,
    }
    if device.type == "cuda":
        out["device_peak_mib"] = (torch.cuda.max_memory_allocated(device) - device_base) / MIB
    return out


def memory_child(profile: str, device: torch.device, n_notes: int, steps: int) -> dict:
    """:func:`memory_run` in a fresh process (this script with a hidden flag), so that the
    high-water mark of one size does not carry over to the next."""
    command = [sys.executable, __file__, "--memory-run", str(n_notes)]
    # in the child, --steps is the number of training steps of that run
    command += ["--profile", profile, "--device", str(device), "--steps", str(steps)]
    done = subprocess.run(command, capture_output=True, text=True, check=True)
    return json.loads(done.stdout.strip().splitlines()[-1])


def measure_memory(profile: str, device: torch.device, notes: tuple[int, ...], steps: int) -> None:
    cfg = profile_config(profile)
    feature_mib = cfg.features.n_bins * cfg.features.n_frames * 4 / MIB  # per note
    columns = {"host peak": "peak_mib"}
    if device.type == "cuda":
        columns["device peak"] = "device_peak_mib"
    print(
        f"3. memory against the number of notes ({steps} training steps, fresh process each;"
        " growth over a baseline after two warm-up steps)"
    )
    print(
        f"  {'notes':>7s} {'train':>7s} {'features':>9s} {'host data':>10s}"
        + "".join(f" {name:>12s}" for name in columns)
    )
    print(f"  {'':15s} {'MiB':>9s} {'MiB':>10s}" + f" {'MiB':>12s}" * len(columns))
    runs = [memory_child(profile, device, n, steps) for n in notes]

    def mib(value: float | None, width: int) -> str:
        return f"{value:{width}.1f}" if value is not None else f"{'n/a':>{width}s}"

    for n, r in zip(notes, runs, strict=True):
        print(
            f"  {n:7d} {r['train_notes']:7d} {n * feature_mib:9.1f} {mib(r['data_mib'], 10)}"
            + "".join(f" {mib(r[key], 12)}" for key in columns.values())
        )
    if runs[0]["data_mib"] is None:
        print("  (host memory needs Linux's /proc: not measured here)")
        columns.pop("host peak")
    elif not all(r["peak_reset"] for r in runs):
        print("  (this system cannot reset the high-water mark: the host peak is the warm-up's")
        print("   where that was higher, so no slope is drawn from it)")
        columns.pop("host peak")
    if len(notes) >= 2:
        # the slope between the smallest and largest size is what grows with the data; the
        # rest (the model, the optimiser, a batch's activations) is fixed
        span = (notes[-1] - notes[0]) * feature_mib
        for name, key in columns.items():
            slope = (runs[-1][key] - runs[0][key]) / span
            fixed = runs[0][key] - slope * notes[0] * feature_mib
            print(
                f"  {name}: {slope:.2f} MiB per MiB of features ({notes[0]} to {notes[-1]}"
                f" notes), {fixed:.0f} MiB fixed"
            )


# --- entry point ---------------------------------------------------------------------------


def main() -> None:
    start = time.perf_counter()
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--small", action="store_true", help="ci model, 30 steps, up to 5k notes (CI)")
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--profile", choices=("ci", "cpu", "gpu"), help="model and batch size")
    ap.add_argument("--steps", type=int, help="timed steps per loop (rounded up to log_every)")
    ap.add_argument("--repeat", type=int, help="rounds; the fastest of each loop is kept")
    ap.add_argument("--workers", type=int, default=0, help="DataLoader num_workers")
    ap.add_argument("--notes", help="comma-separated note counts for the memory table")
    ap.add_argument("--real-data", action="store_true", help="the profile's data for 1 and 2")
    ap.add_argument(
        "--compile", action="store_true", help="also time ours with train.compile (inductor)"
    )
    ap.add_argument("--memory-run", type=int, help=argparse.SUPPRESS)  # child process
    args = ap.parse_args()
    size = SMALL if args.small else DEFAULT
    profile = args.profile or size.profile
    cfg = profile_config(profile)
    device = torch.device(args.device)

    if args.memory_run is not None:
        steps = args.steps or size.memory_steps
        print(json.dumps(memory_run(cfg, device, args.memory_run, steps)))
        return

    log_every = cfg.train.log_every
    steps = math.ceil((args.steps or size.timed_steps) / log_every) * log_every
    repeat = args.repeat or size.repeat
    notes = tuple(int(n) for n in args.notes.split(",")) if args.notes else size.notes
    dataset = (
        load_dataset(cfg.data, cfg.features, progress=False)
        if args.real_data
        else synthetic_dataset(cfg)
    )
    train = dataset.train()

    print("\n".join(machine_lines(describe_machine(device))))
    print(
        f"profile {profile}: hidden {cfg.model.hidden}, {cfg.model.layers} layers, "
        f"batch {cfg.pairs.batch_size} pairs, amp {uses_autocast(cfg.train, device)}"
    )
    print(
        f"data: {dataset.summary.source}, {len(train)} training notes "
        f"({dataset.summary.instruments_train} instruments) of {len(dataset)}"
    )
    print(
        f"steps: {log_every} warm-up (= log_every) + {steps} timed per loop, "
        f"fastest of {repeat} rounds\n"
    )
    timings = measure_speed(cfg, dataset, device, steps, repeat, args.workers, args.compile)
    print_speed(timings, cfg.pairs.batch_size, args.workers)
    measure_memory(profile, device, notes, size.memory_steps)
    print(f"\n(the benchmark took {time.perf_counter() - start:.0f} s)")


if __name__ == "__main__":
    main()
