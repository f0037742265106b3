from __future__ import annotations

import torch

from pitchtimbre.machine import cpu_name, describe_machine, machine_lines

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
    assert cpu_name(tmp_path / "missing") != ""


def test_describe_machine_names_torch_and_the_device():
    machine = describe_machine(torch.device("cpu"))
    assert machine["torch"] == torch.__version__ and machine["device"] == "cpu"
    assert ("gpu" in machine) == torch.cuda.is_available()
    assert machine_lines(machine)[0].startswith("cpu: ") and machine["cpu"].endswith(
        f"{torch.get_num_threads()} torch threads"
    )
