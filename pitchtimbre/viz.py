"""Figures: spectrograms, loss curves, the metric comparison, latent-space projections.

Every function returns a matplotlib Figure (the book displays it; ``save_figure`` writes it).

Chapter: 07_results
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
import torch
from matplotlib.figure import Figure

from .cache import atomic_path

MODEL_COLOURS = {"vanilla": "#7f7f7f", "proposed": "#d62728"}
TERM_LABELS = {
    "recon": "reconstruction (−log p, both notes)",
    "kl_pitch": "KL pitch",
    "kl_timbre": "KL timbre",
    "contrastive_pitch": "contrastive pitch $L_c^p$",
    "contrastive_timbre": "contrastive timbre $L_c^t$",
    "sigma": "likelihood σ",
}


def save_figure(fig: Figure, path: Path | str, dpi: int = 120) -> Path:
    """Save ``fig`` atomically as PNG and close it.

    Chapter: 07_results
    """
    path = Path(path)
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=dpi, bbox_inches="tight", format="png")
    plt.close(fig)
    return path


def plot_spectrogram(
    spec: np.ndarray | torch.Tensor,
    title: str = "",
    fmin_midi: int = 36,
    hop_s: float = 0.016,
    ax: plt.Axes | None = None,
) -> Figure:
    """One log-CQT [F, T] with MIDI numbers on the frequency axis.

    Chapter: 02_data
    """
    spec = spec.detach().cpu().numpy() if isinstance(spec, torch.Tensor) else np.asarray(spec)
    if ax is None:
        fig, ax = plt.subplots(figsize=(4, 3))
    else:
        fig = ax.figure
    f, t = spec.shape
    im = ax.imshow(
        spec,
        origin="lower",
        aspect="auto",
        cmap="magma",
        extent=(0, t * hop_s, fmin_midi - 0.5, fmin_midi + f - 0.5),
    )
    ax.set_xlabel("time (s, from the first kept frame)")
    ax.set_ylabel("CQT bin (MIDI)")
    ax.set_title(title, fontsize=9)
    fig.colorbar(im, ax=ax, label="normalised log magnitude")
    return fig


def plot_loss_curves(
    histories: dict[str, Sequence[dict[str, float]]], terms: Sequence[str] | None = None
) -> Figure:
    """Each logged loss term against the step, one line per model.

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
        for name, hist in histories.items():
            steps = [h["step"] for h in hist]
            ax.plot(steps, [h[term] for h in hist], label=name, color=MODEL_COLOURS.get(name))
        ax.set_title(TERM_LABELS.get(term, term), fontsize=9)
        ax.set_xlabel("step")
        ax.grid(alpha=0.3)
    for ax in list(axes.flat)[len(terms) :]:
        ax.axis("off")
    axes.flat[0].legend(fontsize=8)
    fig.tight_layout()
    return fig


def plot_metrics(results: dict) -> Figure:
    """Denseness, divergence and their ratio for both spaces: ours (mean over seeds, a dot
    per seed) beside the poster's numbers. Compare directions, not heights across groups.

    Chapter: 07_results
    """
    metrics = ("denseness", "divergence", "ratio")
    arrows = {"denseness": "↓", "divergence": "↑", "ratio": "↑"}
    fig, axes = plt.subplots(2, 3, figsize=(11, 6))
    width = 0.38
    for r, space in enumerate(("pitch", "timbre")):
        for c, metric in enumerate(metrics):
            ax = axes[r, c]
            for j, name in enumerate(("vanilla", "proposed")):
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


def project_2d(x: np.ndarray | torch.Tensor, method: str = "pca", seed: int = 0) -> np.ndarray:
    """A 2-D projection of points [N, D]: 'pca' (exact) or 'umap' (seeded; needs umap-learn).

    Chapter: 07_results
    """
    x = x.detach().cpu().numpy() if isinstance(x, torch.Tensor) else np.asarray(x)
    x = x.astype(np.float64)
    if method == "pca":
        centred = x - x.mean(0)
        _, _, vt = np.linalg.svd(centred, full_matrices=False)
        out = centred @ vt[:2].T
        # fix each axis' sign so the picture does not flip between runs
        signs = np.sign(out[np.abs(out).argmax(0), [0, 1]])
        return out * np.where(signs == 0, 1, signs)
    if method == "umap":
        import umap

        reducer = umap.UMAP(n_components=2, random_state=seed, n_neighbors=15, min_dist=0.2)
        return reducer.fit_transform(x)
    raise ValueError(f"method must be 'pca' or 'umap', got {method!r}")


def plot_latent_spaces(
    spaces: dict[str, np.ndarray | torch.Tensor],
    labels: dict[str, np.ndarray | torch.Tensor],
    method: str = "pca",
    seed: int = 0,
    title: str = "",
) -> Figure:
    """A grid of 2-D projections: one row per latent space (e.g. 'vanilla pitch space'), one
    column per labelling (e.g. 'pitch', 'instrument'), coloured by label (seaborn).

    Chapter: 07_results
    """
    import seaborn as sns

    fig, axes = plt.subplots(
        len(spaces), len(labels), figsize=(4.2 * len(labels), 3.6 * len(spaces)), squeeze=False
    )
    for r, (space, z) in enumerate(spaces.items()):
        xy = project_2d(z, method, seed)
        for c, (label_name, lab) in enumerate(labels.items()):
            lab = lab.detach().cpu().numpy() if isinstance(lab, torch.Tensor) else np.asarray(lab)
            n_levels = len(np.unique(lab))
            palette = "viridis" if label_name == "pitch" else sns.color_palette("husl", n_levels)
            sns.scatterplot(
                x=xy[:, 0],
                y=xy[:, 1],
                hue=lab,
                palette=palette,
                s=8,
                linewidth=0,
                ax=axes[r, c],
                legend=False,
            )
            axes[r, c].set_title(f"{space}, coloured by {label_name}", fontsize=9)
            axes[r, c].set_xticks([])
            axes[r, c].set_yticks([])
    if title:
        fig.suptitle(title, fontsize=11)
    fig.tight_layout()
    return fig
