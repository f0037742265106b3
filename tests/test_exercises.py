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
    monkeypatch.setenv("PITCHTIMBRE_SOLUTIONS", "0")  # deliberately off: no complaint
    with pytest.raises(PermissionError, match=r"^solutions are off: write your own"):
        solution("hinge")
    monkeypatch.setenv("PITCHTIMBRE_SOLUTIONS", "maybe")
    with pytest.raises(PermissionError, match="PITCHTIMBRE_SOLUTIONS='maybe' is not one of 1"):
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


def _note(*frames: list[float]) -> torch.Tensor:
    """One note's latent frames as a batch of one: [1, T, D], float64."""
    return torch.tensor([list(frames)], dtype=torch.float64)


# z1 = (0, 1) and z2 = (3, 3), one latent dimension: D11 = 1 (the pair t != t'), D22 = 0,
# D12 = mean(3, 3, 2, 2) = 2.5 Euclidean and mean(9, 9, 4, 4) = 6.5 squared.
ONE_D = (_note([0.0], [1.0]), _note([3.0], [3.0]))
# z1 = (e1, e2) and z2 = (e1, e1): cosine distances D11 = 1, D22 = 0, D12 = mean(0, 0, 1, 1)
TWO_D = (_note([1.0, 0.0], [0.0, 1.0]), _note([1.0, 0.0], [1.0, 0.0]))


@pytest.mark.parametrize(
    ("name", "latents", "same_value", "different_value"),
    [
        ("cross_only", ONE_D, 2.5, -2.5),  # +/- D12 only
        ("squared", ONE_D, 1 + 0 + 6.5, 1 + 0 - 6.5),
        ("cosine", TWO_D, 1 + 0 + 0.5, 1 + 0 - 0.5),
        ("hinge", ONE_D, 1 + 0 + 2.5, 1 + 0 + 0.0),  # margin 2 < D12: no push left
    ],
)
def test_reference_solutions_by_hand(name, latents, same_value, different_value, solutions_on):
    """The references grade the students' answers, so they are checked against hand-computed
    values, not against themselves."""
    fn, cfg = solution(name), EXERCISES[name].cfg  # margin 2, distance_eps 1e-12
    z1, z2 = latents
    same, different = torch.tensor([True]), torch.tensor([False])
    assert fn(z1, z2, same, cfg).item() == pytest.approx(same_value, abs=1e-5)
    assert fn(z1, z2, different, cfg).item() == pytest.approx(different_value, abs=1e-5)
    both = fn(torch.cat([z1, z1]), torch.cat([z2, z2]), torch.tensor([True, False]), cfg)
    assert both.item() == pytest.approx((same_value + different_value) / 2, abs=1e-5)
    if name == "cosine":  # blind to the latents' length
        assert fn(10 * z1, z2, same, cfg).item() == pytest.approx(same_value, abs=1e-5)


def test_the_triplet_reference_by_hand(solutions_on):
    fn, cfg = solution("triplet"), EXERCISES["triplet"].cfg  # margin 2
    near = (_note([0.0], [0.0]), _note([1.0], [1.0]))  # D11 = D22 = 0, D12 = 1
    z1, z2 = torch.cat([ONE_D[0], near[0]]), torch.cat([ONE_D[1], near[1]])
    # gather: mean(D11 + D22) = (1 + 0) / 2; rank the same pair (D12 2.5) against the
    # different one (D12 1): relu(2.5 - 1 + 2) = 3.5
    assert fn(z1, z2, torch.tensor([True, False]), cfg).item() == pytest.approx(4.0, abs=1e-5)
    # flags swapped: the same pair (D12 1) is closer, but by less than the margin 2:
    # relu(1 - 2.5 + 2) = 0.5
    assert fn(z1, z2, torch.tensor([False, True]), cfg).item() == pytest.approx(1.0, abs=1e-5)
    # no different pair: nothing to rank
    assert fn(z1, z2, torch.tensor([True, True]), cfg).item() == pytest.approx(0.5, abs=1e-5)


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


def _frame_distances(a: torch.Tensor, b: torch.Tensor, root=torch.cdist) -> torch.Tensor:
    """What a student might write: [B, T, D] x [B, S, D] -> [B, T, S], no smoothing."""
    return root(a, b)


def _d(a, b, same_note: bool, root=torch.cdist) -> torch.Tensor:
    d = _frame_distances(a, b, root)
    if not same_note:
        return d.mean(dim=(1, 2))
    t = d.shape[1]
    return (d.sum(dim=(1, 2)) - d.diagonal(dim1=1, dim2=2).sum(1)) / (t * (t - 1))


def _own_hinge(z1, z2, same, cfg, root=torch.cdist):
    d12 = _d(z1, z2, False, root)
    cross = torch.where(same, d12, torch.clamp(cfg.margin - d12, min=0))
    return (_d(z1, z1, True, root) + _d(z2, z2, True, root) + cross).mean()


def _own_triplet(z1, z2, same, cfg):
    gather = (_d(z1, z1, True) + _d(z2, z2, True)).mean()
    d12 = _d(z1, z2, False)
    pos, neg = d12[same], d12[~same]
    if len(pos) == 0 or len(neg) == 0:
        return gather
    return gather + torch.clamp(pos[:, None] - neg[None, :] + cfg.margin, min=0).mean()


def test_right_answers_with_a_plain_norm_pass():
    # the solutions smooth every distance, sqrt(d^2 + cfg.distance_eps); a right answer built
    # on torch.cdist does not, and must still pass (it failed on notes whose frames coincide)
    assert check("hinge", _own_hinge).passed, str(check("hinge", _own_hinge))
    assert check("triplet", _own_triplet).passed, str(check("triplet", _own_triplet))

    def with_diagonal(z1, z2, same, cfg):  # D_11 and D_22 over every (t, t'), t = t' included
        d12 = _frame_distances(z1, z2).mean(dim=(1, 2))
        own = _frame_distances(z1, z1).mean(dim=(1, 2)) + _frame_distances(z2, z2).mean(dim=(1, 2))
        return (own + torch.where(same, d12, torch.clamp(cfg.margin - d12, min=0))).mean()

    result = check("hinge", with_diagonal)
    assert not result.passed
    assert any("t != t'" in line for line in result.lines if line.startswith("✗ same-label"))


def test_a_root_of_a_zero_distance_gets_its_own_hint():
    def root(a, b):  # d/dx sqrt(x) is infinite at x = 0: NaN where two frames coincide,
        return ((a[:, :, None] - b[:, None]) ** 2).sum(-1).sqrt()  # as a frame with itself

    result = check("hinge", lambda z1, z2, same, cfg: _own_hinge(z1, z2, same, cfg, root))
    wrong = [line for line in result.lines if line.startswith("✗")]
    assert not result.passed and len(wrong) == len(EXERCISES["hinge"].probes)
    assert all("the value is right, the gradient is not finite" in line for line in wrong)
    assert "cfg.distance_eps" in wrong[0]


def test_try_loss_and_table(toy_folder, tmp_path, monkeypatch, capsys):
    from pitchtimbre.book import Chapter
    from pitchtimbre.config import DataConfig, ExperimentConfig, ModelConfig
    from pitchtimbre.errors import ConfigError

    cfg = ExperimentConfig(
        profile="ci",
        data=DataConfig(source=str(toy_folder), heldout_per_family=1),
        model=ModelConfig(hidden=16, layers=2, kernel_size=3),
        exercise_steps=10,
    )
    chapter = Chapter("09_exercises", cfg, torch.device("cpu"))
    monkeypatch.setenv("PITCHTIMBRE_CACHE", str(tmp_path / "cache"))  # nothing trained yet
    capsys.readouterr()
    row = try_loss(chapter, None, "poster")
    assert set(row) == {"label", "metrics", "history"} and row["history"][-1]["step"] == 10
    assert "train proposed (seed 0)" in capsys.readouterr().err  # a bar while it trains
    assert try_loss(chapter, None, "poster")["history"] == row["history"]  # now cached
    assert "train proposed" not in capsys.readouterr().err

    # any other setting through overrides: distances between samples train another model
    samples = try_loss(chapter, None, "samples", progress=False, overrides={"loss.on": "sample"})
    assert samples["history"][-1]["step"] == 10 and samples["history"] != row["history"]
    with pytest.raises(ConfigError, match=r"no field 'loss\.nope'"):
        try_loss(chapter, None, "typo", progress=False, overrides={"loss.nope": 1.0})

    def poisoned(z1, z2, same, cfg):
        return z1.sum() * float("nan")

    blown = try_loss(chapter, poisoned, "poisoned", progress=False)
    assert set(blown) == {"label", "diverged"} and "training diverged" in blown["diverged"]
    table = comparison_table([row, blown])
    assert table.count("\n") == 3 and "| poisoned | diverged |" in table
