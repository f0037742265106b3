from __future__ import annotations

from collections import Counter

import pytest
import torch

from pitchtimbre.config import DataConfig, FeatureConfig, PairConfig
from pitchtimbre.data import PairSampler, load_dataset, split_instruments
from pitchtimbre.data.pairs import kind_counts
from pitchtimbre.errors import ConfigError


def test_split_is_stratified_seeded_and_keeps_a_training_instrument_per_family():
    families = {f"{fam}_{i}": fam for fam in ("a", "b", "c") for i in range(5)}
    families["lonely_0"] = "lonely"
    held = split_instruments(families, per_family=2, seed=3)
    per_family = Counter(families[i] for i in held)
    assert per_family == {"a": 2, "b": 2, "c": 2}  # the lonely family keeps its only instrument
    assert split_instruments(dict(reversed(list(families.items()))), 2, 3) == held
    assert any(split_instruments(families, 2, s) != held for s in range(1, 6))
    # asked for more than the family has: all but one are held out
    pair = split_instruments({"x1": "x", "x2": "x"}, per_family=5, seed=0)
    assert len(pair) == 1 and pair < {"x1", "x2"}


def test_kind_counts_follow_the_proportions():
    assert kind_counts(64, (0.25, 0.25, 0.25, 0.25)) == [16, 16, 16, 16]
    assert kind_counts(10, (1, 1, 1, 0)) == [4, 3, 3, 0]
    assert kind_counts(7, (0.5, 0.2, 0.2, 0.1)) == [4, 1, 1, 1]
    assert kind_counts(10, (0, 0, 0, 1)) == [0, 0, 0, 10]


def _labels():
    # 4 instruments x 5 pitches x 3 velocities
    inst, pitch = torch.meshgrid(torch.arange(4), torch.arange(60, 65), indexing="ij")
    inst = inst.flatten().repeat_interleave(3)
    pitch = pitch.flatten().repeat_interleave(3)
    return pitch, inst


def test_pairs_have_the_right_kind_and_flags():
    pitch, inst = _labels()
    sampler = PairSampler(pitch, inst, PairConfig(batch_size=400), seed=0)
    b = sampler.sample()
    assert len(b.first) == 400
    assert torch.equal(b.same_pitch, pitch[b.first] == pitch[b.second])
    assert torch.equal(b.same_timbre, inst[b.first] == inst[b.second])
    expected = {0: (True, True), 1: (True, False), 2: (False, True), 3: (False, False)}
    for k, (sp, st) in expected.items():
        sel = b.kind == k
        assert int(sel.sum()) == 100
        assert bool((b.same_pitch[sel] == sp).all()) and bool((b.same_timbre[sel] == st).all())
    assert bool((b.first[b.kind == 0] != b.second[b.kind == 0]).all())  # another velocity


@pytest.mark.parametrize(
    ("kind", "anchor"),
    [
        (1, 0),  # same pitch, another instrument; the anchor's block opens its pitch group
        (1, 37),  # instrument 2, pitch 62: its block sits inside the group
        (2, 0),  # same instrument, another pitch
        (2, 37),
    ],
)
def test_pairs_cover_their_candidates_uniformly(kind, anchor):
    pitch, inst = _labels()
    proportions = tuple(float(k == kind) for k in range(4))
    sampler = PairSampler(pitch, inst, PairConfig(batch_size=64, proportions=proportions), seed=1)
    partners = Counter()
    for _ in range(2000):
        b = sampler.sample()
        partners.update(b.second[b.first == anchor].tolist())
    same_pitch = kind == 1
    candidates = {
        i
        for i in range(60)
        if (pitch[i] == pitch[anchor]) == same_pitch and (inst[i] == inst[anchor]) != same_pitch
    }
    assert set(partners) == candidates  # 9 for kind 1, 12 for kind 2
    mean = sum(partners.values()) / len(candidates)
    assert mean > 150  # about 2,100 draws of this anchor: each count is within ~4 sigma below
    assert all(abs(c - mean) < 0.3 * mean for c in partners.values()), partners


def test_sampler_is_seeded_and_resumable():
    pitch, inst = _labels()

    def first_batch(seed: int):
        return PairSampler(pitch, inst, PairConfig(), seed=seed).sample()

    a, again, other = first_batch(5), first_batch(5), first_batch(6)
    assert torch.equal(a.first, again.first) and torch.equal(a.second, again.second)
    assert not torch.equal(a.first, other.first)  # each training seed draws its own pairs
    a = PairSampler(pitch, inst, PairConfig(), seed=5)
    b = PairSampler(pitch, inst, PairConfig(), seed=5)
    a.sample()
    state = a.state_dict()
    next_a = a.sample()
    b.load_state_dict(state)
    next_b = b.sample()
    assert torch.equal(next_a.first, next_b.first) and torch.equal(next_a.second, next_b.second)


def test_drawing_several_batches_at_once_hands_them_out_one_by_one():
    pitch, inst = _labels()
    cfg = PairConfig(batch_size=40, draw_batches=3)
    sampler = PairSampler(pitch, inst, cfg, seed=2)
    calls = []
    real_draw = sampler._draw
    sampler._draw = lambda n: calls.append(n) or real_draw(n)  # type: ignore[method-assign]
    batches = [sampler.sample() for _ in range(7)]
    assert calls == [3, 3, 3]  # one pass for batches 1-3, one for 4-6, one for 7
    for b in batches:  # each batch is a whole batch, kinds in order, flags right
        assert torch.bincount(b.kind, minlength=4).tolist() == [10, 10, 10, 10]
        assert torch.equal(b.same_pitch, pitch[b.first] == pitch[b.second])
        assert torch.equal(b.same_timbre, inst[b.first] == inst[b.second])
    assert not torch.equal(batches[0].first, batches[1].first)  # not one batch three times
    # the same generator draws other pairs one batch at a time than three at a time
    one_by_one = PairSampler(pitch, inst, PairConfig(batch_size=40), seed=2)
    assert not torch.equal(one_by_one.sample().first, batches[0].first)
    with pytest.raises(ConfigError, match="draw_batches"):
        PairConfig(draw_batches=0)


@pytest.mark.parametrize("handed_out", [0, 1, 2, 3, 4])
def test_a_sampler_resumes_inside_a_draw(handed_out):
    pitch, inst = _labels()
    cfg = PairConfig(batch_size=40, draw_batches=3)
    a = PairSampler(pitch, inst, cfg, seed=4)
    for _ in range(handed_out):
        a.sample()
    state = a.state_dict()
    assert state["position"] == handed_out % 3
    b = PairSampler(pitch, inst, cfg, seed=99)  # another seed: everything comes from the state
    b.load_state_dict(state)
    for _ in range(5):
        x, y = a.sample(), b.sample()
        assert torch.equal(x.first, y.first) and torch.equal(x.second, y.second)
        assert torch.equal(x.kind, y.kind)
    with pytest.raises(ValueError, match="position 3 is outside a draw of 3 batches"):
        b.load_state_dict({**state, "position": 3})


def test_uneven_proportions_give_each_kind_its_share():
    pitch, inst = _labels()
    cfg = PairConfig(batch_size=50, proportions=(0.5, 0.2, 0.2, 0.1))
    b = PairSampler(pitch, inst, cfg, seed=0).sample()
    assert torch.bincount(b.kind, minlength=4).tolist() == [25, 10, 10, 5]
    both = b.same_pitch.long() * 2 + b.same_timbre.long()  # 3 = kind 0, ..., 0 = kind 3
    assert torch.equal(both, 3 - b.kind)


def test_impossible_kind_is_a_clear_error():
    pitch = torch.tensor([60, 61, 60, 61])
    inst = torch.tensor([0, 0, 1, 1])  # one velocity: no 'same pitch, same instrument' pairs
    with pytest.raises(
        ConfigError,
        match=r"pairs\.proportions: the data has no 'same pitch, same instrument' pairs",
    ):
        PairSampler(pitch, inst, PairConfig())
    PairSampler(pitch, inst, PairConfig(proportions=(0, 1, 1, 1))).sample()


def test_the_training_split_holds_no_heldout_instrument_and_the_sampler_draws_each_of_its(
    toy_folder,
):
    """The split itself; that the trainer reads nothing else is
    test_training.py::test_heldout_instruments_never_reach_the_trainer."""
    ds = load_dataset(
        DataConfig(source=str(toy_folder), heldout_per_family=1), FeatureConfig(), progress=False
    )
    held = set(ds.instrument[~ds.is_train].tolist())
    assert len(held) == 2
    train = ds.train()
    assert set(train.instrument.tolist()) == set(ds.instrument[ds.is_train].tolist())
    assert not set(train.instrument.tolist()) & held
    sampler = PairSampler(train.pitch, train.instrument, PairConfig(batch_size=64), seed=0)
    seen = set()
    for _ in range(200):
        b = sampler.sample()
        seen |= set(train.instrument[b.first].tolist()) | set(train.instrument[b.second].tolist())
    assert seen == set(train.instrument.tolist())


def test_all_heldout_without_training_statistics_is_refused(toy_folder):
    data = DataConfig(source=str(toy_folder))
    with pytest.raises(ConfigError, match=r"all_heldout=True\) needs stats"):
        load_dataset(data, FeatureConfig(), progress=False, all_heldout=True)
    evaluated = load_dataset(
        data, FeatureConfig(), progress=False, all_heldout=True, stats=(0.0, 1.0)
    )
    assert not bool(evaluated.is_train.any())
    assert torch.isfinite(evaluated.features).all()
