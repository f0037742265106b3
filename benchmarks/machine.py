"""What every benchmark prints first: the machine its figures were measured on."""

from __future__ import annotations

import os
import platform
from pathlib import Path

import torch


def cpu_name() -> str:
    """The CPU model, from /proc/cpuinfo where there is one."""
    cpuinfo = Path("/proc/cpuinfo")
    if cpuinfo.is_file():
        for line in cpuinfo.read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    return platform.processor() or platform.machine()


def describe_machine(device: torch.device | None = None) -> list[str]:
    """Lines naming the CPU (cores, torch threads), the GPU when there is one, torch, and
    the device the benchmark runs on."""
    lines = [f"cpu: {cpu_name()} ({os.cpu_count()} cores, {torch.get_num_threads()} torch threads)"]
    if torch.cuda.is_available():
        props = torch.cuda.get_device_properties(0)
        lines.append(f"gpu: {props.name}, {props.total_memory / 2**30:.1f} GiB")
    lines.append(
        f"torch {torch.__version__}" + (f", running on {device}" if device is not None else "")
    )
    return lines
