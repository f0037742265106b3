"""The machine: the device a model trains on (:func:`pick_device`), and the machine a run
was measured on, named in benchmark output and in ``results.json``.

Timings mean little without the machine: two 2-core "AMD EPYC" virtual machines of the
same provider trained the cpu profile at 92 and 39 ms a step. So the CPU is named with its
family and model numbers where /proc/cpuinfo gives them, and with the vector instructions
PyTorch's CPU kernels use (AVX2, AVX512, ...): they decide the order of floating-point sums,
so the same seed trains slightly different weights under AVX2 and under AVX-512.

Chapter: 05_training
"""

from __future__ import annotations

import os
import platform
from pathlib import Path

import torch

from .config import DEVICE_NAMES, is_device_name
from .errors import ConfigError


def cpu_name(cpuinfo: Path = Path("/proc/cpuinfo")) -> str:
    """The CPU's model name, with its family and model numbers when ``cpuinfo`` lists them
    (a virtual machine's name alone, such as "AMD EPYC", hides which generation it is).

    Chapter: 05_training
    """
    if not cpuinfo.is_file():
        return platform.processor() or platform.machine()
    fields: dict[str, str] = {}
    for line in cpuinfo.read_text().splitlines():
        key, sep, value = line.partition(":")
        if not sep:
            if fields:
                break  # the first processor's block is enough
            continue
        fields.setdefault(key.strip(), value.strip())
    name = fields.get("model name") or platform.processor() or platform.machine()
    if "cpu family" in fields and "model" in fields:
        name += f" (family {fields['cpu family']}, model {fields['model']})"
    return name


def cpu_kernels() -> str:
    """The instruction set of the CPU kernels torch dispatches to here ("AVX2", "AVX512",
    "DEFAULT", which torch 2.8 and older call "NO AVX", ...); the environment variable
    ``ATEN_CPU_CAPABILITY`` lowers it.

    Chapter: 05_training
    """
    return torch.backends.cpu.get_cpu_capability()


_processes_per_device = 1


def share_device(processes: int) -> None:
    """Say that ``processes`` processes, this one included, train on this process's device
    at once (each worker of :mod:`pitchtimbre.parallel` says so when it starts).

    Chapter: 05_training
    """
    global _processes_per_device
    if isinstance(processes, bool) or not isinstance(processes, int) or processes < 1:
        raise ValueError(f"processes: must be an int >= 1, got {processes!r}")
    _processes_per_device = processes


def processes_per_device() -> int:
    """How many processes train on this process's device at once (1 unless
    :func:`share_device` said otherwise): each may take that share of its free memory.

    Chapter: 05_training
    """
    return _processes_per_device


def pick_device(name: str = "auto") -> torch.device:
    """'auto' -> CUDA if available, then Apple MPS, then CPU; otherwise the named device, once
    this torch can use it (``train.device``: a CPU-only torch refuses 'cuda' here, in one
    line, rather than at the first tensor moved there).

    Chapter: 05_training
    """
    mps = getattr(torch.backends, "mps", None)
    has_mps = mps is not None and mps.is_available()
    if name == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        return torch.device("mps") if has_mps else torch.device("cpu")
    if not is_device_name(name):
        raise ConfigError(f"train.device: must be {DEVICE_NAMES}, got {name!r}")
    device = torch.device(name)
    if device.type == "cuda":
        if not torch.cuda.is_available():
            built_for_gpus = torch.version.cuda is not None or torch.version.hip is not None
            why = (
                "this torch sees no GPU (no driver, or CUDA_VISIBLE_DEVICES hides them)"
                if built_for_gpus
                else "this torch is built without CUDA (a CPU wheel)"
            )
            raise ConfigError(
                f"train.device: {name!r}, but {why}; use 'auto' (the best device here) or 'cpu'"
            )
        count = torch.cuda.device_count()
        if device.index is not None and device.index >= count:
            which = "only cuda:0" if count == 1 else f"cuda:0 to cuda:{count - 1}"
            raise ConfigError(
                f"train.device: {name!r}, but this machine has {count} GPU(s): {which}"
            )
    if device.type == "mps" and not has_mps:
        raise ConfigError(
            f"train.device: {name!r}, but this torch has no Apple MPS device; "
            "use 'auto' (the best device here) or 'cpu'"
        )
    return device


def describe_machine(device: torch.device | str | None = None) -> dict[str, str]:
    """The CPU (with its core count, torch's thread count and kernels' instruction set), the
    first GPU when there is one, the torch build and, when given, the device the run uses.

    Chapter: 05_training
    """
    machine = {
        "cpu": f"{cpu_name()}, {os.cpu_count()} cores, {torch.get_num_threads()} torch threads, "
        f"{cpu_kernels()} kernels"
    }
    if torch.cuda.is_available():
        props = torch.cuda.get_device_properties(0)
        machine["gpu"] = f"{props.name}, {props.total_memory / 2**30:.1f} GiB"
    machine["torch"] = torch.__version__
    if device is not None:
        machine["device"] = str(device)
    return machine


def machine_lines(machine: dict[str, str]) -> list[str]:
    """``describe_machine``'s fields as lines to print, one a field.

    Chapter: 05_training
    """
    return [f"{key}: {value}" for key, value in machine.items()]
