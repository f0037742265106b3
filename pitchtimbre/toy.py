"""A two-dimensional toy of the boundedness argument (why Euclidean, not squared, distance).

Take one 'different' pair whose posteriors are N(mu_1, I) and N(mu_2, I) and keep only the
terms that act on the means: the two KL terms and the pushing term,

    f(mu_1, mu_2) = 1/2 ||mu_1||^2 + 1/2 ||mu_2||^2 - lambda d(mu_1, mu_2).

With mu_2 = -mu_1 = a u (u a unit vector): the KL part is a^2. Euclidean d = 2a gives
f = a^2 - 2 lambda a, bounded below with its minimum at a = lambda; squared d = 4a^2 gives
f = (1 - 4 lambda) a^2, unbounded below as soon as lambda > 1/4: gradient descent runs off
to infinity.

Chapter: 04_contrastive_loss
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from .losses import get_distance


@dataclass
class ToyTrajectory:
    """Gradient descent on the toy objective: per step, the objective and the means' norm.

    Chapter: 04_contrastive_loss
    """

    distance: str
    lam: float
    objective: list[float]
    norm: list[float]
    means: list[tuple[tuple[float, float], tuple[float, float]]]

    @property
    def diverged(self) -> bool:
        return not torch.isfinite(torch.tensor(self.norm[-1])) or self.norm[-1] > 1e6


def toy_objective(mu1: torch.Tensor, mu2: torch.Tensor, distance: str, lam: float) -> torch.Tensor:
    """KL of both unit-variance posteriors minus lambda times their distance.

    Chapter: 04_contrastive_loss
    """
    kl = 0.5 * (mu1.pow(2).sum() + mu2.pow(2).sum())
    d = get_distance(distance)(mu1.view(1, 1, -1), mu2.view(1, 1, -1), 1e-12).squeeze()
    return kl - lam * d


def boundedness_demo(
    distance: str = "euclidean", lam: float = 1.0, steps: int = 200, lr: float = 0.05, seed: int = 0
) -> ToyTrajectory:
    """Run plain gradient descent on :func:`toy_objective` from a small random start.

    Chapter: 04_contrastive_loss
    """
    g = torch.Generator().manual_seed(seed)
    mu1 = (0.1 * torch.randn(2, generator=g, dtype=torch.float64)).requires_grad_()
    mu2 = (0.1 * torch.randn(2, generator=g, dtype=torch.float64)).requires_grad_()
    objective, norm, means = [], [], []
    for _ in range(steps):
        f = toy_objective(mu1, mu2, distance, lam)
        objective.append(float(f.detach()))
        norm.append(float(torch.sqrt(mu1.detach().pow(2).sum() + mu2.detach().pow(2).sum())))
        means.append((tuple(mu1.tolist()), tuple(mu2.tolist())))
        if not torch.isfinite(f) or norm[-1] > 1e6:
            break
        mu1.grad = mu2.grad = None
        f.backward()
        with torch.no_grad():
            mu1 -= lr * mu1.grad
            mu2 -= lr * mu2.grad
    return ToyTrajectory(distance, lam, objective, norm, means)
