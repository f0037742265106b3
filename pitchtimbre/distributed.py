"""Training on several processes (several GPUs, or CPU processes for testing) with
DistributedDataParallel, started by ``torchrun``:

    torchrun --nproc_per_node 4 -m pitchtimbre reproduce --profile gpu --out results/

Each process (rank) samples its own share of every batch of pairs (``batch_size / world``
pairs, from a generator seeded per rank), DDP averages the gradients, and rank 0 alone logs,
writes checkpoints and evaluates. Outside ``torchrun`` everything here is a no-op, so the
same code trains on one device.

Chapter: 05_training
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import timedelta

import torch
import torch.distributed as dist

from .errors import PitchTimbreError

log = logging.getLogger(__name__)

DATA_WAIT = timedelta(hours=12)
"""How long :func:`main_first` lets the other processes wait for rank 0's block (rendering
or reading and featurising the data). The process group's own timeout (NCCL's 10 minutes,
gloo's 30) is shorter than NSynth's data stage; a crashed rank 0 still ends the wait at
once, as torchrun then stops every process. A limit of this module, not a setting: no run
should wait longer, and none should give up sooner."""

_wait_group: tuple[object, dist.ProcessGroup] | None = None  # (the group it serves, itself)
_warned_not_cpu = False


def launched_by_torchrun() -> bool:
    """True inside a ``torchrun`` process group of more than one process.

    Chapter: 05_training
    """
    return int(os.environ.get("WORLD_SIZE", "1")) > 1


def init(device_type: str) -> None:
    """Join the process group (NCCL on CUDA, gloo otherwise) when launched by torchrun and not
    joined yet; on CUDA, bind this process to its local GPU.

    Chapter: 05_training
    """
    if not launched_by_torchrun() or dist.is_initialized():
        return
    backend = "nccl" if device_type == "cuda" else "gloo"
    if device_type == "cuda":
        torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", "0")))
    dist.init_process_group(backend=backend)


def active() -> bool:
    """True when this process is part of an initialised group of more than one process.

    Chapter: 05_training
    """
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def rank() -> int:
    """This process's rank (0 outside a process group).

    Chapter: 05_training
    """
    return dist.get_rank() if active() else 0


def world_size() -> int:
    """The number of processes (1 outside a process group).

    Chapter: 05_training
    """
    return dist.get_world_size() if active() else 1


def is_main() -> bool:
    """True on rank 0, the process that logs, writes checkpoints and evaluates.

    Chapter: 05_training
    """
    return rank() == 0


def local_device(device: torch.device) -> torch.device:
    """On CUDA under torchrun, this process's own GPU; under torchrun on another accelerator
    (Apple's 'mps'), the CPU, as gloo exchanges only CPU and CUDA tensors; otherwise
    ``device`` unchanged.

    Chapter: 05_training
    """
    if not active():
        return device
    if device.type == "cuda":
        return torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")))
    if device.type != "cpu":
        global _warned_not_cpu
        if is_main() and not _warned_not_cpu:
            log.warning("under torchrun the processes train on the CPU, not %s (gloo)", device.type)
            _warned_not_cpu = True
        return torch.device("cpu")
    return device


def barrier() -> None:
    """Wait for every process (no-op outside a process group).

    Chapter: 05_training
    """
    if active():
        dist.barrier()


def mean_across_ranks(x: torch.Tensor) -> torch.Tensor:
    """The mean of ``x`` over all processes (``x`` itself outside a process group).

    Chapter: 05_training
    """
    if not active():
        return x
    y = x.clone()
    dist.all_reduce(y, op=dist.ReduceOp.SUM)
    return y / dist.get_world_size()


@contextmanager
def main_first() -> Iterator[None]:
    """Rank 0 runs the block first (e.g. rendering and caching data), the others after it,
    so they read the cache instead of doing the work again; all leave together, each with
    its block done.

    Chapter: 05_training
    """
    if not active():
        yield
        return
    group = _join_wait_group()
    if is_main():
        try:
            yield
        except BaseException as exc:
            _tell_others(group, f"{exc.__class__.__name__}: {exc}")  # they would wait forever
            raise
        _tell_others(group, None)
    else:
        failure = _tell_others(group, None)  # waits for rank 0's word
        if failure is not None:
            raise PitchTimbreError(f"rank 0 failed, so rank {rank()} stops too: {failure}")
        yield
    # The hand-off ends with a barrier: with torch 2.13's gloo, a process that exits (or
    # destroys its groups) right after a broadcast or all-reduce aborted in 3 to 4 runs of
    # ten ('terminate called without an active exception'); after a barrier, in none of 32.
    dist.barrier(group=group)


def _join_wait_group() -> dist.ProcessGroup:
    """Every process joins (once per process group) a gloo group whose collectives wait up to
    ``DATA_WAIT``."""
    global _wait_group
    if _wait_group is None or _wait_group[0] is not dist.group.WORLD:
        _wait_group = (dist.group.WORLD, dist.new_group(backend="gloo", timeout=DATA_WAIT))
    return _wait_group[1]


def _tell_others(group: dist.ProcessGroup, failure: str | None) -> str | None:
    """Rank 0's outcome (None = success), broadcast to every process over the waiting
    group; the others pass None and get rank 0's."""
    box = [failure]
    dist.broadcast_object_list(box, src=0, group=group)
    return box[0]


def gather_objects(obj: object) -> list:
    """``obj`` from every process, in rank order (``[obj]`` outside a process group).

    Chapter: 05_training
    """
    if not active():
        return [obj]
    out: list = [None] * dist.get_world_size()
    dist.all_gather_object(out, obj)
    return out
