"""Classroom exercises: modify the contrastive loss, check it, train with it.

Each exercise asks for a function with the package's contrastive-loss signature
``fn(z1, z2, same, cfg) -> scalar`` (see :mod:`pitchtimbre.losses`). :func:`check` compares a
student's function with the solution on hand-picked situations and says which one is wrong
and why; :func:`try_loss` trains the proposed model with it on a short budget and evaluates
it, and :func:`comparison_table` sets such runs side by side (the chapter's first row is the
poster's loss).

The solutions live here, behind a flag: :func:`solution` refuses to hand one out unless
``PITCHTIMBRE_SOLUTIONS=1`` is set (CI sets it, so every notebook runs end to end; students
leave it off). A teacher can set it in a cell with ``os.environ[...] = "1"``.

Chapter: 09_exercises
"""

from __future__ import annotations

import math
import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from typing import Any

import torch

from .config import LossConfig
from .losses import (
    ContrastiveLoss,
    hinge_contrastive,
    mean_frame_distance,
    pair_distances,
    paper_contrastive,
)

SOLUTIONS_ENV = "PITCHTIMBRE_SOLUTIONS"
_ON, _OFF = ("1", "true", "yes"), ("", "0", "false", "no")


def solutions_enabled() -> bool:
    """True when ``PITCHTIMBRE_SOLUTIONS`` is set to 1 (CI, teachers).

    Chapter: 09_exercises
    """
    return os.environ.get(SOLUTIONS_ENV, "0").strip().lower() in _ON


def _squared(z1, z2, same, cfg):
    return paper_contrastive(z1, z2, same, replace(cfg, distance="squared_euclidean"))


def _cosine(z1, z2, same, cfg):
    return paper_contrastive(z1, z2, same, replace(cfg, distance="cosine"))


# The exercises' losses as functions of the three distances (D_11, D_22, D_12), each [B], so
# that the checker can compute what a mistake in the distances gives (_all_frame_pairs).
# Tests check each against the loss it restates. The poster's and the hinge loss restate
# pitchtimbre.losses, whose code keys every cached model: move them there, and have the
# losses call them, when that module changes for another reason.


def _poster_form(d11, d22, d12, same, cfg):
    return (d11 + d22 + (same.to(d12.dtype) * 2 - 1) * d12).mean()


def _hinge_form(d11, d22, d12, same, cfg):
    return (d11 + d22 + torch.where(same, d12, torch.relu(cfg.margin - d12))).mean()


def _triplet_form(d11, d22, d12, same, cfg):
    gather = (d11 + d22).mean()
    pos, neg = d12[same], d12[~same]
    if len(pos) == 0 or len(neg) == 0:
        return gather
    return gather + torch.relu(pos[:, None] - neg[None, :] + cfg.margin).mean()


def _cross_form(d11, d22, d12, same, cfg):
    return ((same.to(d12.dtype) * 2 - 1) * d12).mean()


def _cross_only(z1, z2, same, cfg):
    return _cross_form(None, None, mean_frame_distance(z1, z2, cfg), same, cfg)


def _ranking_triplet(z1, z2, same, cfg):
    return _triplet_form(*pair_distances(z1, z2, cfg), same, cfg)


@dataclass(frozen=True)
class Probe:
    """A situation the checker tries: how to build it and what to say when it fails.

    Chapter: 09_exercises
    """

    description: str
    make: Callable[[torch.Generator], tuple[torch.Tensor, torch.Tensor, torch.Tensor]]
    hint: str


def _random(n: int = 6, t: int = 4, d: int = 3, scale: float = 1.0, flags: str = "mixed"):
    def make(g: torch.Generator):
        z1 = scale * torch.randn(n, t, d, generator=g, dtype=torch.float64)
        z2 = scale * torch.randn(n, t, d, generator=g, dtype=torch.float64)
        if flags == "same":
            same = torch.ones(n, dtype=torch.bool)
        elif flags == "different":
            same = torch.zeros(n, dtype=torch.bool)
        else:
            same = torch.arange(n) % 2 == 0
        return z1, z2, same

    return make


def _collapsed(g: torch.Generator):
    z1 = torch.randn(4, 1, 3, generator=g, dtype=torch.float64).expand(4, 5, 3).contiguous()
    z2 = torch.randn(4, 1, 3, generator=g, dtype=torch.float64).expand(4, 5, 3).contiguous()
    return z1, z2, torch.tensor([True, False, True, False])


def _graded(g: torch.Generator):
    """Different-label pairs ever further apart (D_12 about 2, 4 and 70; same-label pairs
    about 1, the distance between a note's own frames): with a margin of 2 some (same,
    different) combinations are ranked by more than the margin, others not."""
    z1 = torch.randn(6, 3, 2, generator=g, dtype=torch.float64)
    offset = torch.tensor([0.1, 0.5, 0.1, 3.0, 0.1, 50.0], dtype=torch.float64)[:, None, None]
    z2 = z1 + offset * torch.randn(6, 1, 2, generator=g, dtype=torch.float64).sign()
    return z1, z2, torch.arange(6) % 2 == 0


def _far_apart(g: torch.Generator):
    z1 = torch.randn(4, 3, 2, generator=g, dtype=torch.float64)
    return z1, z1 + 50.0, torch.zeros(4, dtype=torch.bool)


COMMON_PROBES = (
    Probe(
        "same-label pairs",
        _random(flags="same"),
        "for a same-label pair the cross term D_12 is added; D_11 and D_22 average over the "
        "frame pairs t != t' of one note only",
    ),
    Probe(
        "different-label pairs",
        _random(flags="different"),
        "check the sign or form of the term for different-label pairs",
    ),
    Probe(
        "a mixed batch", _random(), "mean over the batch, after combining the terms of each pair"
    ),
    Probe(
        "notes whose frames coincide",
        _collapsed,
        "all frames of a note are equal here, so D_11 and D_22 are 0 and only D_12 counts",
    ),
)


@dataclass(frozen=True)
class Mistake:
    """A wrong answer met often enough to be recognised by its values, on every probe, and
    what to tell its writer. ``value(solution, z1, z2, same, cfg)`` is what the wrong
    answer gives on a probe.

    Chapter: 09_exercises
    """

    says: str
    value: Callable[
        [ContrastiveLoss, torch.Tensor, torch.Tensor, torch.Tensor, LossConfig], torch.Tensor
    ]
    sums_frame_pairs: bool = False
    """Its distances add up T x T frame distances, each up to sqrt(cfg.distance_eps) from a
    plain norm's (:func:`value_tolerance`): the tolerance grows with T x T."""


COMMON_MISTAKES = (
    Mistake(
        "every pair's label is read the other way round: same-label pairs are the ones to "
        "pull together, different-label pairs the ones to push apart",
        lambda solution, z1, z2, same, cfg: solution(z1, z2, ~same, cfg),
    ),
    Mistake(
        "the right loss times the batch size: take the mean over the pairs, not the sum",
        lambda solution, z1, z2, same, cfg: solution(z1, z2, same, cfg) * len(same),
    ),
)


def _all_frame_pairs(form: Callable[..., torch.Tensor], distance: str | None = None) -> Mistake:
    """The mistake of averaging D_11 and D_22 over all T x T frame pairs, the T pairs t = t'
    (a frame and itself, distance 0) included, in the loss ``form`` with ``distance``."""

    def value(solution, z1, z2, same, cfg):
        cfg = cfg if distance is None else replace(cfg, distance=distance)
        own = (mean_frame_distance(z, z, cfg) for z in (z1, z2))  # same_note=False: all pairs
        return form(*own, mean_frame_distance(z1, z2, cfg), same, cfg)

    return Mistake(
        "D_11 and D_22 average over all T x T frame pairs here; leave out the T pairs t = t' "
        "(a frame and itself, distance 0), as mean_frame_distance(z, z, cfg, same_note=True) does",
        value,
    )


def _summed_frame_pairs(form: Callable[..., torch.Tensor], distance: str | None = None) -> Mistake:
    """The mistake of summing the distances over frame pairs, as the poster writes D_ij,
    where the book averages them: T(T-1) pairs t != t' in D_11 and D_22, T x T in D_12."""

    def value(solution, z1, z2, same, cfg):
        cfg = cfg if distance is None else replace(cfg, distance=distance)
        d11, d22, d12 = pair_distances(z1, z2, cfg)
        t = z1.shape[1]
        return form(d11 * t * (t - 1), d22 * t * (t - 1), d12 * t * t, same, cfg)

    return Mistake(
        "the distances are summed over the frame pairs here; the book averages them (the "
        "poster's sums divided by the number of pairs), so that the loss does not grow with "
        "the number of frames: use the mean, as mean_frame_distance does",
        value,
        sums_frame_pairs=True,
    )


def _euclidean_instead(form: Callable[..., torch.Tensor]) -> Mistake:
    """The mistake of keeping the Euclidean distance of the ``cfg`` that the checker passes."""

    def value(solution, z1, z2, same, cfg):
        return form(*pair_distances(z1, z2, replace(cfg, distance="euclidean")), same, cfg)

    return Mistake(
        "this is the Euclidean distance: the cfg your loss receives has distance='euclidean'; "
        "compute the distance asked for yourself, or pass "
        "dataclasses.replace(cfg, distance=...) to pair_distances",
        value,
    )


def _mistakes(
    form: Callable[..., torch.Tensor], distance: str | None = None, has_d11: bool = True
) -> tuple[Mistake, ...]:
    """The mistakes the checker names in an exercise whose loss is ``form`` of the three
    distances with ``distance``: the common ones, then those in the distances (D_11 and
    D_22 with t = t', when the loss has them; sums over frame pairs)."""
    diagonal = (_all_frame_pairs(form, distance),) if has_d11 else ()
    return (*COMMON_MISTAKES, *diagonal, _summed_frame_pairs(form, distance))


@dataclass(frozen=True)
class Exercise:
    """One exercise: its title, the solution, the probes its checker runs and the mistakes
    it names.

    Chapter: 09_exercises
    """

    name: str
    title: str
    solution: ContrastiveLoss
    probes: tuple[Probe, ...] = field(default=COMMON_PROBES)
    mistakes: tuple[Mistake, ...] = field(default=COMMON_MISTAKES)
    cfg: LossConfig = field(default_factory=lambda: LossConfig(distance_eps=1e-12, margin=2.0))


EXERCISES: dict[str, Exercise] = {
    e.name: e
    for e in (
        Exercise(
            "hinge",
            "Hinge margin: push different-label pairs apart only until D_12 reaches the margin",
            hinge_contrastive,
            (
                *COMMON_PROBES,
                Probe(
                    "different pairs beyond the margin",
                    _far_apart,
                    "beyond the margin, max(0, margin - D_12) is 0: only D_11 + D_22 remain",
                ),
            ),
            mistakes=_mistakes(_hinge_form),
        ),
        Exercise(
            "squared",
            "Squared Euclidean distance in the poster's loss (and why it blows up)",
            _squared,
            mistakes=(
                *_mistakes(_poster_form, "squared_euclidean"),
                _euclidean_instead(_poster_form),
            ),
        ),
        Exercise(
            "cosine",
            "Cosine distance 1 - cos(a, b) in the poster's loss",
            _cosine,
            (
                *COMMON_PROBES,
                Probe(
                    "latents scaled by 10",
                    _random(scale=10.0),
                    "a cosine distance does not change when a latent is scaled",
                ),
            ),
            mistakes=(*_mistakes(_poster_form, "cosine"), _euclidean_instead(_poster_form)),
        ),
        Exercise(
            "cross_only",
            "Drop D_11 and D_22: keep only +/- D_12",
            _cross_only,
            (
                Probe(
                    "same-label pairs",
                    _random(flags="same"),
                    "+D_12 for a same-label pair, nothing else",
                ),
                Probe(
                    "different-label pairs",
                    _random(flags="different"),
                    "-D_12 for a different-label pair",
                ),
                Probe("a mixed batch", _random(), "the batch mean of +/- D_12"),
            ),
            mistakes=_mistakes(_cross_form, has_d11=False),
        ),
        Exercise(
            "triplet",
            "A ranking (triplet-style) loss: same-label pairs closer than different-label pairs by a margin",
            _ranking_triplet,
            (
                Probe(
                    "a mixed batch",
                    _random(),
                    "mean over all (same pair, different pair) combinations of relu(D_12+ - D_12- + margin), plus the batch mean of D_11 + D_22",
                ),
                Probe(
                    "only same-label pairs",
                    _random(flags="same"),
                    "with no different-label pair there is nothing to rank: only D_11 + D_22",
                ),
                Probe("notes whose frames coincide", _collapsed, "D_11 and D_22 over t != t'"),
                Probe(
                    "pairs at several distances",
                    _graded,
                    "a (same, different) combination ranked by more than the margin adds 0 "
                    "(relu); average over every combination, not against the mean of D_12-",
                ),
            ),
            mistakes=_mistakes(_triplet_form),
        ),
    )
}


def solution(name: str) -> ContrastiveLoss:
    """The solution of exercise ``name``, when solutions are enabled (see the module docstring).

    Chapter: 09_exercises
    """
    ex = _exercise(name)
    if not solutions_enabled():
        value = os.environ.get(SOLUTIONS_ENV, "")
        unknown = value.strip().lower() not in _OFF
        why = f" ({SOLUTIONS_ENV}={value!r} is not one of {', '.join(_ON)})" if unknown else ""
        raise PermissionError(
            f"solutions are off{why}: write your own, or set {SOLUTIONS_ENV}=1 to use the "
            "package's solution"
        )
    return ex.solution


def _exercise(name: str) -> Exercise:
    if name not in EXERCISES:
        raise KeyError(f"no exercise {name!r}; exercises are {sorted(EXERCISES)}")
    return EXERCISES[name]


def _first_line(exc: BaseException) -> str:
    """The error's first line, without torch's advice on anomaly detection."""
    return (str(exc).strip().splitlines() or [""])[0].split(" Hint: ")[0]


@dataclass
class CheckResult:
    """What :func:`check` found: passed, and one line per probe.

    Chapter: 09_exercises
    """

    name: str
    passed: bool
    lines: list[str]

    def __str__(self) -> str:
        head = f"exercise '{self.name}': " + ("all checks pass" if self.passed else "not yet")
        return "\n".join([head, *self.lines])

    def _repr_markdown_(self) -> str:
        return "\n".join(
            ["**" + str(self).splitlines()[0] + "**", "", *(f"- {x}" for x in self.lines)]
        )


def value_tolerance(cfg: LossConfig) -> float:
    """How far a right answer's value may be from the solution's: the solution's distances are
    sqrt(d^2 + eps) with ``cfg.distance_eps`` (smooth at 0), a plain norm (``torch.cdist``,
    ``Tensor.norm``) gives d, at most sqrt(eps) less; a loss adds up at most four distances
    (the triplet exercise). Far below what any wrong answer misses by.

    Chapter: 09_exercises
    """
    return 1e-9 + 4 * math.sqrt(cfg.distance_eps)


def check(name: str, fn: ContrastiveLoss, seed: int = 0, rtol: float = 1e-6) -> CheckResult:
    """Compare ``fn`` with the solution of exercise ``name`` on each probe: the value (within
    ``rtol`` and :func:`value_tolerance`) and the gradients with respect to both latents.
    Never raises for a wrong or unfinished answer; it says what is wrong: "looks like: ..."
    when one of the exercise's mistakes (:class:`Mistake`) gives the answer's value on
    every probe, else each failing probe's hint.

    Chapter: 09_exercises
    """
    ex = _exercise(name)
    atol = value_tolerance(ex.cfg)
    lines: list[str] = []
    passed = True
    seen: list[tuple[torch.Tensor, ...]] = []  # every probe's (z1, z2, same, value got)
    wrong_values: list[tuple[int, Probe, float, float]] = []  # their lines are written last
    g = torch.Generator().manual_seed(seed)
    for probe in ex.probes:
        z1, z2, same = probe.make(g)
        a1, a2 = z1.clone().requires_grad_(), z2.clone().requires_grad_()
        want = ex.solution(a1, a2, same, ex.cfg)
        want.backward()
        b1, b2 = z1.clone().requires_grad_(), z2.clone().requires_grad_()
        try:
            got = fn(b1, b2, same, ex.cfg)
        except NotImplementedError:
            return CheckResult(
                name, False, ["not implemented yet: replace the `raise NotImplementedError`"]
            )
        except Exception as exc:  # a student's bug: report it, do not crash the notebook
            return CheckResult(
                name, False, [f"{probe.description}: raised {exc.__class__.__name__}: {exc}"]
            )
        if not isinstance(got, torch.Tensor) or got.numel() != 1:
            return CheckResult(
                name, False, ["the loss must return a scalar tensor (mean over the batch)"]
            )
        seen.append((z1, z2, same, got.detach().double()))
        if not torch.allclose(got.detach().double(), want.detach(), rtol=rtol, atol=atol):
            passed = False
            wrong_values.append((len(lines), probe, want.item(), got.item()))
            lines.append("")
            continue
        if not got.requires_grad:
            passed = False
            lines.append(
                f"✗ {probe.description}: the value is right but carries no gradient (avoid .item(), numpy)"
            )
            continue
        try:
            got.backward()
        except Exception as exc:  # e.g. an in-place edit of a tensor autograd saved
            passed = False
            lines.append(
                f"✗ {probe.description}: the value is right, its backward pass raised "
                f"{exc.__class__.__name__}: {_first_line(exc)} (an in-place operation such as "
                "+= or .mul_() on a tensor the loss still needs?)"
            )
            continue
        if any(g is not None and not torch.isfinite(g).all() for g in (b1.grad, b2.grad)):
            passed = False
            lines.append(
                f"✗ {probe.description}: the value is right, the gradient is not finite: a square "
                "root of a zero distance has no derivative; use torch.cdist or "
                "pitchtimbre.losses.euclidean, or add cfg.distance_eps under the root"
            )
            continue
        grads_ok = all(
            mine.grad is not None
            and torch.allclose(mine.grad.double(), ref.grad, rtol=1e-5, atol=1e-8)
            for mine, ref in ((b1, a1), (b2, a2))
        )
        if not grads_ok:
            passed = False
            lines.append(
                f"✗ {probe.description}: the value is right, the gradient is not (a detached term?)"
            )
            continue
        lines.append(f"✓ {probe.description}")
    known = _recognised(ex, seen, rtol, atol) if wrong_values else None
    for at, probe, want_value, got_value in wrong_values:
        advice = f"looks like: {known.says}" if known else f"hint: {probe.hint}"
        lines[at] = (
            f"✗ {probe.description}: expected {want_value:.6g}, got {got_value:.6g}; {advice}"
        )
    return CheckResult(name, passed, lines)


def _recognised(
    ex: Exercise, seen: list[tuple[torch.Tensor, ...]], rtol: float, atol: float
) -> Mistake | None:
    """The one mistake of ``ex`` that gives, on every probe, the value the answer gave
    (``seen``: each probe's z1, z2, same and that value). A mistake that explains only the
    probes that failed is not named: the "labels the other way round" of a student who got
    only the different-label term wrong matches the different-label probe, not the
    same-label one. Two mistakes explaining all are not told apart: the hints are given."""
    matches = []
    with torch.no_grad():
        for mistake in ex.mistakes:
            if all(
                torch.allclose(
                    got,
                    mistake.value(ex.solution, z1, z2, same, ex.cfg).double(),
                    rtol,
                    atol * z1.shape[1] ** 2 if mistake.sums_frame_pairs else atol,
                )
                for z1, z2, same, got in seen
            ):
                matches.append(mistake)
    return matches[0] if len(matches) == 1 else None


def try_loss(
    chapter,
    fn: ContrastiveLoss | None,
    label: str,
    lam: float | None = None,
    progress: bool = True,
    overrides: Mapping[str, Any] | None = None,
) -> dict:
    """Train the proposed model with contrastive loss ``fn`` (None: the poster's) for the
    profile's ``exercise_steps``, with a progress bar unless ``progress`` is False, and
    evaluate it on the held-out instruments. A diverging run is reported, not raised.
    Cached like every trained model: the key holds ``fn``'s module, name and code (see
    :func:`pitchtimbre.training.contrastive_identity`), so renaming or editing it retrains.

    ``lam`` sets both contrastive weights; ``overrides`` changes any other setting, as dotted
    fields of the chapter's configuration (``{"loss.on": "sample"}``, ``{"loss.margin": 3.0}``,
    ``{"loss.lambda_timbre": 40.0}``), applied last.

    Chapter: 09_exercises
    """
    from .errors import TrainingDiverged
    from .experiment import evaluate_model
    from .training import trained_model

    cfg = chapter.config.with_overrides({"train.steps": chapter.config.exercise_steps})
    if lam is not None:
        cfg = cfg.with_overrides({"loss.lambda_pitch": lam, "loss.lambda_timbre": lam})
    if overrides:
        cfg = cfg.with_overrides(dict(overrides))
    ds = chapter.dataset()
    try:
        result = trained_model(cfg, ds, contrastive_fn=fn, progress=progress)
    except TrainingDiverged as exc:
        return {"label": label, "diverged": str(exc)}
    metrics = evaluate_model(result.model, ds.heldout(), cfg)
    return {"label": label, "metrics": metrics, "history": result.history}


def comparison_table(rows: list[dict]) -> str:
    """A markdown table of :func:`try_loss` results side by side.

    Chapter: 09_exercises
    """
    head = (
        "| loss | pitch dens. ↓ | pitch ratio ↑ | timbre dens. ↓ | timbre ratio ↑ | "
        "kNN pitch←z^p | instr.←z^t | pitch←z^t ↓ | instr.←z^p ↓ | KL pitch (last) |"
    )
    lines = [head, "|" + "---|" * 10]
    for r in rows:
        if "diverged" in r:
            lines.append(f"| {r['label']} | diverged |" + " |" * 8)
            continue
        m = r["metrics"]
        p, t = m["pitch"], m["timbre"]
        cells = [
            r["label"],
            f"{p['denseness']:.2f}",
            f"{p['ratio']:.2f}",
            f"{t['denseness']:.2f}",
            f"{t['ratio']:.2f}",
            f"{p['probe']['pitch']:.2f}",
            f"{t['probe']['instrument']:.2f}",
            f"{t['probe']['pitch']:.2f}",
            f"{p['probe']['instrument']:.2f}",
            f"{r['history'][-1]['kl_pitch']:.1f}",
        ]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)
