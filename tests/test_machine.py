from __future__ import annotations

import os
import platform
import subprocess
import sys

import pytest
import torch

from pitchtimbre.errors import ConfigError
from pitchtimbre.machine import (
    cpu_kernels,
    cpu_name,
    describe_machine,
    machine_lines,
    pick_device,
)

CPUINFO = """processor\t: 0
vendor_id\t: AuthenticAMD
cpu family\t: 26
model\t\t: 2
model name\t: AMD EPYC
flags\t\t: fpu vme

processor\t: 1
vendor_id\t: AuthenticAMD
cpu family\t: 25
model\t\t: 1
model name\t: AMD EPYC
"""


def test_cpu_name_adds_family_and_model_of_the_first_processor(tmp_path):
    cpuinfo = tmp_path / "cpuinfo"
    cpuinfo.write_text(CPUINFO)
    assert cpu_name(cpuinfo) == "AMD EPYC (family 26, model 2)"


def test_cpu_name_without_family_keeps_the_model_name(tmp_path):
    cpuinfo = tmp_path / "cpuinfo"
    cpuinfo.write_text("processor\t: 0\nmodel name\t: Neoverse-V2\n")  # no x86 family
    assert cpu_name(cpuinfo) == "Neoverse-V2"


def test_cpu_name_without_cpuinfo_falls_back_to_the_platform(tmp_path):
    assert cpu_name(tmp_path / "missing") == (platform.processor() or platform.machine())


def test_describe_machine_names_torch_and_the_device():
    machine = describe_machine(torch.device("cpu"))
    assert machine["torch"] == torch.__version__ and machine["device"] == "cpu"
    assert ("gpu" in machine) == torch.cuda.is_available()
    assert machine_lines(machine)[0].startswith("cpu: ")
    threads = f"{torch.get_num_threads()} torch threads, {cpu_kernels()} kernels"
    assert machine["cpu"].endswith(threads)


def test_cpu_kernels_follow_aten_cpu_capability():
    """The variable that selects AVX2 kernels on an AVX-512 CPU (as the training chapter
    suggests for the book's exact numbers) is what cpu_kernels reports, in a fresh process.
    torch 2.10 and newer name the lowest level "DEFAULT"; 2.8 and older "NO AVX"."""
    script = "from pitchtimbre.machine import cpu_kernels; print(cpu_kernels())"
    env = {**os.environ, "ATEN_CPU_CAPABILITY": "default"}
    out = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() in ("DEFAULT", "NO AVX")


def test_device_choice(monkeypatch):
    assert pick_device("cpu").type == "cpu"
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    assert pick_device("auto").type == "cuda"
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    assert pick_device("cuda:1") == torch.device("cuda", 1)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(torch.backends.mps, "is_available", lambda: True)
    assert pick_device("auto").type == "mps"  # no CUDA: Apple's GPU before the CPU
    monkeypatch.setattr(torch.backends.mps, "is_available", lambda: False)
    assert pick_device("auto").type == "cpu"


def test_a_device_this_torch_cannot_use_is_refused_naming_the_setting(monkeypatch):
    """Not torch's AssertionError at the first tensor moved there."""
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(torch.version, "cuda", None)
    monkeypatch.setattr(torch.version, "hip", None)
    with pytest.raises(
        ConfigError, match=r"train\.device: 'cuda', but this torch is built without CUDA .*'auto'"
    ):
        pick_device("cuda")
    monkeypatch.setattr(torch.version, "hip", "6.4")  # ROCm: CUDA's names, no CUDA version
    with pytest.raises(ConfigError, match=r"'cuda:0', but this torch sees no GPU \(no driver"):
        pick_device("cuda:0")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    with pytest.raises(
        ConfigError, match=r"'cuda:2', but this machine has 2 GPU\(s\): cuda:0 to cuda:1"
    ):
        pick_device("cuda:2")
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)
    with pytest.raises(
        ConfigError, match=r"'cuda:1', but this machine has 1 GPU\(s\): only cuda:0$"
    ):
        pick_device("cuda:1")
    for wrong in ("cuda:x", "meta", "cpu:0"):  # as a config refuses them (it is called alone too)
        with pytest.raises(ConfigError, match=rf"train\.device: must be 'auto', .*, got '{wrong}'"):
            pick_device(wrong)
    monkeypatch.setattr(torch.backends.mps, "is_available", lambda: False)
    with pytest.raises(ConfigError, match=r"'mps', but this torch has no Apple MPS device"):
        pick_device("mps")


def test_training_on_a_device_torch_lacks_fails_before_any_work(monkeypatch, tmp_path):
    from pitchtimbre.config import ExperimentConfig, TrainConfig
    from pitchtimbre.training import train_model

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    cfg = ExperimentConfig(profile="ci", train=TrainConfig(device="cuda"))
    with pytest.raises(ConfigError, match=r"train\.device: 'cuda'"):
        train_model(cfg, dataset=None, out_dir=tmp_path / "run")  # type: ignore[arg-type]
    assert not (tmp_path / "run").exists()
