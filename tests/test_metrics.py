from __future__ import annotations

import math

import pytest
import torch
from conftest import instruments_on_a_line

from pitchtimbre.config import EvalConfig, ModelConfig
from pitchtimbre.metrics import (
    centroids,
    chance_levels,
    denseness,
    divergence,
    encode_means,
    evaluate_latents,
    input_probes,
    knn_accuracy,
    knn_predict,
    pitch_leak_by_instrument,
    probe_by_instrument,
    space_metrics,
)
from pitchtimbre.model import PitchTimbreVAE


def test_denseness_and_divergence_by_hand():
    # label 0: one note, frames (0,0) and (2,0) -> centroid (1,0), distances 1, 1
    # label 1: two notes, frames (0,3),(0,5) and (0,4),(0,4) -> centroid (0,4), distances 1,1,0,0
    z = torch.tensor(
        [
            [[0.0, 0.0], [2.0, 0.0]],
            [[0.0, 3.0], [0.0, 5.0]],
            [[0.0, 4.0], [0.0, 4.0]],
        ]
    )
    labels = torch.tensor([7, 9, 9])
    eta, values = centroids(z, labels)
    assert values.tolist() == [7, 9]
    assert torch.allclose(eta, torch.tensor([[1.0, 0.0], [0.0, 4.0]], dtype=torch.float64))
    # 1/M sum_m 1/(T N_m) sum ||z - eta_m||: (1 + (1+1+0+0)/4) / 2
    assert denseness(z, labels) == pytest.approx((1.0 + 0.5) / 2)
    assert divergence(z, labels) == pytest.approx(math.sqrt(17))


def test_divergence_averages_all_label_pairs():
    z = torch.tensor([[[0.0]], [[3.0]], [[7.0]]])
    labels = torch.tensor([0, 1, 2])
    # pairs: 3, 7, 4 -> 2/(M(M-1)) * 14 with M = 3
    assert divergence(z, labels) == pytest.approx(14 / 3)
    assert denseness(z, labels) == 0.0


def test_scale_moves_both_metrics_but_not_their_ratio():
    g = torch.Generator().manual_seed(0)
    z = torch.randn(40, 9, 4, generator=g)
    labels = torch.arange(40) % 5
    pitch, inst = labels, torch.arange(40) // 5
    a = space_metrics(z, labels, pitch, inst, k=3)
    b = space_metrics(3 * z, labels, pitch, inst, k=3)
    assert b["denseness"] == pytest.approx(3 * a["denseness"])
    assert b["divergence"] == pytest.approx(3 * a["divergence"])
    assert b["ratio"] == pytest.approx(a["ratio"])
    assert b["probe"] == a["probe"]
    assert a["ratio"] == pytest.approx(a["divergence"] / a["denseness"])  # divergence on top


def test_a_space_with_every_label_on_one_point_has_an_infinite_ratio():
    # each pitch's notes sit on one point: denseness 0, so no finite ratio (not a division error)
    z = torch.tensor([[[0.0, 0.0]], [[0.0, 0.0]], [[3.0, 4.0]], [[3.0, 4.0]]])
    labels = torch.tensor([0, 0, 1, 1])
    out = space_metrics(z, labels, labels, torch.tensor([0, 1, 0, 1]), k=1)
    assert out["denseness"] == 0.0 and out["divergence"] == pytest.approx(5.0)
    assert out["ratio"] == math.inf


def test_the_poster_tables_ratio_is_divergence_over_denseness():
    from pitchtimbre.experiment import poster_table

    vanilla = poster_table()["vanilla"]
    assert vanilla["pitch"]["ratio"] == pytest.approx(2.279 / 3.334)
    assert vanilla["timbre"]["ratio"] == pytest.approx(1.541 / 3.640)


def test_the_probes_read_a_notes_frames_averaged():
    # the label shows only in the mean over frames: each frame alone is +/- noise around it
    labels = torch.arange(12) % 3
    g = torch.Generator().manual_seed(0)
    noise = 20 * torch.randn(12, 1, 2, generator=g)
    z = torch.cat([noise, -noise], dim=1) + labels[:, None, None].float()  # frames t, -t
    instrument = torch.arange(12) // 3
    m = space_metrics(z, labels, labels, instrument, k=1)
    assert m["probe"]["pitch"] == 1.0
    first_frame_only = space_metrics(z[:, :1], labels, labels, instrument, k=1)
    assert first_frame_only["probe"]["pitch"] < 1.0


def test_knn_probe_only_uses_other_groups():
    # pitch in x, instrument in y: notes of one instrument sit together, so plain kNN on
    # pitch would vote with the instrument's own notes. Leave-instrument-out must still work.
    pitch = torch.tensor([0, 1, 0, 1, 0, 1])
    inst = torch.tensor([0, 0, 1, 1, 2, 2])
    x = torch.stack([pitch.double() * 1.0, inst.double() * 10.0], 1)
    assert knn_accuracy(x, pitch, exclude_group=inst, k=1) == 1.0
    # the nearest other-instrument note of a pitch-0 note also has pitch 0, but if we ask for
    # the instrument from other pitches, the nearest note of another pitch is of the same
    # instrument: the probe identifies instruments perfectly here
    assert knn_accuracy(x, inst, exclude_group=pitch, k=1) == 1.0
    # a space that only knows the instrument cannot predict pitch from other instruments
    y = torch.stack([torch.zeros(6, dtype=torch.float64), inst.double()], 1)
    assert knn_accuracy(y, pitch, exclude_group=inst, k=1) <= 0.5


def test_knn_votes_and_ties():
    x = torch.tensor([[0.0], [1.0], [1.1], [5.0], [5.1], [9.0]])
    target = torch.tensor([0, 0, 1, 1, 1, 0])
    group = torch.arange(6)  # leave-one-out
    # k=3 majority: notes 3 and 4 right; 0 (sees 0,1,1), 1 (1,0,1), 2 (0,0,1), 5 (1,1,1) wrong
    assert knn_accuracy(x, target, group, k=3) == pytest.approx(2 / 6)
    # a 1-1 tie goes to the closer neighbour's label, not to the smaller label value
    x = torch.tensor([[0.0], [1.0], [-1.5]])
    target = torch.tensor([1, 1, 0])
    assert knn_accuracy(x, target, torch.arange(3), k=2) == pytest.approx(2 / 3)


def test_knn_predict_returns_the_labels_themselves():
    x = torch.tensor([[0.0], [0.1], [5.0], [5.1]])
    target = torch.tensor([17, 17, 40, 40])  # label values, not 0..n-1
    assert knn_predict(x, target, torch.arange(4), k=1).tolist() == [17, 17, 40, 40]
    # notes 0 and 1 share a group, so neither may vote for the other: both get 40
    assert knn_predict(x, target, torch.tensor([0, 0, 1, 2]), k=1).tolist() == [40, 40, 40, 40]


def _knn_by_hand(x, target, group, k):
    """Leave-group-out kNN, one note at a time, straight from the definition."""
    out = []
    for i in range(len(x)):
        others = [j for j in range(len(x)) if group[j] != group[i]]
        others.sort(key=lambda j: (float((x[i] - x[j]).norm()), j))
        votes: dict[int, tuple[int, int]] = {}
        for rank, j in enumerate(others[:k], start=1):
            n_votes, ranks = votes.get(int(target[j]), (0, 0))
            votes[int(target[j])] = (n_votes + 1, ranks + rank)
        out.append(max(votes, key=lambda v: (votes[v][0], -votes[v][1])))
    return out


def test_knn_in_blocks_of_rows_gives_the_whole_matrix_answer_and_holds_only_a_block(
    monkeypatch,
):
    g = torch.Generator().manual_seed(3)
    x = torch.randn(23, 4, generator=g, dtype=torch.float64)
    target = torch.randint(0, 4, (23,), generator=g) + 60
    group = torch.randint(0, 5, (23,), generator=g)
    expected = _knn_by_hand(x, target, group, k=3)
    rows_seen = []
    cdist = torch.cdist

    def counting_cdist(a, b, **kwargs):
        rows_seen.append(len(a))
        return cdist(a, b, **kwargs)

    monkeypatch.setattr(torch, "cdist", counting_cdist)
    for rows in (1, 5, 23, 100):  # 5 leaves a short last block
        rows_seen.clear()
        got = knn_predict(x, target, group, k=3, block_bytes=rows * 8 * 23)
        assert got.tolist() == expected, rows
        assert max(rows_seen) == min(rows, 23) and sum(rows_seen) == 23


def test_encode_means_gives_the_central_frames_and_leaves_the_mode_alone():
    torch.manual_seed(0)
    model = PitchTimbreVAE(12, ModelConfig(hidden=8, layers=2, kernel_size=3))
    x = torch.randn(5, 12, 16)
    zp, zt = encode_means(model, x, frames=9, batch=2)
    assert zp.shape == (5, 9, 16) and zt.shape == (5, 9, 16)
    model.eval()
    assert torch.allclose(zp, model.encode(x).pitch_mean[:, 3:12], atol=1e-6)
    model.train()
    encode_means(model, x)
    assert model.training, "evaluating a model in training must not switch it to eval mode"


def test_evaluate_latents_labels_the_pitch_space_by_pitch_and_the_timbre_space_by_instrument():
    torch.manual_seed(0)
    model = PitchTimbreVAE(12, ModelConfig(hidden=8, layers=2, kernel_size=3))
    x = torch.randn(12, 12, 16)
    pitch = torch.arange(3).repeat(4) + 60  # 4 instruments x 3 pitches
    instrument = torch.arange(4).repeat_interleave(3)
    cfg = EvalConfig(frames=5, knn_k=3)
    res = evaluate_latents(model, x, pitch, instrument, cfg)
    zp, zt = encode_means(model, x, frames=5)  # the 5 central frames, not all 16
    assert res["pitch"] == space_metrics(zp, pitch, pitch, instrument, k=3)
    assert res["timbre"] == space_metrics(zt, instrument, pitch, instrument, k=3)
    # the labels matter: swapped, the numbers change
    assert res["pitch"]["denseness"] != denseness(zp, instrument)
    assert res["timbre"]["denseness"] != denseness(zt, pitch)
    assert res["pitch"]["denseness"] != denseness(encode_means(model, x)[0], pitch)


def test_input_probes_read_only_the_central_frames():
    # 4 instruments x 3 pitches; the central 3 of 7 frames say pitch in bin 0 and the
    # instrument in bin 1, the outer frames are noise that would confuse both probes
    pitch = torch.arange(3).repeat(4)
    inst = torch.arange(4).repeat_interleave(3)
    g = torch.Generator().manual_seed(0)
    x = 50 * torch.randn(12, 2, 7, generator=g)
    x[:, 0, 2:5] = pitch[:, None].float()
    x[:, 1, 2:5] = 10 * inst[:, None].float()
    x[:, :, 2:5] += 0.01 * torch.randn(12, 2, 3, generator=g)
    probes = input_probes(x, pitch, inst, EvalConfig(frames=3, knn_k=1))
    assert probes == {"pitch": 1.0, "instrument": 1.0}
    noisy = input_probes(x, pitch, inst, EvalConfig(frames=7, knn_k=1))
    assert noisy["pitch"] < 1.0 and noisy["instrument"] < 1.0


def test_probe_by_instrument_names_each_instruments_score_and_its_confusion():
    x, pitch, inst = instruments_on_a_line()
    # instrument 2 at pitch p: the nearest note of another pitch is instrument 1 at p + 1
    # (0.09 away) except at the top pitch; instrument 1 likewise meets instrument 2 at p - 1
    assert probe_by_instrument(x, pitch, inst, k=1) == {
        0: (1.0, None),
        1: (pytest.approx(1 / 3), 2),
        2: (pytest.approx(1 / 3), 1),
    }


def test_pitch_leak_by_instrument_gives_each_instruments_exact_share_and_mean_error():
    x, pitch, inst = instruments_on_a_line()
    # pitch from other instruments: instruments 1 and 2 sit 0.01 apart at every pitch, so
    # each reads the other's pitch exactly; instrument 0's nearest other note is always
    # instrument 1 at pitch 0, so it reads pitch 0: right once, off by 1 and 2 otherwise
    assert pitch_leak_by_instrument(x, pitch, inst, k=1) == {
        0: (pytest.approx(1 / 3), pytest.approx(1.0)),
        1: (1.0, 0.0),
        2: (1.0, 0.0),
    }


def test_chance_levels_of_a_random_guess():
    # 25 pitches, equally often: exact 1/25, mean |error| (n^2 - 1) / (3n) = 8.32 semitones
    exact, error = chance_levels(torch.arange(48, 73).repeat(3))
    assert exact == pytest.approx(1 / 25) and error == pytest.approx(624 / 75)
    # uneven labels: 0 three times, 10 once -> exact 9/16 + 1/16, error 2 * (3/4)(1/4) * 10
    exact, error = chance_levels(torch.tensor([0, 0, 0, 10]))
    assert exact == pytest.approx(10 / 16) and error == pytest.approx(3.75)


def test_knn_probe_names_latents_that_are_not_finite():
    x = torch.randn(6, 3)
    x[2, 1] = float("nan")
    with pytest.raises(ValueError, match="NaN or inf"):
        knn_predict(x, torch.arange(6) % 2, torch.arange(6) % 3)
