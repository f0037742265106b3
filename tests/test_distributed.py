"""DistributedDataParallel on the CPU: two processes with the gloo backend, started by torchrun
(python -m torch.distributed.run), as a user would on several GPUs."""

from __future__ import annotations

import json
import socket
import subprocess
import sys
import textwrap

import pytest
import torch
from conftest import TOY_INSTRUMENTS, write_nsynth_folder

SCRIPT = textwrap.dedent(
    """
    import json, sys, torch
    from pitchtimbre import distributed, training
    from pitchtimbre.config import DataConfig, ExperimentConfig, ModelConfig, PairConfig, TrainConfig
    from pitchtimbre.data import load_dataset

    source, out = sys.argv[1], sys.argv[2]
    cfg = ExperimentConfig(
        profile="ci",
        data=DataConfig(source=source, heldout_per_family=1),
        model=ModelConfig(hidden=16, layers=2, kernel_size=3),
        pairs=PairConfig(batch_size=16),
        train=TrainConfig(steps=12, log_every=4, checkpoint_every=8),
    )
    with distributed.main_first():
        ds = load_dataset(cfg.data, cfg.features, progress=False)
    first = {}
    real = training.PairSampler.sample
    def spy(self):
        batch = real(self)
        first.setdefault("pairs", (batch.first.tolist(), batch.second.tolist()))
        return batch
    training.PairSampler.sample = spy
    local = []  # this process's own loss at every step, before any averaging
    real_loss = training.pair_loss
    def loss_spy(*args, **kwargs):
        terms = real_loss(*args, **kwargs)
        local.append(float(terms.total.detach()))
        return terms
    training.pair_loss = loss_spy
    result = training.train_model(cfg, ds, out + "/run", progress=False)
    rank = distributed.rank()
    torch.save({k: v.detach() for k, v in result.model.state_dict().items()}, f"{out}/weights{rank}.pt")
    json.dump({"world": distributed.world_size(), "pairs": first["pairs"], "history": result.history,
               "local_total": local}, open(f"{out}/rank{rank}.json", "w"))
    """
)


def free_port() -> str:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return str(s.getsockname()[1])


def torchrun(*args: str, succeed: bool = True) -> subprocess.CompletedProcess:
    """Two processes under torchrun (its module form), on a free port."""
    cmd = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--nproc_per_node",
        "2",
        "--master_port",
        free_port(),
    ]
    proc = subprocess.run([*cmd, *args], capture_output=True, text=True, check=False, timeout=600)
    assert (proc.returncode == 0) == succeed, proc.stderr[-3000:]
    return proc


def test_two_processes_train_one_model_in_step(tmp_path):
    source = write_nsynth_folder(tmp_path / "toy", TOY_INSTRUMENTS)
    script = tmp_path / "ddp_train.py"
    script.write_text(SCRIPT)
    torchrun(str(script), str(source), str(tmp_path))
    ranks = [json.loads((tmp_path / f"rank{r}.json").read_text()) for r in (0, 1)]
    assert [r["world"] for r in ranks] == [2, 2]
    # each process samples its own share of the batch: 8 of the 16 pairs, different ones
    assert len(ranks[0]["pairs"][0]) == 8 and ranks[0]["pairs"] != ranks[1]["pairs"]
    # DDP keeps the replicas identical, and the logged losses are the mean over both
    w0, w1 = (torch.load(tmp_path / f"weights{r}.pt", weights_only=True) for r in (0, 1))
    assert all(torch.equal(w0[k], w1[k]) for k in w0)

    def losses(history):
        return [{k: v for k, v in h.items() if k != "seconds"} for h in history]

    assert losses(ranks[0]["history"]) == losses(ranks[1]["history"])
    for entry in ranks[0]["history"]:  # logged every 4 steps
        window = slice(entry["step"] - 4, entry["step"])
        own = [sum(r["local_total"][window]) / 4 for r in ranks]
        assert own[0] != pytest.approx(own[1], rel=1e-3)  # so rank 0's alone would not do
        assert entry["total"] == pytest.approx((own[0] + own[1]) / 2, rel=1e-5)
    state = torch.load(tmp_path / "run" / "checkpoint.pt", weights_only=True)
    assert state["world_size"] == 2 and state["complete"] and state["step"] == 12
    assert len(state["sampler_rng"]) == 2  # both processes' generators, for an exact resume
    assert all(torch.equal(state["model"][k], w0[k]) for k in w0)


def test_reproduce_under_torchrun(tmp_path):
    source = write_nsynth_folder(tmp_path / "toy", TOY_INSTRUMENTS)
    proc = torchrun(
        "-m",
        "pitchtimbre",
        "reproduce",
        "--profile",
        "ci",
        "--source",
        str(source),
        "--steps",
        "10",
        "--seeds",
        "1",
        "--quiet",
        "--out",
        str(tmp_path / "out"),
    )
    assert proc.stdout.count("Poster's four directions") == 1  # rank 0 alone reports
    results = json.loads((tmp_path / "out" / "results.json").read_text())
    for name in ("vanilla", "proposed"):
        state = torch.load(results["checkpoints"][name][0], weights_only=True)
        assert state["world_size"] == 2 and state["complete"]


FAILING_FIRST = textwrap.dedent(
    """
    from pitchtimbre import distributed
    from pitchtimbre.errors import DataError

    distributed.init("cpu")
    with distributed.main_first():
        if distributed.is_main():
            raise DataError("examples.json: missing")
    print("rank", distributed.rank(), "went on")
    """
)


def test_a_failure_on_rank_0_stops_the_others_instead_of_hanging(tmp_path):
    script = tmp_path / "failing_first.py"
    script.write_text(FAILING_FIRST)
    proc = torchrun(str(script), succeed=False)  # without the broadcast rank 1 waits until killed
    assert "rank 0 failed, so rank 1 stops too: DataError: examples.json: missing" in proc.stderr
    assert "went on" not in proc.stdout


SLOW_FIRST = textwrap.dedent(
    """
    import sys
    import time
    from datetime import timedelta

    import torch.distributed as dist
    from pitchtimbre import distributed

    dist.init_process_group("gloo", timeout=timedelta(seconds=3))  # as NCCL's, only shorter
    with distributed.main_first():
        if distributed.is_main():
            time.sleep(8)  # a data stage longer than the group's timeout
    sys.stdout.write(f"rank {distributed.rank()} went on\\n")  # one write: they leave together
    """
)


def test_the_others_wait_for_a_data_stage_longer_than_the_groups_timeout(tmp_path):
    script = tmp_path / "slow_first.py"
    script.write_text(SLOW_FIRST)
    proc = torchrun(str(script))
    assert sorted(proc.stdout.split("\n")[:-1]) == ["rank 0 went on", "rank 1 went on"]


def test_torchrun_on_an_accelerator_gloo_cannot_serve_trains_on_the_cpu(monkeypatch, caplog):
    from pitchtimbre import distributed

    monkeypatch.setattr(distributed, "active", lambda: True)
    monkeypatch.setattr(distributed, "_warned_not_cpu", False)
    monkeypatch.setenv("LOCAL_RANK", "1")
    main = {"is": False}
    monkeypatch.setattr(distributed, "is_main", lambda: main["is"])
    with caplog.at_level("WARNING", logger="pitchtimbre.distributed"):
        assert distributed.local_device(torch.device("mps")) == torch.device("cpu")
        assert not caplog.text  # rank 1 says nothing: rank 0 speaks for every process
        main["is"] = True
        for _ in range(2):
            assert distributed.local_device(torch.device("mps")) == torch.device("cpu")
    assert caplog.text.count("train on the CPU, not mps") == 1  # once, not per model
    assert distributed.local_device(torch.device("cuda")) == torch.device("cuda", 1)
    assert distributed.local_device(torch.device("cpu")) == torch.device("cpu")
