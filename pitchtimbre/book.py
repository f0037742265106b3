"""What every chapter does in its first cells: pick the profile and device, seed everything,
and reach the shared data, trained models and results through the package cache.

A chapter loads a trained checkpoint when one is cached and trains it (with a fixed seed)
otherwise, so the chapters can run in any order and only the first one pays for training.

Chapter: 01_introduction
"""

from __future__ import annotations

import functools
import importlib.metadata
import json
import random
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from .cache import cache_dir, display_path
from .checkpoints import TrainResult
from .config import ExperimentConfig, profile_config
from .data.dataset import NoteDataset, load_dataset
from .machine import cpu_kernels, pick_device

BOOK_CHAPTERS: dict[str, str] = {
    "01_introduction": "Introduction: what the poster claims and how to use this book",
    "02_data": "Data: notes, spectrograms, the unseen-instrument split and pairs",
    "03_generative_model": "The generative model and its ELBO",
    "04_contrastive_loss": "The contrastive loss",
    "05_training": "Training the vanilla and the proposed VAE",
    "06_metrics": "Evaluation metrics: denseness, divergence, ratio and probes",
    "07_results": "Results: the reproduction beside the poster",
    "08_latent_explorer": "Latent explorer: swap pitch and timbre, and listen",
    "09_exercises": "Exercises for the classroom: change the loss",
}
"""Chapter file names (book/<name>.ipynb) and titles, in reading order."""

PROSE_PROFILE = "cpu"
"""The profile whose runs (seed 0) the chapters' text quotes, and the one the published book
is built on (.github/workflows/book.yml)."""


def repository_url() -> str:
    """The project's repository, from the package metadata (pyproject.toml's [project.urls]).

    Chapter: 01_introduction
    """
    for entry in importlib.metadata.metadata("pitchtimbre").get_all("Project-URL") or []:
        label, _, url = entry.partition(",")
        if label.strip().lower() == "repository":
            return url.strip()
    raise LookupError("pyproject.toml has no [project.urls] Repository entry")


def seed_everything(seed: int) -> None:
    """Seed Python, NumPy and torch (CPU and CUDA).

    Chapter: 01_introduction
    """
    random.seed(seed)
    np.random.seed(seed)  # noqa: NPY002 - seeds the legacy global RNG that libraries still use
    torch.manual_seed(seed)


@functools.lru_cache(maxsize=4)
def _dataset(config_json: str) -> NoteDataset:
    cfg = ExperimentConfig.from_dict(json.loads(config_json))
    return load_dataset(cfg.data, cfg.features)


@dataclass
class Chapter:
    """A chapter's settings and its doors into the shared cache.

    Chapter: 01_introduction
    """

    name: str
    config: ExperimentConfig
    device: torch.device

    @property
    def profile(self) -> str:
        return self.config.profile

    def dataset(self) -> NoteDataset:
        """The notes of this profile (rendered, featurised and split once, then cached)."""
        return _dataset(json.dumps(self.config.to_dict(), sort_keys=True))

    def models(self, seed: int | None = None) -> dict[str, TrainResult]:
        """Vanilla and proposed for ``seed`` (default: the profile's first seed): loaded from
        the cache, or trained now with that seed and cached for the next chapter."""
        from .experiment import model_configs
        from .parallel import trained_models

        seed = self.config.seeds[0] if seed is None else seed
        jobs = {
            name: (cfg.with_overrides({"train.seed": seed}), None)
            for name, cfg in model_configs(self.config).items()
        }
        return trained_models(jobs, self.dataset())[0]

    def results(self) -> dict:
        """The reproduction of this profile (every seed), as ``reproduce`` writes it."""
        from .experiment import reproduce

        return reproduce(self.config, self.results_dir(), progress=True, dataset=self.dataset())

    def results_dir(self) -> Path:
        return cache_dir() / "results" / self.profile


def setup_chapter(name: str, profile: str | None = None, seed: int = 0) -> Chapter:
    """Resolve the profile (``gpu`` automatically on a GPU), pick the device, seed everything
    and print one line saying so.

    Chapter: 01_introduction
    """
    if name not in BOOK_CHAPTERS:
        raise ValueError(f"unknown chapter {name!r}; chapters are {list(BOOK_CHAPTERS)}")
    cfg = profile_config(profile)
    device = pick_device(cfg.train.device)
    seed_everything(seed)
    import matplotlib.pyplot as plt

    plt.rcParams.update({"figure.dpi": 100, "savefig.dpi": 100, "axes.titlesize": 10})
    kernels = f" ({cpu_kernels()} kernels)" if device.type == "cpu" else ""
    print(
        f"{name}: profile '{cfg.profile}', device {device}{kernels}, torch {torch.__version__}, "
        f"cache {display_path(cache_dir())}"
    )
    if cfg.profile != PROSE_PROFILE:
        print(
            f"note: the text quotes figures of the '{PROSE_PROFILE}' profile (seed 0); this page "
            f"runs '{cfg.profile}', so its tables and plots will not match those figures"
        )
    return Chapter(name=name, config=cfg, device=device)
