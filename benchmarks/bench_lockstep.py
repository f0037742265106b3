"""Would training several models in lock-step pay? One vmapped step against one step each.

    python benchmarks/bench_lockstep.py             # cpu-profile model, 3 models
    python benchmarks/bench_lockstep.py --small     # ci-profile model, 2 models (CI)
    python benchmarks/bench_lockstep.py --profile gpu --models 3 --device cuda

The ``gpu`` profile trains six models (two losses x three seeds), one after another. A
hidden-256 step on a GPU is mostly kernel launches, so a step of three models whose weights
are stacked along a new first dimension, the forward pass and the loss mapped over it with
``torch.func.vmap`` (the convolutions become grouped ones), might cost little more than the
step of one. This benchmark measures that before anything is built on it: nothing in the
package trains in lock-step.

Both loops run the model-only step of ``bench_training.py`` (a fixed batch of pairs per model,
already on the device; ``pair_loss``, Adam, gradient clipping at ``train.grad_clip`` and,
on CUDA, bf16 autocast and fused Adam): *one after another* takes one step of each model,
*lock-step* one vmapped step of all of them, with each model's gradient clipped by its own
norm. ``one after another / lock-step`` above 1 means lock-step pays. Times are the fastest
of ``--repeat`` rounds, both loops timed in each round, the one timed first taking turns.

The last line checks that the vmapped computation is the models' own: with the models in
eval mode (no reparameterisation noise), the largest difference between each model's loss
and gradients computed alone and computed in lock-step, relative to their size. Prints a
table; makes no assertions.
"""

from __future__ import annotations

import argparse
import copy

import torch
from bench_training import new_training, steady_seconds, synthetic_dataset, train_step
from torch.func import functional_call, stack_module_state, vmap

from pitchtimbre.config import ExperimentConfig, profile_config
from pitchtimbre.data import PairSampler
from pitchtimbre.losses import pair_loss
from pitchtimbre.machine import describe_machine, machine_lines
from pitchtimbre.model import PitchTimbreVAE
from pitchtimbre.training import training_precision, uses_autocast

Batch = tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]


class StackedCall:
    """One model of the stack, as ``pair_loss`` calls a model: ``template``'s forward pass
    with the weights ``params`` and buffers ``buffers`` (one slice of the stack, under vmap)."""

    def __init__(
        self, template: PitchTimbreVAE, params: dict[str, torch.Tensor], buffers: dict
    ) -> None:
        self.template, self.params, self.buffers = template, params, buffers
        self.log_sigma = {**params, **buffers}["log_sigma"]

    def __call__(self, x: torch.Tensor, generator: torch.Generator | None = None):
        # vmap draws the noise itself (randomness="different"): a generator cannot be mapped
        return functional_call(self.template, (self.params, self.buffers), (x,))


def fixed_batches(cfg: ExperimentConfig, models: int, device: torch.device) -> list[Batch]:
    """One batch of pairs per model (the sampler seeded with the model's seed) on the device."""
    train = synthetic_dataset(cfg).train()
    out = []
    for seed in range(models):
        drawn = PairSampler(train.pitch, train.instrument, cfg.pairs, seed=seed).sample()
        parts = (
            train.features[drawn.first],
            train.features[drawn.second],
            drawn.same_pitch,
            drawn.same_timbre,
        )
        out.append(tuple(t.to(device) for t in parts))
    return out


class LockStep:
    """``models`` trained as one: their weights stacked, one vmapped loss, one Adam."""

    def __init__(
        self, cfg: ExperimentConfig, models: list[PitchTimbreVAE], batches: list[Batch]
    ) -> None:
        self.cfg = cfg
        self.template = copy.deepcopy(models[0]).to("meta")
        self.params, self.buffers = stack_module_state(models)  # leaves, requires_grad
        device = next(iter(self.params.values())).device
        fused = True if device.type == "cuda" else None
        self.optimiser = torch.optim.Adam(self.params.values(), lr=cfg.train.lr, fused=fused)
        self.batch = tuple(torch.stack(parts) for parts in zip(*batches, strict=True))
        self.amp = uses_autocast(cfg.train, device)

    def terms(self, params: dict, buffers: dict, x1, x2, same_pitch, same_timbre):
        model = StackedCall(self.template, params, buffers)
        terms = pair_loss(model, x1, x2, same_pitch, same_timbre, self.cfg.loss)
        return terms.total

    def losses(self, randomness: str = "different") -> torch.Tensor:
        """Each model's total loss on its batch, [models]."""
        mapped = vmap(self.terms, in_dims=(0, 0, 0, 0, 0, 0), randomness=randomness)
        device = self.batch[0].device
        with training_precision(self.amp, device):
            return mapped(self.params, self.buffers, *self.batch)

    def clip(self) -> None:
        """Each model's gradient clipped by its own norm, as ``clip_grad_norm_`` does alone."""
        grads = [p.grad for p in self.params.values() if p.grad is not None]
        squares = sum(g.float().square().flatten(1).sum(1) for g in grads)
        scale = (self.cfg.train.grad_clip / (squares.sqrt() + 1e-6)).clamp(max=1.0)
        for g in grads:
            g.mul_(scale.view(-1, *[1] * (g.dim() - 1)).to(g.dtype))

    def step(self) -> None:
        self.optimiser.zero_grad(set_to_none=True)
        self.losses().sum().backward()  # the models share no weight: each gets its own gradient
        if self.cfg.train.grad_clip is not None:
            self.clip()
        self.optimiser.step()


def agreement(cfg: ExperimentConfig, models: list[PitchTimbreVAE], batches: list[Batch]) -> float:
    """Largest relative difference between each model's loss and gradients computed alone
    and in lock-step, in eval mode (no noise) and float32."""
    for m in models:
        m.eval()
    stacked = LockStep(cfg.with_overrides({"train.amp": False}), models, batches)
    together = stacked.losses(randomness="error")
    together.sum().backward()
    together = together.detach()
    worst = 0.0
    for i, (model, (x1, x2, sp, st)) in enumerate(zip(models, batches, strict=True)):
        model.zero_grad(set_to_none=True)
        alone = pair_loss(model, x1, x2, sp, st, cfg.loss).total
        alone.backward()
        alone = alone.detach()
        worst = max(worst, float((together[i] - alone).abs() / alone.abs()))
        for name, p in model.named_parameters():
            g = stacked.params[name].grad[i]
            worst = max(worst, float((g - p.grad).abs().max() / p.grad.abs().max()))
    for m in models:
        m.train()
    return worst


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--small", action="store_true", help="ci model, 2 models, 5 steps (CI)")
    ap.add_argument("--profile", choices=("ci", "cpu", "gpu"), help="model and batch size")
    ap.add_argument("--models", type=int, help="models in the stack (default 3, or 2 small)")
    ap.add_argument("--steps", type=int, help="timed steps per loop (default 20, or 5 small)")
    ap.add_argument("--repeat", type=int, default=3, help="rounds; the fastest is kept")
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    args = ap.parse_args()
    profile = args.profile or ("ci" if args.small else "cpu")
    n = args.models or (2 if args.small else 3)
    steps = args.steps or (5 if args.small else 20)
    device = torch.device(args.device)
    cfg = profile_config(profile).with_overrides({"train.device": str(device)})
    batches = fixed_batches(cfg, n, device)
    trainings = [
        new_training(cfg.with_overrides({"train.seed": s}), batches[0][0].shape[1], device)
        for s in range(n)
    ]
    models = [model for model, _, _ in trainings]

    print("\n".join(machine_lines(describe_machine(device))))
    amp = uses_autocast(cfg.train, device)
    print(
        f"profile {profile}: hidden {cfg.model.hidden}, batch {cfg.pairs.batch_size} pairs, ",
        end="",
    )
    print(f"amp {amp}; {n} models, {steps} timed steps, fastest of {args.repeat} rounds\n")
    gap = agreement(cfg, models, batches)  # before any step: the same weights both ways
    lockstep = LockStep(cfg, models, batches)

    def one_after_another() -> None:
        for (model, optimiser, noise), batch in zip(trainings, batches, strict=True):
            train_step(model, optimiser, noise, cfg, batch)

    best = {"alone": float("inf"), "together": float("inf")}
    ways = [("alone", one_after_another), ("together", lockstep.step)]
    for r in range(args.repeat):  # each way first in every other round: neither always warmer
        for name, step in ways[r % 2 :] + ways[: r % 2]:
            best[name] = min(best[name], steady_seconds(device, 2, steps, step))
    alone, together = best["alone"], best["together"]

    print(f"  {'way':44s} {'ms a step of all':>16s} {'speed':>7s}")
    print(f"  {f'one after another ({n} steps)':44s} {alone * 1e3:16.2f} {1.0:6.2f}x")
    print(f"  {'lock-step (one vmapped step)':44s} {together * 1e3:16.2f} {alone / together:6.2f}x")
    print(f"\n  one after another / lock-step: {alone / together:.2f} (above 1: lock-step pays)")
    print(f"  lock-step against each model alone (eval mode, float32): largest gap {gap:.1e}")


if __name__ == "__main__":
    main()
