from __future__ import annotations

import dataclasses
import math

import pytest
import torch

from pitchtimbre.config import LossConfig, ModelConfig
from pitchtimbre.errors import ConfigError
from pitchtimbre.losses import (
    CONTRASTIVE_LOSSES,
    DISTANCES,
    cosine_distance,
    euclidean,
    full_precision,
    gaussian_nll,
    hinge_contrastive,
    kl_to_standard_normal,
    pair_distances,
    pair_loss,
    paper_contrastive,
    register_contrastive,
    squared_euclidean,
)
from pitchtimbre.model import FrameEncoder, PitchTimbreVAE, reparameterise
from pitchtimbre.toy import boundedness_demo

CFG = LossConfig()


def test_distances_by_hand():
    a = torch.tensor([[[0.0, 0.0], [3.0, 4.0]]])
    b = torch.tensor([[[0.0, 0.0]]])
    assert torch.allclose(euclidean(a, b, 0.0), torch.tensor([[[0.0], [5.0]]]))
    assert torch.allclose(squared_euclidean(a, b), torch.tensor([[[0.0], [25.0]]]))
    c = torch.tensor([[[1.0, 0.0], [0.0, 2.0]]])
    assert torch.allclose(
        cosine_distance(c, c), torch.tensor([[[0.0, 1.0], [1.0, 0.0]]]), atol=1e-6
    )


def test_distances_match_the_broadcast_difference_with_gradients():
    """The cdist-based distances agree with the textbook sum over coordinate differences."""
    g = torch.Generator().manual_seed(3)
    a = torch.randn(3, 7, 4, generator=g, dtype=torch.float64, requires_grad=True)
    b = torch.randn(3, 5, 4, generator=g, dtype=torch.float64, requires_grad=True)
    textbook = (a.unsqueeze(2) - b.unsqueeze(1)).pow(2).sum(-1)
    for ours, reference in [
        (squared_euclidean(a, b), textbook),
        (euclidean(a, b, 1e-3), (textbook + 1e-3).sqrt()),
        (euclidean(a, b, 0.0), textbook.sqrt()),
    ]:
        assert ours.shape == (3, 7, 5)
        assert torch.allclose(ours, reference, atol=1e-12)
        weights = torch.rand(ours.shape, generator=g, dtype=torch.float64)
        got = torch.autograd.grad((ours * weights).sum(), (a, b), retain_graph=True)
        want = torch.autograd.grad((reference * weights).sum(), (a, b), retain_graph=True)
        for x, y in zip(got, want, strict=True):
            assert torch.allclose(x, y, atol=1e-10)


def test_zero_distance_gradient_is_finite_without_eps():
    z = torch.randn(2, 4, 3).requires_grad_()
    euclidean(z, z, 0.0).sum().backward()  # the diagonal t = t' is an exact zero
    assert torch.isfinite(z.grad).all()


def test_contrastive_terms_by_hand():
    # one pair, T = 2 frames, D = 1
    z1 = torch.tensor([[[0.0], [1.0]]])
    z2 = torch.tensor([[[3.0], [3.0]]])
    cfg = LossConfig(distance_eps=0.0)
    d11, d22, d12 = pair_distances(z1, z2, cfg)
    assert d11.item() == pytest.approx(1.0)  # the pair t != t' only
    assert d22.item() == pytest.approx(0.0)
    assert d12.item() == pytest.approx(2.5)  # mean of 3, 3, 2, 2
    same, diff = torch.tensor([True]), torch.tensor([False])
    assert paper_contrastive(z1, z2, same, cfg).item() == pytest.approx(1 + 0 + 2.5)
    assert paper_contrastive(z1, z2, diff, cfg).item() == pytest.approx(1 + 0 - 2.5)
    hinge = LossConfig(distance_eps=0.0, margin=5.0)
    assert hinge_contrastive(z1, z2, diff, hinge).item() == pytest.approx(1 + 0 + (5 - 2.5))
    far = LossConfig(distance_eps=0.0, margin=2.0)
    assert hinge_contrastive(z1, z2, diff, far).item() == pytest.approx(
        1.0
    )  # past the margin: no push
    # a batch is averaged over its pairs, not summed: lambda's scale depends on it
    both = torch.tensor([True, False])
    pair_of_pairs = paper_contrastive(torch.cat([z1, z1]), torch.cat([z2, z2]), both, cfg)
    assert pair_of_pairs.item() == pytest.approx((3.5 + -1.5) / 2)


@pytest.mark.parametrize("loss_fn", [paper_contrastive, hinge_contrastive])
def test_same_pairs_are_pulled_and_different_pairs_pushed(loss_fn):
    # notes whose frames already coincide (D11 = D22 = 0), so only the cross term acts
    g = torch.Generator().manual_seed(0)
    z1 = torch.randn(8, 1, 3, generator=g).expand(8, 5, 3).contiguous()
    z2 = torch.randn(8, 1, 3, generator=g).expand(8, 5, 3).contiguous()
    same = torch.tensor([True, False] * 4)
    a, b = z1.clone().requires_grad_(), z2.clone().requires_grad_()
    loss_fn(a, b, same, CFG).backward()
    with torch.no_grad():
        a2, b2 = a - 0.05 * a.grad, b - 0.05 * b.grad
    before = pair_distances(z1, z2, CFG)[2]
    after = pair_distances(a2, b2, CFG)[2]
    assert bool((after[same] < before[same]).all()), "same-label pairs must come closer"
    assert bool((after[~same] > before[~same]).all()), "different-label pairs must move apart"


def test_a_notes_frames_are_gathered():
    g = torch.Generator().manual_seed(1)
    z1, z2 = torch.randn(6, 5, 3, generator=g), torch.randn(6, 5, 3, generator=g)
    same = torch.tensor([True, False] * 3)
    a, b = z1.clone().requires_grad_(), z2.clone().requires_grad_()
    paper_contrastive(a, b, same, CFG).backward()
    with torch.no_grad():
        after = pair_distances(a - 0.05 * a.grad, b - 0.05 * b.grad, CFG)
    before = pair_distances(z1, z2, CFG)
    assert bool((after[0] < before[0]).all()) and bool((after[1] < before[1]).all())


@pytest.mark.parametrize("eps", [CFG.distance_eps, 0.0])
def test_zero_distance_has_a_finite_gradient(eps):
    """Every distance an exact zero, t = t' and t != t' alike, with the smoothing and without
    (a sqrt of the summed squares would give NaN here without it)."""
    z = torch.zeros(2, 4, 3, requires_grad=True)
    cfg = dataclasses.replace(CFG, distance_eps=eps)
    paper_contrastive(z, z.clone(), torch.tensor([True, False]), cfg).backward()
    assert torch.isfinite(z.grad).all()


@pytest.mark.parametrize("distance", ["euclidean", "cosine"])
def test_distances_stay_float32_under_bf16_autocast(distance, monkeypatch):
    """Large latents a small distance apart: bf16 would round the distance away. The guard in
    ``mean_frame_distance`` turns autocast off around the distance (CUDA's autocast would
    lower cdist too; CPU's lowers only the cosine distance's matrix product, so the values
    below tell for cosine only, the spy for both)."""
    cfg = LossConfig(distance=distance)
    inside = []
    real = DISTANCES[distance]

    def spy(a, b, eps):
        inside.append((a.dtype, b.dtype, torch.is_autocast_enabled("cpu")))
        return real(a, b, eps)

    monkeypatch.setitem(DISTANCES, distance, spy)
    torch.manual_seed(0)
    z1 = (8 * torch.randn(4, 32, 16) / 4).requires_grad_()
    z2 = (z1.detach() + 0.05 * torch.randn(4, 32, 16)).requires_grad_()
    same = torch.tensor([True, False, True, False])

    def loss_and_grads(bf16: bool) -> tuple[torch.Tensor, ...]:
        z1.grad = z2.grad = None
        with torch.autocast(device_type="cpu", dtype=torch.bfloat16, enabled=bf16):
            loss = paper_contrastive(z1, z2, same, cfg)
        loss.backward()  # outside the autocast region, as in train_model
        return loss.detach(), z1.grad.clone(), z2.grad.clone()

    exact = loss_and_grads(bf16=False)
    mixed = loss_and_grads(bf16=True)
    assert inside and all(seen == (torch.float32, torch.float32, False) for seen in inside)
    assert mixed[0].dtype == torch.float32
    for e, m in zip(exact, mixed, strict=True):
        assert torch.allclose(e, m, rtol=1e-5, atol=1e-6)


def test_full_precision_turns_autocast_off_where_torch_has_it(monkeypatch):
    with torch.autocast(device_type="cpu", dtype=torch.bfloat16):
        with full_precision("cpu"):
            assert not torch.is_autocast_enabled("cpu")
        assert torch.is_autocast_enabled("cpu")
    real = torch.autocast

    def before_2_5(device_type, *args, **kwargs):  # torch 2.1-2.4 had no autocast on mps
        if device_type == "mps":
            raise RuntimeError("User specified an unsupported autocast device_type 'mps'")
        return real(device_type, *args, **kwargs)

    monkeypatch.setattr(torch, "autocast", before_2_5)
    with full_precision("mps"):  # nothing to turn off, and no error
        pass


def test_boundedness_euclidean_vs_squared():
    eu = boundedness_demo("euclidean", lam=1.0, steps=400)
    assert not eu.diverged
    # the minimum of a^2 - 2 lambda a sits at a = lambda for each mean: total norm sqrt(2) lambda
    assert eu.norm[-1] == pytest.approx(math.sqrt(2) * 1.0, rel=1e-3)
    assert eu.objective[-1] == pytest.approx(-1.0, rel=1e-3)
    sq = boundedness_demo("squared_euclidean", lam=1.0, steps=400)
    assert sq.diverged and sq.objective[-1] < -1e6
    small = boundedness_demo("squared_euclidean", lam=0.2, steps=400)  # lambda < 1/4: bounded
    assert not small.diverged and small.norm[-1] < small.norm[0] / 10


def test_elbo_terms_by_hand():
    x = torch.zeros(1, 2, 3)
    mean = torch.ones(1, 2, 3)
    # per frame: 0.5 * sum_f (1/sigma)^2 + F log sigma + F/2 log 2 pi, with sigma = 1
    expected = 0.5 * 2 + 2 * 0.5 * math.log(2 * math.pi)
    assert gaussian_nll(x, mean, torch.tensor(0.0)).item() == pytest.approx(expected)
    mu = torch.full((1, 3, 4), 2.0)
    lv = torch.zeros(1, 3, 4)
    assert kl_to_standard_normal(mu, lv).item() == pytest.approx(4 * 0.5 * 4.0)


def test_elbo_terms_where_sigma_and_the_variance_are_not_one():
    # at sigma = 1 and logvar = 0 the terms in sigma and in logvar vanish: check them apart
    x = torch.tensor([[[2.0]]])  # F = 1, T = 1
    two = torch.tensor(math.log(2.0))
    # 0.5 * ((2 - 0) / 2)^2 + log 2 + 0.5 log(2 pi)
    expected = 0.5 + math.log(2.0) + 0.5 * math.log(2 * math.pi)
    assert gaussian_nll(x, torch.zeros_like(x), two).item() == pytest.approx(expected)
    # KL(N(1, 4) || N(0, 1)) = 0.5 * (1 + 4 - log 4 - 1)
    kl = kl_to_standard_normal(torch.tensor([[[1.0]]]), torch.tensor([[[math.log(4.0)]]]))
    assert kl.item() == pytest.approx(0.5 * (4.0 - math.log(4.0)))

    g = torch.Generator().manual_seed(0)
    x, mean = torch.randn(3, 5, 4, generator=g), torch.randn(3, 5, 4, generator=g)
    nll = -torch.distributions.Normal(mean, 2.0).log_prob(x).sum(1).mean()
    assert gaussian_nll(x, mean, two).item() == pytest.approx(nll.item())
    mu, logvar = torch.randn(3, 4, 6, generator=g), torch.randn(3, 4, 6, generator=g)
    q = torch.distributions.Normal(mu, (0.5 * logvar).exp())
    prior = torch.distributions.Normal(torch.zeros_like(mu), torch.ones_like(mu))
    want = torch.distributions.kl_divergence(q, prior).sum(-1).mean()
    assert kl_to_standard_normal(mu, logvar).item() == pytest.approx(want.item())


def test_reparameterise_scales_the_noise_by_the_standard_deviation():
    mean = torch.tensor([[1.0, -2.0, 0.0]])
    logvar = torch.tensor([[math.log(4.0), math.log(0.25), 0.0]])  # std 2, 0.5, 1
    z = reparameterise(mean, logvar, torch.Generator().manual_seed(3))
    eps = torch.randn(mean.shape, generator=torch.Generator().manual_seed(3))
    assert torch.allclose(z, mean + torch.tensor([[2.0, 0.5, 1.0]]) * eps)


def test_the_encoder_clips_the_log_variance_to_minus_12_and_8():
    enc = FrameEncoder(4, 2, ModelConfig(hidden=4, layers=2, kernel_size=3))
    head = enc.net[-1]
    with torch.no_grad():
        head.weight.zero_()
        head.bias.copy_(torch.tensor([0.5, -0.5, 100.0, -100.0]))  # means, then log-variances
    mean, logvar = enc(torch.randn(2, 4, 5))
    assert torch.equal(mean[..., 0], torch.full((2, 5), 0.5))
    assert torch.equal(logvar[..., 0], torch.full((2, 5), 8.0))
    assert torch.equal(logvar[..., 1], torch.full((2, 5), -12.0))


def _tiny_model() -> PitchTimbreVAE:
    torch.manual_seed(0)
    return PitchTimbreVAE(10, ModelConfig(hidden=8, layers=2, kernel_size=3))


def test_pair_loss_routes_each_flag_and_weight_to_its_own_latent():
    model = _tiny_model().eval()  # eval: the reconstruction decodes the posterior means
    x1, x2 = torch.randn(4, 10, 6), torch.randn(4, 10, 6)
    same_pitch = torch.tensor([True, False, True, False])
    same_timbre = torch.tensor([False, False, True, True])
    calls = []

    def spy(z1, z2, same, cfg):  # returns 1 on its first call, 2 on its second
        calls.append((z1.detach(), z2.detach(), same))
        return z1.sum() * 0 + float(len(calls))

    cfg = LossConfig(lambda_pitch=3.0, lambda_timbre=5.0, beta=0.5)
    terms = pair_loss(model, x1, x2, same_pitch, same_timbre, cfg, contrastive_fn=spy)
    x = torch.cat([x1, x2])
    post = model.encode(x)
    (p1, p2, p_same), (t1, t2, t_same) = calls
    assert torch.equal(p_same, same_pitch) and torch.equal(t_same, same_timbre)
    torch.testing.assert_close(p1, post.pitch_mean[:4].detach())
    torch.testing.assert_close(p2, post.pitch_mean[4:].detach())
    torch.testing.assert_close(t1, post.timbre_mean[:4].detach())
    torch.testing.assert_close(t2, post.timbre_mean[4:].detach())
    assert terms.contrastive_pitch.item() == 1.0 and terms.contrastive_timbre.item() == 2.0
    # recon and KL are summed over the two notes of a pair: twice the mean over all 8 notes
    recon = 2 * gaussian_nll(x, model.decode(post.pitch_mean, post.timbre_mean), model.log_sigma)
    kl_p = 2 * kl_to_standard_normal(post.pitch_mean, post.pitch_logvar)
    kl_t = 2 * kl_to_standard_normal(post.timbre_mean, post.timbre_logvar)
    assert terms.recon.item() == pytest.approx(recon.item(), rel=1e-6)
    assert terms.kl_pitch.item() == pytest.approx(kl_p.item(), rel=1e-6)
    assert terms.kl_timbre.item() == pytest.approx(kl_t.item(), rel=1e-6)
    expected = recon + 0.5 * (kl_p + kl_t) + 3.0 * 1 + 5.0 * 2
    assert terms.total.item() == pytest.approx(expected.item(), rel=1e-6)


def test_pair_loss_on_samples_compares_the_drawn_latents():
    model = _tiny_model().train()
    x1, x2 = torch.randn(3, 10, 6), torch.randn(3, 10, 6)
    flags = torch.tensor([True, False, True])
    seen = []

    def spy(z1, z2, same, cfg):
        seen.append(torch.cat([z1, z2]).detach())
        return z1.sum() * 0

    for on in ("mean", "sample"):
        pair_loss(
            model,
            x1,
            x2,
            flags,
            flags,
            LossConfig(on=on),
            contrastive_fn=spy,
            generator=torch.Generator().manual_seed(7),
        )
    drawn = model(torch.cat([x1, x2]), generator=torch.Generator().manual_seed(7))
    means = model.encode(torch.cat([x1, x2]))
    torch.testing.assert_close(seen[0], means.pitch_mean.detach())
    torch.testing.assert_close(seen[1], means.timbre_mean.detach())
    torch.testing.assert_close(seen[2], drawn.z_pitch.detach())
    torch.testing.assert_close(seen[3], drawn.z_timbre.detach())
    assert not torch.allclose(seen[2], seen[0])


def test_the_loss_is_pluggable():
    model = PitchTimbreVAE(10, ModelConfig(hidden=8, layers=2, kernel_size=3))
    x1, x2 = torch.randn(4, 10, 6), torch.randn(4, 10, 6)
    flags = torch.tensor([True, False, True, False])
    seen = []

    def spy(z1, z2, same, cfg):
        seen.append((tuple(z1.shape), tuple(z2.shape), same.dtype, cfg))
        return z1.sum() * 0 + 7.0

    terms = pair_loss(
        model,
        x1,
        x2,
        flags,
        flags,
        LossConfig(lambda_pitch=1.0, lambda_timbre=2.0),
        contrastive_fn=spy,
    )
    assert seen[0][:3] == ((4, 6, 16), (4, 6, 16), torch.bool)
    assert terms.contrastive_pitch.item() == 7.0 and terms.contrastive_timbre.item() == 7.0
    expected = terms.recon + terms.kl_pitch + terms.kl_timbre + 1.0 * 7 + 2.0 * 7
    assert terms.total.item() == pytest.approx(expected.item(), rel=1e-6)

    @register_contrastive("test_zero")
    def zero(z1, z2, same, cfg):
        return z1.sum() * 0

    try:
        t = pair_loss(model, x1, x2, flags, flags, LossConfig(contrastive="test_zero"))
        assert t.contrastive_pitch.item() == 0.0
    finally:
        CONTRASTIVE_LOSSES.pop("test_zero")
    with pytest.raises(ConfigError, match=r"LossConfig\.contrastive: must be one of"):
        pair_loss(model, x1, x2, flags, flags, LossConfig(contrastive="nope"))
    with pytest.raises(ConfigError, match=r"LossConfig\.distance: must be one of"):
        pair_loss(model, x1, x2, flags, flags, LossConfig(distance="manhattan"))


def test_vanilla_ignores_the_contrastive_terms_but_logs_them():
    model = PitchTimbreVAE(10, ModelConfig(hidden=8, layers=2, kernel_size=3))
    x1, x2 = torch.randn(4, 10, 6), torch.randn(4, 10, 6)
    flags = torch.tensor([True, False, True, False])
    t = pair_loss(model, x1, x2, flags, flags, LossConfig(lambda_pitch=0.0, lambda_timbre=0.0))
    assert t.contrastive_pitch.item() != 0.0
    assert t.total.item() == pytest.approx((t.recon + t.kl_pitch + t.kl_timbre).item(), rel=1e-6)
