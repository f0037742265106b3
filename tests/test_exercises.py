from __future__ import annotations

from dataclasses import replace

import pytest
import torch

from pitchtimbre.exercises import EXERCISES, check, comparison_table, solution, try_loss
from pitchtimbre.losses import (
    hinge_contrastive,
    mean_frame_distance,
    pair_distances,
    paper_contrastive,
)


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
    same_label = next(line for line in result.lines if line.startswith("✗ same-label"))
    assert "looks like: D_11 and D_22 average over all T x T frame pairs" in same_label
    assert "leave out the T pairs t = t'" in same_label
    # on notes whose frames coincide D_11 = D_22 = 0 either way: that probe passes
    assert "✓ notes whose frames coincide" in result.lines


def _own_triplet_with_diagonal(z1, z2, same, cfg):
    own = _frame_distances(z1, z1).mean(dim=(1, 2)) + _frame_distances(z2, z2).mean(dim=(1, 2))
    d12 = _frame_distances(z1, z2).mean(dim=(1, 2))
    ranked = torch.relu(d12[same][:, None] - d12[~same][None, :] + cfg.margin).mean()
    return own.mean() + (ranked if same.any() and (~same).any() else 0)


def test_the_diagonal_mistake_is_named_in_every_exercise_with_d11():
    named = "looks like: D_11 and D_22 average over all T x T frame pairs"
    result = check("triplet", _own_triplet_with_diagonal)
    assert not result.passed and all(named in x for x in result.lines if x.startswith("✗"))
    # all but the notes whose frames coincide (D_11 = D_22 = 0 either way)
    assert [x[2:].split(":")[0] for x in result.lines if x.startswith("✗")] == [
        "a mixed batch",
        "only same-label pairs",
        "pairs at several distances",
    ]
    for name in ("squared", "cosine"):
        distance = {"squared": "squared_euclidean", "cosine": "cosine"}[name]

        def own(z1, z2, same, cfg, distance=distance):  # the poster's loss over all (t, t')
            cfg = replace(cfg, distance=distance)
            d11, d22 = (mean_frame_distance(z, z, cfg) for z in (z1, z2))
            d12 = mean_frame_distance(z1, z2, cfg)
            return (d11 + d22 + torch.where(same, d12, -d12)).mean()

        result = check(name, own)
        assert not result.passed and named in str(result), str(result)
    assert not any(named in str(m.says) for m in EXERCISES["cross_only"].mistakes)


@pytest.mark.parametrize("name", sorted(EXERCISES))
def test_labels_read_the_other_way_and_a_summed_batch_are_named(name, solutions_on):
    right = solution(name)
    for wrong, named in (
        (lambda z1, z2, same, cfg: right(z1, z2, ~same, cfg), "label is read the other way"),
        (lambda z1, z2, same, cfg: right(z1, z2, same, cfg) * len(same), "take the mean over"),
    ):
        result = check(name, wrong)
        failed = [x for x in result.lines if x.startswith("✗")]
        assert not result.passed and failed
        assert all("looks like: " in x and named in x for x in failed), str(result)


def _summed(a, b, root=torch.cdist):
    """The poster's D_ij as written, a sum over the frame pairs (t = t' adds 0)."""
    return _frame_distances(a, b, root).sum(dim=(1, 2))


def _summed_hinge(z1, z2, same, cfg):
    d12 = _summed(z1, z2)
    cross = torch.where(same, d12, torch.clamp(cfg.margin - d12, min=0))
    return (_summed(z1, z1) + _summed(z2, z2) + cross).mean()


def _summed_squared(z1, z2, same, cfg):
    def squared(a, b):
        return torch.cdist(a, b) ** 2

    d12 = _summed(z1, z2, squared)
    return (
        _summed(z1, z1, squared) + _summed(z2, z2, squared) + torch.where(same, d12, -d12)
    ).mean()


def _summed_cosine(z1, z2, same, cfg):
    def cosine(a, b):
        return 1 - torch.nn.functional.cosine_similarity(a[:, :, None], b[:, None], dim=-1)

    d12 = _summed(z1, z2, cosine)
    return (_summed(z1, z1, cosine) + _summed(z2, z2, cosine) + torch.where(same, d12, -d12)).mean()


def _summed_cross_only(z1, z2, same, cfg):
    return torch.where(same, 1.0, -1.0).mul(_summed(z1, z2)).mean()


def _summed_triplet(z1, z2, same, cfg):
    gather = (_summed(z1, z1) + _summed(z2, z2)).mean()
    d12 = _summed(z1, z2)
    pos, neg = d12[same], d12[~same]
    if len(pos) == 0 or len(neg) == 0:
        return gather
    return gather + torch.relu(pos[:, None] - neg[None, :] + cfg.margin).mean()


@pytest.mark.parametrize(
    "name, summed",
    [
        ("hinge", _summed_hinge),
        ("squared", _summed_squared),
        ("cosine", _summed_cosine),
        ("cross_only", _summed_cross_only),
        ("triplet", _summed_triplet),
    ],
)
def test_distances_summed_over_frame_pairs_are_named(name, summed):
    result = check(name, summed)
    failed = [x for x in result.lines if x.startswith("✗")]
    assert not result.passed and failed
    assert all("looks like: the distances are summed over the frame pairs" in x for x in failed), (
        str(result)
    )


@pytest.mark.parametrize("name", ["squared", "cosine"])
def test_the_euclidean_distance_of_the_given_cfg_is_named(name):
    """The checker passes a cfg whose distance is 'euclidean': using it as it comes is the
    poster's loss, not the exercise's."""
    result = check(name, paper_contrastive)
    failed = [x for x in result.lines if x.startswith("✗")]
    assert not result.passed and len(failed) == len(EXERCISES[name].probes)
    assert all("looks like: this is the Euclidean distance" in x for x in failed), str(result)
    assert "dataclasses.replace(cfg, distance=...)" in failed[0]


def test_a_backward_pass_that_raises_is_reported_not_raised():
    def edits_in_place(z1, z2, same, cfg):  # the right value, but exp's output is changed
        e = z1.exp()
        e.mul_(1.0)
        return hinge_contrastive(z1, z2, same, cfg) + 0 * e.sum()

    result = check("hinge", edits_in_place)
    failed = [x for x in result.lines if x.startswith("✗")]
    assert not result.passed and len(failed) == len(EXERCISES["hinge"].probes)
    assert all("the value is right, its backward pass raised RuntimeError" in x for x in failed)
    assert "in-place operation" in failed[0] and "anomaly detection" not in failed[0]


def test_an_unknown_exercise_lists_the_exercises():
    for call in (lambda: check("Hinge", hinge_contrastive), lambda: solution("Hinge")):
        with pytest.raises(KeyError, match=r"no exercise 'Hinge'; exercises are \['cosine'"):
            call()


def test_a_mistake_is_named_only_when_it_explains_every_probe():
    """+D_12 for every pair: the different-label probe alone looks like labels swapped, but
    the same-label probe passes, which swapped labels would not."""

    def plus_always(z1, z2, same, cfg):
        return (_d(z1, z1, True) + _d(z2, z2, True) + _d(z1, z2, False)).mean()

    result = check("hinge", plus_always)
    assert "✓ same-label pairs" in result.lines
    assert not any("looks like" in line for line in result.lines), str(result)

    def summed_combinations(z1, z2, same, cfg):  # on one probe 4 combinations, 4 pairs
        d12 = _d(z1, z2, False)
        ranked = torch.relu(d12[same][:, None] - d12[~same][None, :] + cfg.margin).sum()
        return (_d(z1, z1, True) + _d(z2, z2, True)).mean() + ranked

    result = check("triplet", summed_combinations)
    assert not result.passed and "times the batch size" not in str(result), str(result)


def test_a_triplet_without_relu_or_ranked_against_the_mean_fails():
    def ranked(z1, z2, same, cfg, relu=True, against_mean=False):
        d12 = _d(z1, z2, False)
        pos, neg = d12[same], d12[~same]
        gather = (_d(z1, z1, True) + _d(z2, z2, True)).mean()
        if len(pos) == 0 or len(neg) == 0:
            return gather
        gap = pos[:, None] - (neg.mean() if against_mean else neg[None, :]) + cfg.margin
        return gather + (torch.relu(gap) if relu else gap).mean()

    assert check("triplet", ranked).passed
    for wrong in ({"relu": False}, {"against_mean": True}):
        result = check("triplet", lambda z1, z2, same, cfg, w=wrong: ranked(z1, z2, same, cfg, **w))
        assert not result.passed and "✗ pairs at several distances" in str(result), wrong


def test_an_unrecognised_mistake_gets_the_probes_hint(solutions_on):
    right = solution("hinge")
    result = check("hinge", lambda z1, z2, same, cfg: right(z1, z2, same, cfg) + 0.5)
    assert not result.passed
    assert all("hint: " in x and "looks like" not in x for x in result.lines if x[0] == "✗")


def test_the_forms_restate_the_losses_they_stand_for():
    from pitchtimbre.exercises import _hinge_form, _poster_form

    g = torch.Generator().manual_seed(3)
    z1, z2 = (torch.randn(6, 4, 3, generator=g, dtype=torch.float64) for _ in range(2))
    same = torch.arange(6) % 3 == 0
    for distance in ("euclidean", "squared_euclidean", "cosine"):
        cfg = replace(EXERCISES["hinge"].cfg, distance=distance)
        d = pair_distances(z1, z2, cfg)
        assert torch.equal(_poster_form(*d, same, cfg), paper_contrastive(z1, z2, same, cfg))
        assert torch.equal(_hinge_form(*d, same, cfg), hinge_contrastive(z1, z2, same, cfg))


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


def test_the_comparison_table_puts_each_metric_in_its_column():
    def space(dens: float, ratio: float, pitch: float, inst: float) -> dict:
        return {"denseness": dens, "ratio": ratio, "probe": {"pitch": pitch, "instrument": inst}}

    row = {
        "label": "hinge",
        "metrics": {
            "pitch": space(0.11, 2.22, 0.33, 0.44),
            "timbre": space(0.55, 6.66, 0.77, 0.88),
        },
        "history": [{"kl_pitch": 1.0}, {"kl_pitch": 9.87}],
    }
    lines = comparison_table(
        [row, {"label": "blown", "diverged": "training diverged"}]
    ).splitlines()
    # loss, pitch dens., pitch ratio, timbre dens., timbre ratio, pitch<-z^p, instr.<-z^t,
    # pitch<-z^t, instr.<-z^p, KL pitch (last)
    assert lines[2] == "| hinge | 0.11 | 2.22 | 0.55 | 6.66 | 0.33 | 0.88 | 0.77 | 0.44 | 9.9 |"
    assert lines[3].count("|") == lines[2].count("|") and lines[3].startswith(
        "| blown | diverged |"
    )


def test_try_loss_sets_both_contrastive_weights_and_then_the_overrides(monkeypatch):
    from types import SimpleNamespace

    from pitchtimbre import experiment, training
    from pitchtimbre.config import ExperimentConfig

    trained = []
    monkeypatch.setattr(
        training,
        "trained_model",
        lambda cfg, ds, contrastive_fn, progress: (
            trained.append(cfg) or SimpleNamespace(model=None, history=[])
        ),
    )
    monkeypatch.setattr(experiment, "evaluate_model", lambda model, notes, cfg: {})
    data = SimpleNamespace(heldout=lambda: None)
    chapter = SimpleNamespace(config=ExperimentConfig(profile="ci"), dataset=lambda: data)
    try_loss(chapter, None, "weights", lam=3.0, progress=False)
    try_loss(chapter, None, "then", lam=3.0, progress=False, overrides={"loss.lambda_timbre": 7.0})
    try_loss(chapter, None, "default", progress=False)
    weights = [(c.loss.lambda_pitch, c.loss.lambda_timbre) for c in trained]
    default = chapter.config.loss
    assert weights == [(3.0, 3.0), (3.0, 7.0), (default.lambda_pitch, default.lambda_timbre)]
    assert {c.train.steps for c in trained} == {chapter.config.exercise_steps}
