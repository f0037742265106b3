from __future__ import annotations

import itertools
import warnings

import numpy as np
import pytest

from pitchtimbre import viz


def blobs(n_per: int = 100, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Three well separated clusters in 8 dimensions."""
    rng = np.random.default_rng(seed)
    centres = np.eye(3, 8) * 20.0
    labels = np.repeat(np.arange(3), n_per)
    return centres[labels] + rng.normal(size=(len(labels), 8)), labels


def nearest_label_accuracy(points: np.ndarray, labels: np.ndarray) -> float:
    d = ((points[:, None] - points[None]) ** 2).sum(-1)
    np.fill_diagonal(d, np.inf)
    return float((labels[d.argmin(1)] == labels).mean())


def test_pca_projection_keeps_clusters_apart_and_fixes_its_signs():
    x, labels = blobs()
    a = viz.project_2d(x, "pca")
    b = viz.project_2d(-x, "pca")  # the same cloud mirrored: the picture must not flip
    assert a.shape == (300, 2)
    assert np.allclose(a, b)
    assert nearest_label_accuracy(a, labels) == 1.0


def test_umap_of_small_data_is_given_exact_distances(monkeypatch):
    import umap
    from scipy.spatial.distance import cdist

    seen = {}
    real = umap.UMAP

    class Spy(real):
        def fit_transform(self, X, *args, **kwargs):
            seen["metric"], seen["X"] = self.metric, X
            return np.zeros((len(X), 2))

    monkeypatch.setattr(umap, "UMAP", Spy)
    x, _ = blobs(n_per=20)
    x[1] = x[0]  # a duplicate note: distance 0, as the exact path gives it
    viz.project_2d(x, "umap", seed=0)
    assert seen["metric"] == "precomputed"
    assert np.allclose(seen["X"], cdist(x, x), atol=1e-12)
    assert seen["X"][0, 1] == 0.0 and np.array_equal(seen["X"], seen["X"].T)
    monkeypatch.setattr(viz, "UMAP_EXACT_BELOW", 10)  # more points: UMAP's own search
    viz.project_2d(x, "umap", seed=0)
    assert seen["metric"] == "euclidean" and seen["X"].shape == x.shape


def test_umap_projection_of_small_data_is_seeded_and_keeps_clusters_apart():
    x, labels = blobs()
    assert len(x) < viz.UMAP_EXACT_BELOW  # the exact path, with scipy's distances
    with warnings.catch_warnings():
        warnings.simplefilter("error", UserWarning)  # a chapter's output shows no warning
        a = viz.project_2d(x, "umap", seed=0)
    assert a.shape == (300, 2) and np.isfinite(a).all()
    assert np.array_equal(a, viz.project_2d(x, "umap", seed=0))
    assert nearest_label_accuracy(a, labels) == 1.0


def test_unknown_projection_is_refused():
    with pytest.raises(ValueError, match="method must be 'pca' or 'umap'"):
        viz.project_2d(np.zeros((4, 2)), "tsne")


def test_loss_curves_leave_the_first_steps_off_a_squashed_axis_and_name_a_fixed_term():
    import matplotlib.pyplot as plt

    steps = range(10, 1010, 10)  # 100 logged steps
    recon = [550.0 * 0.5**i + 10 + (i % 3) for i in range(100)]  # a drop that dwarfs the rest
    hist = [{"step": s, "recon": r, "kl_pitch": 5.0 + i, "sigma": 0.3}
            for i, (s, r) in enumerate(zip(steps, recon, strict=True))]  # fmt: skip
    fig = viz.plot_loss_curves({"proposed": hist}, ["recon", "kl_pitch", "sigma"])
    recon_ax, kl_ax, sigma_ax = fig.axes[:3]
    low, high = recon_ax.get_ylim()
    assert 29 < high < 35 and 8 < low < 10  # the steady part fills the axis, 550 is off the top
    assert "run off the axis" in recon_ax.get_title()
    assert kl_ax.get_ylim()[1] >= 104 and "run off" not in kl_ax.get_title()  # nothing hidden
    assert sigma_ax.get_title().endswith("(fixed at 0.3)")
    units = [ax.get_ylabel() for ax in (recon_ax, kl_ax, sigma_ax)]
    assert units == ["nats per frame", "nats per frame", "log magnitude (normalised)"]
    plt.close(fig)


def test_pca_of_fewer_points_or_dimensions_than_two_is_padded():
    assert np.array_equal(viz.project_2d(np.ones((1, 3)), "pca"), np.zeros((1, 2)))
    line = viz.project_2d(np.arange(5.0)[:, None], "pca")  # one dimension: a line
    assert line.shape == (5, 2) and np.array_equal(line[:, 1], np.zeros(5))
    assert np.allclose(np.abs(line[:, 0]), [2, 1, 0, 1, 2])
    with pytest.raises(ValueError, match=r"points \[N, D\].*shape \(0, 3\)"):
        viz.project_2d(np.ones((0, 3)), "pca")


def test_pair_examples_leave_out_a_kind_the_batch_lacks():
    import matplotlib.pyplot as plt
    import torch

    from pitchtimbre.config import FeatureConfig, PairConfig
    from pitchtimbre.data.pairs import PairSampler

    inst = torch.arange(4).repeat_interleave(6)
    pitch = torch.arange(6).repeat(4) + 60
    batch = PairSampler(pitch, inst, PairConfig(batch_size=8, proportions=(0, 1, 1, 1)), 0).sample()
    assert not (batch.kind == 0).any()
    kinds = ["same both", "same pitch", "same instrument", "different both"]
    features = torch.randn(24, 5, 4)
    fig = viz.plot_pair_examples(features, batch, kinds, FeatureConfig(), per_kind=2)
    *panels, colour_bar = fig.axes
    titles = [ax.get_title() for ax in panels[::2]]
    first = panels[0]
    plt.close(fig)
    assert [t.split(":")[0] for t in titles] == [k for k in kinds[1:] for _ in range(2)]
    # the frequency axis in MIDI, as chapters 2 and 8 show it: 5 bins from C2 (36)
    assert first.get_ylabel() == "CQT bin (MIDI)"
    assert first.images[0].get_extent() == [0, 4, 35.5, 40.5]
    # one colour scale for every panel, from the lowest to the highest value shown, named
    assert colour_bar.get_ylabel() == viz.FEATURE_UNIT
    limits = {ax.images[0].get_clim() for ax in panels}
    assert len(panels) == 12 and len(limits) == 1
    shown = [ax.images[0].get_array() for ax in panels]
    assert limits.pop() == (min(a.min() for a in shown), max(a.max() for a in shown))


def test_note_spectrograms_share_one_colour_scale_and_outline_the_excerpt():
    import matplotlib.pyplot as plt

    from pitchtimbre.config import FeatureConfig

    rng = np.random.default_rng(0)
    specs = [rng.normal(size=(80, 60)) - 4, rng.normal(size=(80, 60)) + 2]  # different ranges
    fig = viz.plot_note_spectrograms(specs, ["a", "b"], FeatureConfig(), excerpt=(0.1, 0.5))
    *panels, colour_bar = fig.axes
    plt.close(fig)
    assert [ax.get_title() for ax in panels] == ["a", "b"]
    assert {ax.get_xlabel() for ax in panels} == {"time (s)"}
    limits = {ax.collections[0].get_clim() for ax in panels}
    assert limits == {(min(s.min() for s in specs), max(s.max() for s in specs))}
    assert colour_bar.get_ylabel() == "log magnitude (natural log)"
    outlined = [p.get_x() for ax in panels for p in ax.patches]
    assert outlined == pytest.approx([0.1, 0.1])


def test_the_frequency_axis_is_midi_for_a_cqt_and_band_numbers_for_mel():
    from pitchtimbre.config import FeatureConfig

    assert viz.frequency_axis(FeatureConfig(), 80) == (35.5, 115.5, "CQT bin (MIDI)")
    third = FeatureConfig(bins_per_octave=36, n_bins=36 * 4)  # a third of a semitone a bin
    low, high, _ = viz.frequency_axis(third, third.n_bins)
    assert low == pytest.approx(36 - 1 / 6) and high == pytest.approx(36 + 48 - 1 / 6)
    assert viz.frequency_axis(FeatureConfig(kind="mel"), 80) == (-0.5, 79.5, "mel band")


def test_latent_space_panels_name_a_few_labels_in_a_legend():
    import matplotlib.pyplot as plt

    x, labels = blobs(n_per=10)
    families = np.array(["brass", "organ", "piano"])[labels]
    many = np.arange(len(x)) % (viz.LEGEND_AT_MOST + 1)  # too many colours to name
    fig = viz.plot_latent_spaces(
        {"a": x, "b": -x}, {"pitch": 60 + labels, "instrument": many, "family": families}
    )
    axes = [ax for ax in fig.axes if ax.get_label() != "<colorbar>"]
    legends = {ax.get_title().split("\n")[0]: ax.get_legend() for ax in axes}
    titles = [ax.get_title() for ax in axes]
    plt.close(fig)
    assert {(ax.get_xlabel(), ax.get_ylabel()) for ax in axes} == {("PC 1", "PC 2")}
    assert legends["a, coloured by family"] is not None
    assert [t.get_text() for t in legends["a, coloured by family"].get_texts()] == [
        "brass",
        "organ",
        "piano",
    ]
    assert legends["b, coloured by family"] is None  # once, beside the first row
    assert legends["a, coloured by instrument"] is None
    assert "(one colour per instrument, 17 in all)" in titles[1]


def test_a_few_labels_get_colours_far_apart():
    import matplotlib.colors as mcolors

    ten, fourteen = viz.categorical_palette(10), viz.categorical_palette(14)
    assert len(set(ten)) == 10 and len(set(fourteen)) == 14
    # neighbouring labels never get the two shades of one tab20 hue
    hues = [mcolors.rgb_to_hsv(c)[0] for c in fourteen]
    assert all(abs(a - b) > 0.01 for a, b in itertools.pairwise(hues))
    assert len(viz.categorical_palette(28)) == 28


def test_every_metric_panel_shows_its_own_space_and_metric():
    import matplotlib.pyplot as plt

    metrics = ("denseness", "divergence", "ratio")

    def model(v: float) -> dict:  # a different number in every cell
        return {
            space: {m: v + 10 * i + 100 * k for i, m in enumerate(metrics)}
            for k, space in enumerate(("pitch", "timbre"))
        }

    results = {
        "models": {"vanilla": model(1.0), "proposed": model(2.0)},
        "poster": {"vanilla": model(3.0), "proposed": model(4.0)},
        "per_seed": [
            {"vanilla": model(5.0), "proposed": model(6.0)},
            {"vanilla": model(7.0), "proposed": model(8.0)},
        ],
    }
    fig = viz.plot_metrics(results)
    panels = [
        (
            ax.get_title(),
            [p.get_height() for p in ax.patches],
            [c.get_offsets()[:, 1].tolist() for c in ax.collections],
        )
        for ax in fig.axes
    ]
    plt.close(fig)
    expected = []
    for space in ("pitch", "timbre"):
        for metric in metrics:
            heights = [
                results[k][n][space][metric]
                for n in ("vanilla", "proposed")
                for k in ("models", "poster")
            ]
            dots = [
                [row[n][space][metric] for row in results["per_seed"]]
                for n in ("vanilla", "proposed")
            ]
            expected.append((space, metric, heights, dots))
    assert len(panels) == len(expected) == 6
    for (title, heights, dots), (space, metric, want_heights, want_dots) in zip(
        panels, expected, strict=True
    ):
        assert title.startswith(f"{space} {metric} ")
        assert heights == want_heights, title
        assert dots == want_dots, title


def test_metric_bars_show_each_model_the_results_hold():
    import matplotlib.pyplot as plt

    def space(v: float) -> dict:
        return {"denseness": v, "divergence": 2 * v, "ratio": 2.0}

    def model(v: float) -> dict:
        return {"pitch": space(v), "timbre": space(v + 1)}

    both = {
        "models": {"vanilla": model(1.0), "proposed": model(0.5)},
        "poster": {"vanilla": model(3.0), "proposed": model(2.5)},
        "per_seed": [{"seed": 0, "vanilla": model(1.1), "proposed": model(0.4)}],
        "profile": "ci",
    }
    one = {**both, "models": {"proposed": model(0.5)}, "per_seed": [{"proposed": model(0.4)}]}
    for results, names in ((both, ["vanilla", "proposed"]), (one, ["proposed"])):
        fig = viz.plot_metrics(results)
        first = fig.axes[0]  # pitch denseness: ours and the poster's bar per model
        heights = [p.get_height() for p in first.patches]
        legend = [t.get_text() for t in first.get_legend().get_texts()]
        plt.close(fig)
        assert legend == names
        assert heights == [
            v
            for n in names
            for v in (
                results["models"][n]["pitch"]["denseness"],
                results["poster"][n]["pitch"]["denseness"],
            )
        ]
