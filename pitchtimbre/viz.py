"""Figures: spectrograms, loss curves, the metric comparison, latent-space projections.

Every function returns a matplotlib Figure (the book displays it; ``save_figure`` writes it).

Chapter: 02_data (the first figures; each function names its own chapter)
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
import torch
from matplotlib.axes import Axes
from matplotlib.figure import Figure

from .cache import atomic_path
from .config import FeatureConfig

MODEL_COLOURS = {"vanilla": "#7f7f7f", "proposed": "#d62728"}
TERM_LABELS = {
    "recon": "reconstruction (−log p, both notes)",
    "kl_pitch": "KL pitch",
    "kl_timbre": "KL timbre",
    "contrastive_pitch": "contrastive pitch $L_c^p$",
    "contrastive_timbre": "contrastive timbre $L_c^t$",
    "sigma": "likelihood σ",
}
FEATURE_UNIT = "log magnitude (normalised)"
"""The unit of the model's features (and of the likelihood's sigma): log magnitude less the
training notes' mean, over their std (:class:`~pitchtimbre.data.NoteDataset`)."""
TERM_UNITS = {
    "recon": "nats per frame",
    "kl_pitch": "nats per frame",
    "kl_timbre": "nats per frame",
    "contrastive_pitch": "latent distance",
    "contrastive_timbre": "latent distance",
    "sigma": FEATURE_UNIT,
}
"""Each logged term's unit: the ELBO's terms per frame (summed over frequency or latent
dimensions, both notes of a pair), the contrastive terms in the latents' own distance."""


def save_figure(fig: Figure, path: Path | str, dpi: int = 120) -> Path:
    """Save ``fig`` atomically as PNG and close it.

    Chapter: 07_results
    """
    path = Path(path)
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=dpi, bbox_inches="tight", format="png")
    plt.close(fig)
    return path


WARM_UP_SHARE = 0.05
"""The share of the logged steps a loss curve's y-axis may leave off the top or bottom: the
first steps, whose losses dwarf the rest (the reconstruction starts near 550 on the cpu
profile and ends near 10)."""


def _steady_limits(values: list[np.ndarray]) -> tuple[float, float] | None:
    """Y-limits that show every curve after its first ``WARM_UP_SHARE`` of points, or None
    when the first points would squash the rest less than twofold (then all are shown)."""
    later = np.concatenate([v[int(np.ceil(len(v) * WARM_UP_SHARE)) :] for v in values])
    every = np.concatenate(values)
    if later.size == 0 or not np.isfinite(later).all():
        return None
    lo, hi = float(later.min()), float(later.max())
    span = hi - lo
    if span == 0 or (every.max() - every.min()) < 2 * span:
        return None
    return lo - 0.08 * span, hi + 0.08 * span


def plot_loss_curves(
    histories: dict[str, Sequence[dict[str, float]]], terms: Sequence[str] | None = None
) -> Figure:
    """Each logged loss term against the step, one line per model. Where the first steps'
    losses would squash the rest of a curve, its axis leaves them off (and says so); a term
    that never changes (σ when it is fixed) says that in its title.

    Chapter: 05_training
    """
    terms = list(
        terms
        or ("recon", "kl_pitch", "kl_timbre", "contrastive_pitch", "contrastive_timbre", "sigma")
    )
    cols = 3
    rows = -(-len(terms) // cols)
    fig, axes = plt.subplots(rows, cols, figsize=(4 * cols, 2.8 * rows), squeeze=False)
    for ax, term in zip(axes.flat, terms, strict=False):
        values = []
        for name, hist in histories.items():
            steps = [h["step"] for h in hist]
            values.append(np.array([h[term] for h in hist], dtype=float))
            ax.plot(steps, values[-1], label=name, color=MODEL_COLOURS.get(name))
        title = TERM_LABELS.get(term, term)
        every = np.concatenate(values) if values else np.array([])
        if every.size and np.all(every == every[0]):
            title += f" (fixed at {every[0]:.3g})"
        elif values and (limits := _steady_limits(values)) is not None:
            ax.set_ylim(*limits)
            title += "\n(the first steps run off the axis)"
        ax.set_title(title, fontsize=9)
        ax.set_xlabel("step")
        ax.set_ylabel(TERM_UNITS.get(term, ""), fontsize=8)
        ax.grid(alpha=0.3)
    for ax in list(axes.flat)[len(terms) :]:
        ax.axis("off")
    axes.flat[0].legend(fontsize=8)
    fig.tight_layout()
    return fig


def plot_metrics(results: dict) -> Figure:
    """Denseness, divergence and their ratio for both spaces: ours (mean over seeds, a dot
    per seed) beside the poster's numbers, for each model the results hold (both for
    ``reproduce``, one for ``evaluate``). Compare directions, not heights across groups.

    Chapter: 07_results
    """
    metrics = ("denseness", "divergence", "ratio")
    arrows = {"denseness": "↓", "divergence": "↑", "ratio": "↑"}
    fig, axes = plt.subplots(2, 3, figsize=(11, 6))
    width = 0.38
    for r, space in enumerate(("pitch", "timbre")):
        for c, metric in enumerate(metrics):
            ax = axes[r, c]
            for j, name in enumerate(n for n in ("vanilla", "proposed") if n in results["models"]):
                ours = results["models"][name][space][metric]
                poster = results["poster"][name][space][metric]
                xs = np.array([0, 1]) + (j - 0.5) * width
                ax.bar(xs, [ours, poster], width, color=MODEL_COLOURS[name], label=name, alpha=0.85)
                seeds = [
                    row[name][space][metric] for row in results.get("per_seed", []) if name in row
                ]
                ax.scatter([xs[0]] * len(seeds), seeds, color="black", s=10, zorder=3)
            ax.set_xticks([0, 1], ["ours", "poster"])
            ax.set_title(f"{space} {metric} {arrows[metric]}", fontsize=10)
            ax.grid(axis="y", alpha=0.3)
    axes[0, 0].legend(fontsize=8)
    fig.suptitle(f"Held-out instruments, profile '{results.get('profile', '?')}'", fontsize=11)
    fig.tight_layout()
    return fig


UMAP_EXACT_BELOW = 4096
"""Below this many points UMAP finds exact neighbours from all pairwise distances, which
:func:`project_2d` computes with scipy (a [N, N] float64 matrix: 128 MiB at the limit, and
half that again while it is built). For the
held-out notes of the cpu profile (about 2,000) that halves UMAP's time, and the neighbours
are the same; above it UMAP's approximate search runs as usual."""


def project_2d(x: np.ndarray | torch.Tensor, method: str = "pca", seed: int = 0) -> np.ndarray:
    """A 2-D projection of points [N, D]: 'pca' (exact) or 'umap' (seeded; needs umap-learn;
    exact Euclidean neighbours below ``UMAP_EXACT_BELOW`` points).

    Chapter: 07_results
    """
    x = x.detach().cpu().numpy() if isinstance(x, torch.Tensor) else np.asarray(x)
    x = x.astype(np.float64)
    if x.ndim != 2 or len(x) == 0:
        raise ValueError(f"project_2d: needs points [N, D] with N >= 1, got shape {x.shape}")
    if method == "pca":
        centred = x - x.mean(0)
        _, _, vt = np.linalg.svd(centred, full_matrices=False)
        out = centred @ vt[:2].T
        out = np.pad(out, ((0, 0), (0, 2 - out.shape[1])))  # fewer than two components: 0
        # fix each axis' sign so the picture does not flip between runs
        signs = np.sign(out[np.abs(out).argmax(0), [0, 1]])
        return out * np.where(signs == 0, 1, signs)
    if method == "umap":
        import warnings

        import umap

        metric = "euclidean"
        if len(x) < UMAP_EXACT_BELOW:
            # UMAP's own exact path for small data calls its distance function once per pair
            # of points from Python; the same distances from numpy are given to it instead
            from scipy.spatial.distance import pdist, squareform

            x = squareform(pdist(x))  # exact: symmetric, 0 between equal points
            metric = "precomputed"
        reducer = umap.UMAP(
            n_components=2,
            metric=metric,
            random_state=seed,
            n_neighbors=15,
            min_dist=0.2,
            n_jobs=1,
        )
        with warnings.catch_warnings():
            # a seeded UMAP runs on one thread, and says so at every call
            warnings.filterwarnings("ignore", message="n_jobs value", category=UserWarning)
            # and, given distances, that it cannot map 2-D points back (never asked here)
            warnings.filterwarnings(
                "ignore", message="using precomputed metric", category=UserWarning
            )
            return reducer.fit_transform(x)
    raise ValueError(f"method must be 'pca' or 'umap', got {method!r}")


def categorical_palette(n: int) -> list[tuple[float, float, float]]:
    """``n`` colours for labels: matplotlib's tab10 up to 10, then tab20's 20 with its dark
    shades first (tab20 comes in pairs of one hue, dark and light, which neighbouring labels
    would get), then evenly spread hues (seaborn's husl).

    Chapter: 07_results
    """
    import seaborn as sns

    if n <= 10:
        return sns.color_palette("tab10", n)
    if n <= 20:
        tab20 = sns.color_palette("tab20", 20)
        return (tab20[::2] + tab20[1::2])[:n]
    return sns.color_palette("husl", n)


LEGEND_AT_MOST = 16
"""A categorical labelling with more labels than this gets no legend: its colours are too
close to tell apart (28 held-out instruments), and the panel title counts them."""


def plot_latent_spaces(
    spaces: dict[str, np.ndarray | torch.Tensor],
    labels: dict[str, np.ndarray | torch.Tensor],
    method: str = "pca",
    seed: int = 0,
    title: str = "",
) -> Figure:
    """A grid of 2-D projections: one row per latent space (e.g. 'vanilla pitch space'), one
    column per labelling (e.g. 'pitch', 'instrument'), coloured by label. The labelling
    named 'pitch' is continuous (viridis, with a colorbar in MIDI numbers); any other is
    categorical (one colour per label of :func:`categorical_palette`, counted in the panel
    title), with a legend beside the first row when it has at most ``LEGEND_AT_MOST``
    labels (pass names, e.g. instrument families, to have them in it).

    Chapter: 07_results
    """
    import seaborn as sns

    fig, axes = plt.subplots(
        len(spaces), len(labels), figsize=(4.6 * len(labels), 3.6 * len(spaces)), squeeze=False
    )
    for r, (space, z) in enumerate(spaces.items()):
        xy = project_2d(z, method, seed)
        for c, (label_name, lab) in enumerate(labels.items()):
            ax = axes[r, c]
            lab = lab.detach().cpu().numpy() if isinstance(lab, torch.Tensor) else np.asarray(lab)
            if label_name == "pitch":
                points = ax.scatter(xy[:, 0], xy[:, 1], c=lab, cmap="viridis", s=8, linewidths=0)
                fig.colorbar(points, ax=ax, label="MIDI pitch")
                ax.set_title(f"{space}, coloured by pitch", fontsize=9)
            else:
                n_levels = len(np.unique(lab))
                legend = n_levels <= LEGEND_AT_MOST and r == 0
                sns.scatterplot(
                    x=xy[:, 0],
                    y=xy[:, 1],
                    hue=lab,
                    hue_order=sorted(np.unique(lab).tolist()),
                    palette=categorical_palette(n_levels),
                    s=8,
                    linewidth=0,
                    ax=ax,
                    legend=legend,
                )
                if legend:
                    ax.legend(
                        title=label_name,
                        fontsize=7,
                        title_fontsize=8,
                        markerscale=1.5,
                        loc="upper left",
                        bbox_to_anchor=(1.0, 1.0),
                        frameon=False,
                    )
                ax.set_title(
                    f"{space}, coloured by {label_name}\n(one colour per {label_name}, {n_levels} in all)",
                    fontsize=9,
                )
            ax.set_xticks([])  # the projection's scale means nothing
            ax.set_yticks([])
            axis = {"pca": "PC", "umap": "UMAP"}[method]
            ax.set_xlabel(f"{axis} 1", fontsize=8)
            ax.set_ylabel(f"{axis} 2", fontsize=8)
    if title:
        fig.suptitle(title, fontsize=11)
    fig.tight_layout()
    return fig


def plot_graphical_model() -> Figure:
    """The generative model as a graphical model: X_t depends on z^p_t and z^t_t, for every
    frame t of every note (plates), with the two inference networks drawn dashed.

    Chapter: 03_generative_model
    """
    from matplotlib.patches import Circle, FancyArrowPatch, FancyBboxPatch

    fig, ax = plt.subplots(figsize=(6, 3.6))
    ax.set_xlim(0, 10)
    ax.set_ylim(0, 6)
    ax.axis("off")
    nodes = {
        "zp": (2.5, 4.2, r"$z^p_t$", "white"),
        "zt": (5.5, 4.2, r"$z^t_t$", "white"),
        "x": (4.0, 1.8, r"$x_t$", "#dddddd"),
    }
    for x, y, label, face in nodes.values():
        ax.add_patch(Circle((x, y), 0.55, facecolor=face, edgecolor="black", lw=1.5))
        ax.text(x, y, label, ha="center", va="center", fontsize=15)

    def arrow(a, b, **kw):
        (x0, y0), (x1, y1) = nodes[a][:2], nodes[b][:2]
        ax.add_patch(
            FancyArrowPatch(
                (x0, y0),
                (x1, y1),
                arrowstyle="-|>",
                mutation_scale=18,
                shrinkA=22,
                shrinkB=22,
                **kw,
            )
        )

    arrow("zp", "x", lw=1.5)
    arrow("zt", "x", lw=1.5)
    arrow("x", "zp", lw=1.0, ls="--", color="tab:blue", connectionstyle="arc3,rad=0.35")
    arrow("x", "zt", lw=1.0, ls="--", color="tab:orange", connectionstyle="arc3,rad=-0.35")
    ax.text(1.0, 2.7, r"$q_\phi(Z^p\mid X)$", color="tab:blue", fontsize=10)
    ax.text(5.9, 2.7, r"$q_\psi(Z^t\mid X)$", color="tab:orange", fontsize=10)
    ax.add_patch(FancyBboxPatch((1.4, 0.9), 5.3, 4.3, boxstyle="round,pad=0.1", fill=False, lw=1.0))
    ax.text(6.55, 1.0, r"$t = 1..T$", ha="right", fontsize=10)
    ax.add_patch(FancyBboxPatch((0.8, 0.4), 6.5, 5.3, boxstyle="round,pad=0.1", fill=False, lw=1.0))
    ax.text(7.15, 0.5, "notes", ha="right", fontsize=10)
    ax.text(
        7.8,
        4.6,
        r"$p(z^p_t)=\mathcal{N}(0, I)$" "\n" r"$p(z^t_t)=\mathcal{N}(0, I)$",
        fontsize=9,
        va="top",
    )
    ax.text(
        7.8,
        2.3,
        r"$p(x_t\mid z^p_t, z^t_t)=$" "\n" r"$\mathcal{N}(f_\theta(z^p_t, z^t_t), \sigma^2 I)$",
        fontsize=9,
        va="top",
    )
    return fig


def frequency_axis(feature_config: FeatureConfig, n_bins: int) -> tuple[float, float, str]:
    """The lower and upper edge of a spectrogram's frequency axis, and its label: MIDI
    pitches for a CQT (bin centres at pitches, edges half a bin beyond), band numbers for
    mel bands, which sit at no pitch.

    Chapter: 02_data
    """
    if feature_config.kind != "cqt":
        return -0.5, n_bins - 0.5, "mel band"  # band numbers at the centres
    half = feature_config.bin_midi(0.5) - feature_config.bin_midi(0)
    low, high = feature_config.bin_midi(0) - half, feature_config.bin_midi(n_bins - 1) + half
    return low, high, "CQT bin (MIDI)"


def draw_features(
    fig: Figure, axes: Iterable[Axes], specs: Sequence[np.ndarray], feature_config: FeatureConfig
) -> str:
    """Draw notes' features [F, T] into ``axes``, one each, on one colour scale with one
    colour bar for all: frames across, the :func:`frequency_axis` up. Returns that axis'
    label.

    Chapter: 02_data
    """
    axes = list(axes)
    low, high, freq_label = frequency_axis(feature_config, specs[0].shape[0])
    vmin, vmax = min(float(s.min()) for s in specs), max(float(s.max()) for s in specs)
    for ax, spec in zip(axes, specs, strict=True):
        image = ax.imshow(
            spec,
            origin="lower",
            aspect="auto",
            cmap="magma",
            extent=(0, spec.shape[1], low, high),
            vmin=vmin,
            vmax=vmax,
        )
    fig.colorbar(image, ax=axes, label=FEATURE_UNIT, shrink=0.8)
    return freq_label


def plot_note_spectrograms(
    specs: Sequence[np.ndarray],
    titles: Sequence[str],
    feature_config: FeatureConfig,
    excerpt: tuple[float, float] | None = None,
) -> Figure:
    """Whole notes' log spectrograms [F, frames] (:func:`~pitchtimbre.data.log_spectrogram`,
    not normalised) side by side on one colour scale: time in seconds across, note names up,
    and ``excerpt`` (start, end in seconds) outlined: the part the model sees.

    Chapter: 02_data
    """
    import librosa
    import librosa.display

    cfg = feature_config
    low, high = min(float(s.min()) for s in specs), max(float(s.max()) for s in specs)
    fig, axes = plt.subplots(
        1,
        len(specs),
        figsize=(3.3 * len(specs), 3),
        sharey=True,
        squeeze=False,
        layout="constrained",
    )
    for ax, spec, title in zip(axes[0], specs, titles, strict=True):
        image = librosa.display.specshow(
            spec,
            sr=cfg.sample_rate,
            hop_length=cfg.hop_length,
            x_axis="time",
            y_axis="cqt_note" if cfg.kind == "cqt" else "mel",
            fmin=librosa.midi_to_hz(cfg.fmin_midi),
            bins_per_octave=cfg.bins_per_octave,
            vmin=low,
            vmax=high,
            ax=ax,
        )
        ax.set_title(title, fontsize=9)
        ax.set_xlabel("time (s)")
        if excerpt is not None:
            ax.axvspan(*excerpt, fill=False, ec="white", ls="--", lw=1.5)
    fig.colorbar(image, ax=list(axes[0]), label="log magnitude (natural log)", shrink=0.9)
    return fig


def plot_pair_examples(
    features: torch.Tensor,
    batch,
    kinds: Sequence[str],
    feature_config: FeatureConfig,
    per_kind: int = 1,
) -> Figure:
    """Up to ``per_kind`` example pairs of each kind in the batch (a kind it lacks, with a
    proportion of 0, is left out), side by side, with the two flags the model sees. Each
    panel is a note's features [F, T] (:func:`draw_features`).

    Chapter: 02_data
    """
    shown = [
        (k, int(i))
        for k in range(len(kinds))
        for i in torch.nonzero(batch.kind == k).flatten()[:per_kind]
    ]
    if not shown:
        raise ValueError("plot_pair_examples: the batch holds no pair")
    fig, axes = plt.subplots(
        len(shown), 2, figsize=(7.6, 2.3 * len(shown)), squeeze=False, layout="constrained"
    )
    notes = [idx for _, i in shown for idx in (batch.first[i], batch.second[i])]
    specs = [features[n].cpu().numpy() for n in notes]
    freq_label = draw_features(fig, axes.flat, specs, feature_config)
    for row, (kind, i) in enumerate(shown):
        for ax in axes[row]:
            ax.tick_params(labelsize=7)
            ax.set_ylabel(freq_label, fontsize=8)
            if row == len(shown) - 1:
                ax.set_xlabel("frame", fontsize=8)
        flags = f"same pitch: {bool(batch.same_pitch[i])}, same instrument: {bool(batch.same_timbre[i])}"
        axes[row, 0].set_title(f"{kinds[kind]}: first note", fontsize=8)
        axes[row, 1].set_title(f"second note ({flags})", fontsize=8)
    return fig


def plot_toy_trajectories(trajectories: Sequence, max_steps: int | None = None) -> Figure:
    """The boundedness toy: the objective and the size of the means during gradient descent,
    one line per distance.

    Chapter: 04_contrastive_loss
    """
    fig, (a, b) = plt.subplots(1, 2, figsize=(10, 3.2))
    for tr in trajectories:
        n = len(tr.norm) if max_steps is None else min(max_steps, len(tr.norm))
        label = f"{tr.distance}, λ = {tr.lam:g}" + (" (diverged)" if tr.diverged else "")
        a.plot(range(n), tr.objective[:n], label=label)
        b.plot(range(n), tr.norm[:n], label=label)
    a.set_yscale("symlog")
    b.set_yscale("log")
    a.set_title("objective: KL − λ d(μ1, μ2)")
    b.set_title("size of the means ‖(μ1, μ2)‖")
    for ax in (a, b):
        ax.set_xlabel("gradient step")
        ax.grid(alpha=0.3)
    b.legend(fontsize=8)
    fig.tight_layout()
    return fig
