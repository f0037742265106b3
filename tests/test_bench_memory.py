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


def test_a_memory_run_counts_the_notes_it_built_and_not_the_warm_up(bench):
    cfg = bench.profile_config("ci")
    run = bench.memory_run(cfg, torch.device("cpu"), n_notes=2000, steps=2)
    features = 2000 * cfg.features.n_bins * cfg.features.n_frames * 4 / bench.MIB
    assert run["peak_reset"] is sys.platform.startswith("linux")
    assert 0.9 * features <= run["data_mib"] <= run["peak_mib"]
