from __future__ import annotations

import pytest
import torch

from pitchtimbre.exercises import EXERCISES, check, comparison_table, solution, try_loss
from pitchtimbre.losses import hinge_contrastive, paper_contrastive


@pytest.fixture
def solutions_on(monkeypatch):
    monkeypatch.setenv("PITCHTIMBRE_SOLUTIONS", "1")


def test_solutions_are_behind_a_flag(monkeypatch):
    monkeypatch.delenv("PITCHTIMBRE_SOLUTIONS", raising=False)
    with pytest.raises(PermissionError, match="PITCHTIMBRE_SOLUTIONS=1"):
        solution("hinge")
    monkeypatch.setenv("PITCHTIMBRE_SOLUTIONS", "1")
    assert solution("hinge") is hinge_contrastive
    with pytest.raises(KeyError, match="exercises are"):
        solution("nope")


@pytest.mark.parametrize("name", sorted(EXERCISES))
def test_each_solution_passes_its_own_check(name, solutions_on):
    result = check(name, solution(name))
    assert result.passed, str(result)
    assert all(line.startswith("✓") for line in result.lines)


def test_every_exercise_differs_from_the_posters_loss():
    # otherwise an exercise could be 'solved' by handing in the built-in loss
    for name in EXERCISES:
        if name == "hinge":
            continue
        assert not check(name, paper_contrastive).passed, name


def test_check_explains_what_is_wrong():
    def unfinished(z1, z2, same, cfg):
        raise NotImplementedError

    assert check("hinge", unfinished).lines == [
        "not implemented yet: replace the `raise NotImplementedError`"
    ]

    def no_margin(z1, z2, same, cfg):  # forgets the max(0, .)
        return paper_contrastive(z1, z2, same, cfg)

    result = check("hinge", no_margin)
    assert not result.passed
    wrong = [line for line in result.lines if line.startswith("✗")]
    assert any("beyond the margin" in line for line in wrong)
    assert any(line.startswith("✓ same-label pairs") for line in result.lines)

    def detached(z1, z2, same, cfg):
        return torch.tensor(hinge_contrastive(z1, z2, same, cfg).item(), dtype=torch.float64)

    assert "carries no gradient" in str(check("hinge", detached))

    def crashes(z1, z2, same, cfg):
        return z1 @ z2  # wrong shapes

    assert "raised RuntimeError" in str(check("hinge", crashes))

    def per_pair(z1, z2, same, cfg):
        return torch.zeros(len(same), dtype=z1.dtype, requires_grad=True)

    assert "scalar" in str(check("hinge", per_pair))


def test_try_loss_and_table(toy_folder):
    from pitchtimbre.book import Chapter
    from pitchtimbre.config import DataConfig, ExperimentConfig, ModelConfig

    cfg = ExperimentConfig(
        profile="ci",
        data=DataConfig(source=str(toy_folder), heldout_per_family=1),
        model=ModelConfig(hidden=16, layers=2, kernel_size=3),
        exercise_steps=10,
    )
    chapter = Chapter("09_exercises", cfg, torch.device("cpu"))
    row = try_loss(chapter, None, "poster")
    assert set(row) == {"label", "metrics", "history"} and row["history"][-1]["step"] == 10

    def poisoned(z1, z2, same, cfg):
        return z1.sum() * float("nan")

    blown = try_loss(chapter, poisoned, "poisoned")
    assert set(blown) == {"label", "diverged"} and "training diverged" in blown["diverged"]
    table = comparison_table([row, blown])
    assert table.count("\n") == 3 and "| poisoned | diverged |" in table
