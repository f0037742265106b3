"""Data: SoundFont rendering, the NSynth layout, features, the unseen-instrument split, pairs.

Chapter: 02_data
"""

from .dataset import DataSummary, NoteDataset, load_dataset
from .features import compute_features, load_audio, log_spectrogram, note_features
from .nsynth import (
    NoteRecord,
    download_nsynth,
    filter_notes,
    read_examples,
    safe_extract,
    verify_archive,
    write_examples,
)
from .pairs import KINDS, PairBatch, PairSampler
from .render import RenderSummary, render_soundfont, rendered_folder
from .soundfont import default_soundfont, make_renderer, read_presets
from .split import split_instruments

__all__ = [
    "KINDS",
    "DataSummary",
    "NoteDataset",
    "NoteRecord",
    "PairBatch",
    "PairSampler",
    "RenderSummary",
    "compute_features",
    "default_soundfont",
    "download_nsynth",
    "filter_notes",
    "load_audio",
    "load_dataset",
    "log_spectrogram",
    "make_renderer",
    "note_features",
    "read_examples",
    "read_presets",
    "render_soundfont",
    "rendered_folder",
    "safe_extract",
    "split_instruments",
    "verify_archive",
    "write_examples",
]
