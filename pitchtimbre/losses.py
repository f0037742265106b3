"""The loss: VAE terms for both notes of a pair, plus contrastive terms for both latents.

    L_total = -ELBO(X1) - ELBO(X2) + lambda_p L_c^p + lambda_t L_c^t
    L_c     = D_11 + D_22 + D_12   if the pair shares the label (pitch, resp. instrument)
            = D_11 + D_22 - D_12   otherwise

D_ij is the mean distance over all frame pairs (t, t') between the latent sequences of X_i
and X_j (for D_11 and D_22 the pairs t != t'). The poster sums; we average, so that the
weight lambda does not depend on the number of frames.

**Pluggable.** A contrastive loss is any function

    fn(z1: Tensor[B, T, D], z2: Tensor[B, T, D], same: BoolTensor[B], cfg: LossConfig) -> Tensor[]

(the latent sequences of the first and second notes of each pair, the pair's flag, the
loss settings; returns a scalar averaged over the batch). The built-ins below use exactly
this interface; register your own with :func:`register_contrastive` or pass it to the
trainer as ``contrastive_fn``.

Chapter: 04_contrastive_loss
"""

from __future__ import annotations

import math
from collections.abc import Callable
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass

import torch

from .config import LossConfig
from .errors import ConfigError
from .model import PitchTimbreVAE

Distance = Callable[[torch.Tensor, torch.Tensor, float], torch.Tensor]
ContrastiveLoss = Callable[[torch.Tensor, torch.Tensor, torch.Tensor, LossConfig], torch.Tensor]


def _frame_norms(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """||a_t - b_t'|| for all frame pairs, from the coordinate differences.

    ``torch.cdist`` with the matrix-product shortcut turned off: it never forms the
    [B, T, S, D] differences (about 4x faster forwards and backwards on a CPU than the
    broadcast difference, which took a quarter of a training step), and its gradient at a
    zero distance is 0. The shortcut ||a||^2 + ||b||^2 - 2 a.b would cancel catastrophically
    for nearby frames, and under bf16 autocast its error exceeds the distances themselves.
    """
    return torch.cdist(a, b, p=2.0, compute_mode="donot_use_mm_for_euclid_dist")


def euclidean(a: torch.Tensor, b: torch.Tensor, eps: float = 1e-8) -> torch.Tensor:
    """||a_t - b_t'|| for all frame pairs: [B, T, D] x [B, S, D] -> [B, T, S].

    ``eps`` is added under the square root, sqrt(||a_t - b_t'||^2 + eps), which keeps the
    distance smooth at zero; with ``eps = 0`` it is the plain norm, whose gradient at zero
    is taken as 0.

    Chapter: 04_contrastive_loss
    """
    d = _frame_norms(a, b)
    return d if eps == 0 else (d.square() + eps).sqrt()


def squared_euclidean(a: torch.Tensor, b: torch.Tensor, eps: float = 0.0) -> torch.Tensor:
    """||a_t - b_t'||^2 for all frame pairs (unbounded below with the minus sign: see the
    chapter).

    Chapter: 04_contrastive_loss
    """
    return _frame_norms(a, b).square()


def cosine_distance(a: torch.Tensor, b: torch.Tensor, eps: float = 1e-8) -> torch.Tensor:
    """1 - cos(a_t, b_t') for all frame pairs, in [0, 2]: blind to the latents' length.

    Chapter: 04_contrastive_loss
    """
    an = a / (a.norm(dim=-1, keepdim=True) + eps)
    bn = b / (b.norm(dim=-1, keepdim=True) + eps)
    return 1.0 - an @ bn.transpose(1, 2)


DISTANCES: dict[str, Distance] = {
    "euclidean": euclidean,
    "squared_euclidean": squared_euclidean,
    "cosine": cosine_distance,
}


def get_distance(name: str) -> Distance:
    """The distance function named by ``LossConfig.distance`` (a clear error for an unknown name).

    Chapter: 04_contrastive_loss
    """
    if name not in DISTANCES:
        raise ConfigError(f"LossConfig.distance: must be one of {sorted(DISTANCES)}, got {name!r}")
    return DISTANCES[name]


def full_precision(device_type: str) -> AbstractContextManager:
    """A region where autocast is off on ``device_type``; nothing at all where torch has no
    autocast for it (before 2.5, Apple's 'mps'), as then none can be on.

    Chapter: 04_contrastive_loss
    """
    try:
        return torch.autocast(device_type=device_type, enabled=False)
    except RuntimeError:
        return nullcontext()


def mean_frame_distance(
    a: torch.Tensor, b: torch.Tensor, cfg: LossConfig, same_note: bool = False
) -> torch.Tensor:
    """D_ij: the mean distance over frame pairs (t, t') of ``a`` and ``b`` [B, T, D] -> [B].

    With ``same_note`` (D_11, D_22) the T diagonal pairs t = t' (distance 0) are left out.

    Chapter: 04_contrastive_loss
    """
    # distances in float32 even inside a bf16 autocast region: small distances are what the
    # same-label terms pull towards zero, and bf16 rounds them away
    wide = torch.promote_types(a.dtype, torch.float32)  # float64 stays float64
    with full_precision(a.device.type):
        d = get_distance(cfg.distance)(a.to(wide), b.to(wide), cfg.distance_eps)
    if not same_note:
        return d.mean(dim=(1, 2))
    t = d.shape[1]
    if t < 2:
        return torch.zeros(d.shape[0], device=d.device, dtype=d.dtype)
    off = ~torch.eye(t, dtype=torch.bool, device=d.device)
    return d[:, off].mean(dim=1)


def pair_distances(z1: torch.Tensor, z2: torch.Tensor, cfg: LossConfig) -> tuple[torch.Tensor, ...]:
    """(D_11, D_22, D_12), each [B].

    Chapter: 04_contrastive_loss
    """
    return (
        mean_frame_distance(z1, z1, cfg, same_note=True),
        mean_frame_distance(z2, z2, cfg, same_note=True),
        mean_frame_distance(z1, z2, cfg),
    )


def paper_contrastive(
    z1: torch.Tensor, z2: torch.Tensor, same: torch.Tensor, cfg: LossConfig
) -> torch.Tensor:
    """The poster's term: D_11 + D_22 + D_12 for same-label pairs, D_11 + D_22 - D_12 otherwise.

    Chapter: 04_contrastive_loss
    """
    d11, d22, d12 = pair_distances(z1, z2, cfg)
    sign = same.to(d12.dtype) * 2 - 1
    return (d11 + d22 + sign * d12).mean()


def hinge_contrastive(
    z1: torch.Tensor, z2: torch.Tensor, same: torch.Tensor, cfg: LossConfig
) -> torch.Tensor:
    """A bounded variant (Hadsell et al. 2006): different pairs are pushed apart only until
    D_12 reaches ``cfg.margin``: D_11 + D_22 + (D_12 if same else max(0, margin - D_12)).

    Chapter: 04_contrastive_loss
    """
    d11, d22, d12 = pair_distances(z1, z2, cfg)
    apart = torch.relu(cfg.margin - d12)
    return (d11 + d22 + torch.where(same, d12, apart)).mean()


CONTRASTIVE_LOSSES: dict[str, ContrastiveLoss] = {
    "paper": paper_contrastive,
    "hinge": hinge_contrastive,
}
BUILTIN_CONTRASTIVE_LOSSES: dict[str, ContrastiveLoss] = dict(CONTRASTIVE_LOSSES)
"""The package's own losses. The model cache knows them by name; a loss registered later (or
registered over one of these names) is known by a hash of its code as well."""


def register_contrastive(name: str) -> Callable[[ContrastiveLoss], ContrastiveLoss]:
    """Decorator adding a contrastive loss under ``name`` (then ``LossConfig(contrastive=name)``).

    Chapter: 04_contrastive_loss
    """

    def add(fn: ContrastiveLoss) -> ContrastiveLoss:
        CONTRASTIVE_LOSSES[name] = fn
        return fn

    return add


def get_contrastive(name: str) -> ContrastiveLoss:
    """The contrastive loss registered under ``name`` (a clear error for an unknown name).

    Chapter: 04_contrastive_loss
    """
    if name not in CONTRASTIVE_LOSSES:
        raise ConfigError(
            f"LossConfig.contrastive: must be one of {sorted(CONTRASTIVE_LOSSES)}, got {name!r}"
        )
    return CONTRASTIVE_LOSSES[name]


def gaussian_nll(x: torch.Tensor, mean: torch.Tensor, log_sigma: torch.Tensor) -> torch.Tensor:
    """-log N(x; mean, sigma^2 I) summed over frequency, averaged over frames and batch
    (the per-frame normalisation): [B, F, T] -> scalar.

    Chapter: 03_generative_model
    """
    f = x.shape[1]
    sq = ((x - mean) / log_sigma.exp()).pow(2).sum(1)  # [B, T]
    return (0.5 * sq).mean() + f * (log_sigma + 0.5 * math.log(2 * math.pi))


def kl_to_standard_normal(mean: torch.Tensor, logvar: torch.Tensor) -> torch.Tensor:
    """KL(N(mean, exp(logvar)) || N(0, I)) summed over latent dimensions, averaged over frames
    and batch: [B, T, D] -> scalar.

    Chapter: 03_generative_model
    """
    return (0.5 * (mean.pow(2) + logvar.exp() - logvar - 1.0)).sum(-1).mean()


@dataclass
class LossTerms:
    """The total loss and each of its terms (for logging), all scalars.

    ``recon``, ``kl_pitch`` and ``kl_timbre`` are summed over the two notes of a pair.

    Chapter: 04_contrastive_loss
    """

    total: torch.Tensor
    recon: torch.Tensor
    kl_pitch: torch.Tensor
    kl_timbre: torch.Tensor
    contrastive_pitch: torch.Tensor
    contrastive_timbre: torch.Tensor

    def as_floats(self) -> dict[str, float]:
        return {k: float(v.detach()) for k, v in vars(self).items()}


def pair_loss(
    model: PitchTimbreVAE,
    x1: torch.Tensor,
    x2: torch.Tensor,
    same_pitch: torch.Tensor,
    same_timbre: torch.Tensor,
    cfg: LossConfig,
    contrastive_fn: ContrastiveLoss | None = None,
    generator: torch.Generator | None = None,
) -> LossTerms:
    """L_total for a batch of pairs. ``contrastive_fn`` overrides ``cfg.contrastive``.

    Both notes go through the networks in one batch. The contrastive terms are computed
    (and logged) even for the vanilla VAE, whose lambdas are 0.

    Chapter: 04_contrastive_loss
    """
    b = x1.shape[0]
    x = torch.cat([x1, x2])
    out = model(x, generator=generator)
    inner = getattr(model, "module", model)  # the model itself under DistributedDataParallel
    post = out.posterior
    recon = 2 * gaussian_nll(x.float(), out.reconstruction.float(), inner.log_sigma)
    kl_p = 2 * kl_to_standard_normal(post.pitch_mean.float(), post.pitch_logvar.float())
    kl_t = 2 * kl_to_standard_normal(post.timbre_mean.float(), post.timbre_logvar.float())
    zp = post.pitch_mean if cfg.on == "mean" else out.z_pitch
    zt = post.timbre_mean if cfg.on == "mean" else out.z_timbre
    fn = contrastive_fn or get_contrastive(cfg.contrastive)
    cp = fn(zp[:b].float(), zp[b:].float(), same_pitch, cfg)
    ct = fn(zt[:b].float(), zt[b:].float(), same_timbre, cfg)
    total = recon + cfg.beta * (kl_p + kl_t) + cfg.lambda_pitch * cp + cfg.lambda_timbre * ct
    return LossTerms(total, recon, kl_p, kl_t, cp, ct)
