"""The training benchmark's memory table measures what it says: the host peak can be reset
after the warm-up, and a run's growth holds at least the features it built.

Chapter: 05_training
"""

from __future__ import annotations

import importlib
import sys
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture
def bench(monkeypatch):
    """benchmarks/bench_training.py as a module (benchmarks/ on the path for this test only)."""
    monkeypatch.syspath_prepend(str(ROOT / "benchmarks"))
    return importlib.import_module("bench_training")


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="/proc/self/clear_refs")
def test_the_host_peak_is_reset_to_the_resident_set(bench):
    big = torch.ones(64 * 2**20 // 4)  # 64 MiB, touched
    del big
    before = bench.host_memory_mib(peak=True)
    assert bench.reset_host_peak()
    after = bench.host_memory_mib(peak=True)
    assert after <= bench.host_memory_mib() + 1 and after < before - 32


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="/proc/self/status")
def test_a_memory_run_counts_the_notes_it_built_and_not_the_warm_up(bench):
    cfg = bench.profile_config("ci")
    run = bench.memory_run(cfg, torch.device("cpu"), n_notes=2000, steps=2)
    features = 2000 * cfg.features.n_bins * cfg.features.n_frames * 4 / bench.MIB
    assert run["peak_reset"]
    assert 0.9 * features <= run["data_mib"] <= run["peak_mib"]


def test_the_memory_table_says_what_it_could_not_measure(bench, monkeypatch, capsys):
    """Without /proc (macOS) the host columns read n/a and no slope is drawn from them."""
    runs = {
        1000: {"train_notes": 750, "data_mib": None, "peak_mib": None, "peak_reset": False},
        2000: {"train_notes": 1500, "data_mib": None, "peak_mib": None, "peak_reset": False},
    }
    monkeypatch.setattr(bench, "memory_child", lambda profile, device, n, steps: runs[n])
    bench.measure_memory("ci", torch.device("cpu"), (1000, 2000), steps=2)
    table = capsys.readouterr().out
    assert "n/a" in table and "host memory needs Linux's /proc: not measured here" in table
    assert "MiB per MiB of features" not in table
    runs[1000].update(data_mib=10.0, peak_mib=50.0)
    runs[2000].update(data_mib=20.0, peak_mib=60.5)
    bench.measure_memory("ci", torch.device("cpu"), (1000, 2000), steps=2)
    table = capsys.readouterr().out  # measured, but the peaks were never reset
    assert "cannot reset the high-water mark" in table and "host peak:" not in table
    runs[1000]["peak_reset"] = runs[2000]["peak_reset"] = True
    bench.measure_memory("ci", torch.device("cpu"), (1000, 2000), steps=2)
    features = bench.profile_config("ci").features
    feature_mib = 1000 * features.n_bins * features.n_frames * 4 / 2**20  # the step's notes
    table = capsys.readouterr().out
    assert f"host peak: {10.5 / feature_mib:.2f} MiB per MiB of features" in table
