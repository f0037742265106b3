from __future__ import annotations

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


def test_umap_projection_of_small_data_is_seeded_and_keeps_clusters_apart():
    x, labels = blobs()
    assert len(x) < viz.UMAP_EXACT_BELOW  # the exact path, with numpy's distances
    with warnings.catch_warnings():
        warnings.simplefilter("error", UserWarning)  # a chapter's output shows no warning
        a = viz.project_2d(x, "umap", seed=0)
    assert a.shape == (300, 2) and np.isfinite(a).all()
    assert np.array_equal(a, viz.project_2d(x, "umap", seed=0))
    assert nearest_label_accuracy(a, labels) == 1.0


def test_unknown_projection_is_refused():
    with pytest.raises(ValueError, match="method must be 'pca' or 'umap'"):
        viz.project_2d(np.zeros((4, 2)), "tsne")
