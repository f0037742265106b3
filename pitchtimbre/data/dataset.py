"""From a source (SoundFont or NSynth folder) to normalised feature tensors and the split.

Chapter: 02_data
"""

from __future__ import annotations

import hashlib
import json
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from ..cache import display_path, stable_hash
from ..config import DataConfig, FeatureConfig, renders_soundfont
from ..errors import ConfigError, DataError
from .nsynth import (
    NoteRecord,
    check_audio_exists,
    examples_path,
    filter_notes,
    find_nsynth_splits,
    read_examples,
)
from .render import SUMMARY_FILE, RenderSummary, rendered_folder
from .split import split_instruments


@dataclass
class DataSummary:
    """What the data step produced: printed by ``python -m pitchtimbre data``.

    Chapter: 02_data
    """

    source: str
    notes: int
    instruments_train: int
    instruments_heldout: int
    families: int
    pitch_range: tuple[int, int]
    velocities: tuple[int, ...]
    excluded: dict[str, int] = field(default_factory=dict)
    cache_paths: list[str] = field(default_factory=list)

    def lines(self) -> list[str]:
        ex = ", ".join(f"{k} {v}" for k, v in self.excluded.items() if v) or "none"
        return [
            f"source              {self.source}",
            f"notes               {self.notes}",
            f"instruments         {self.instruments_train} train / {self.instruments_heldout} held out "
            f"({self.families} families)",
            f"pitch range         MIDI {self.pitch_range[0]}..{self.pitch_range[1]}",
            f"velocities          {', '.join(map(str, self.velocities))}",
            f"excluded notes      {ex}",
            *(f"cache               {display_path(p)}" for p in self.cache_paths),
        ]


@dataclass
class NoteDataset:
    """Every usable note of a source: normalised features and labels, with the split.

    ``features`` is [N, F, T]; labels are per note. ``instrument`` indexes
    ``instrument_names``; ``is_train`` is False for the held-out ('unseen') instruments,
    which never reach a training batch.

    Chapter: 02_data
    """

    features: torch.Tensor
    pitch: torch.Tensor
    velocity: torch.Tensor
    instrument: torch.Tensor
    family: torch.Tensor
    is_train: torch.Tensor
    instrument_names: list[str]
    family_names: list[str]
    records: list[NoteRecord]
    mean: float
    std: float
    summary: DataSummary
    fingerprint: str = ""
    """A hash of what a model trained on this data sees: the features' checksums, the notes
    kept with their labels and split, and the normalisation (not file names or times). Part
    of a trained model's cache key."""
    preset_names: dict[str, str] = field(default_factory=dict)
    """instrument name -> the SoundFont preset's own name ('Harmonica'), for rendered
    sources (empty for NSynth, whose instrument names are all it has)."""

    def __len__(self) -> int:
        return len(self.records)

    def instrument_label(self, index: int, short: bool = False) -> str:
        """Instrument ``index`` as a reader knows it: 'Harmonica (reed_timgm6mb_022)', or with
        ``short`` just 'Harmonica'; the instrument name alone where no preset name is known.

        Chapter: 07_results
        """
        name = self.instrument_names[index]
        preset = self.preset_names.get(name)
        if preset is None:
            return name
        return preset if short else f"{preset} ({name})"

    def subset(self, mask: torch.Tensor) -> NoteDataset:
        """The notes where ``mask`` is True (labels keep their global indices)."""
        idx = torch.nonzero(mask).flatten()
        return NoteDataset(
            features=self.features[idx],
            pitch=self.pitch[idx],
            velocity=self.velocity[idx],
            instrument=self.instrument[idx],
            family=self.family[idx],
            is_train=self.is_train[idx],
            instrument_names=self.instrument_names,
            family_names=self.family_names,
            records=[self.records[i] for i in idx.tolist()],
            mean=self.mean,
            std=self.std,
            summary=self.summary,
            fingerprint=self.fingerprint,
            preset_names=self.preset_names,
        )

    def train(self) -> NoteDataset:
        return self.subset(self.is_train)

    def heldout(self) -> NoteDataset:
        return self.subset(~self.is_train)

    def denormalise(self, x: torch.Tensor) -> torch.Tensor:
        """Back to log magnitude (for plots and audio)."""
        return x * self.std + self.mean


def _source_folders(data: DataConfig, progress: bool) -> tuple[dict[str, Path], str]:
    """Folders to read, keyed 'all' or by NSynth split, and a description of the source."""
    if data.source == "soundfont":
        folder = rendered_folder(data.render, progress=progress)
        sf = data.render.soundfont or "TimGM6mb.sf2 (pretty_midi)"
        return {"all": folder}, f"soundfont {sf}"
    path = Path(data.source).expanduser()
    if renders_soundfont(data.source):
        render = data.render.with_overrides({"soundfont": str(path)})
        return {"all": rendered_folder(render, progress=progress)}, f"soundfont {path}"
    splits = find_nsynth_splits(path)
    if "train" in splits and data.heldout_split in splits:
        return {"train": splits["train"], "heldout": splits[data.heldout_split]}, f"nsynth {path}"
    if examples_path(path).is_file():
        return {"all": path}, f"folder {path}"
    sources = (
        "pass 'soundfont', a .sf2/.sf3 file, a folder with examples.json, or an NSynth root "
        f"holding nsynth-train/ and nsynth-{data.heldout_split}/"
    )
    if not path.exists():
        raise DataError(f"{path}: no such file or folder; {sources}")
    if path.name == "examples.json":
        raise DataError(f"{path}: pass the folder that holds it ({path.parent}), not the file")
    if "train" in splits:
        raise DataError(
            f"{path}: an NSynth root without nsynth-{data.heldout_split}/examples.json; extract "
            f"that split too, or set data.heldout_split to one it has"
        )
    raise DataError(f"{path}: not a source; {sources}")


def require_two_pitches(pitches: Sequence[int], part: str, description: str) -> None:
    """A DataError naming the source when its ``part`` notes ("held-out", "training") all
    have one pitch: the pitch space's pairs and metrics compare pitches.

    Chapter: 02_data
    """
    if len(set(pitches)) == 1:
        raise DataError(
            f"{description}: every {part} note has pitch {pitches[0]}; the pitch space's pairs "
            "and metrics compare pitches, so give the source notes of at least two pitches (a "
            "render: --pitches LO:HI with HI > LO; recorded notes: a wider data.pitch_range)"
        )


def load_dataset(
    data: DataConfig,
    features: FeatureConfig,
    progress: bool = True,
    stats: tuple[float, float] | None = None,
    all_heldout: bool = False,
) -> NoteDataset:
    """Read, filter, featurise (cached), split and normalise the notes of ``data.source``.

    Excluded notes are counted by reason in ``summary.excluded``: those the renderer left
    out, silent notes, and notes of instruments with too few notes left. Features are
    normalised with one mean and std of the training instruments, or with ``stats`` (a
    trained model's). With ``all_heldout`` every instrument is treated as unseen (to
    evaluate a trained model on another source).

    Chapter: 02_data
    """
    from .features import note_features

    if all_heldout and stats is None:
        raise ConfigError(
            "load_dataset(all_heldout=True) needs stats: the (mean, std) of the training "
            "notes of the model to evaluate (a checkpoint's 'mean' and 'std')"
        )
    folders, description = _source_folders(data, progress)
    if all_heldout and "heldout" in folders:
        # an NSynth root, to evaluate a trained model on: its official unseen instruments,
        # not the 289,205 notes of its training split
        folders = {"heldout": folders["heldout"]}
    excluded: Counter[str] = Counter()
    records: list[NoteRecord] = []
    split_of: list[str] = []
    feats_parts, peak_parts, cache_paths, checksums = [], [], [], []
    preset_names: dict[str, str] = {}
    for part, folder in folders.items():
        summary_file = folder / SUMMARY_FILE
        if summary_file.is_file():
            rendered = RenderSummary.load(folder)
            excluded.update(rendered.excluded)
            preset_names.update(rendered.instruments)
        recs = filter_notes(
            read_examples(folder, check_audio=False),
            pitch_range=data.pitch_range,
            velocities=data.velocities,
            families=data.families,
            sources=data.instrument_sources,
            where=str(examples_path(folder)),
        )
        check_audio_exists(recs, examples_path(folder))
        computed = note_features(recs, features, progress=progress)
        records += recs
        split_of += [part] * len(recs)
        feats_parts.append(computed.features)
        peak_parts.append(computed.peaks)
        cache_paths.append(str(computed.path))
        checksums.append(computed.sha256)
    feats = np.concatenate(feats_parts)
    peaks = np.concatenate(peak_parts)

    keep = peaks >= 10 ** (data.silence_db / 20)
    if (~keep).any():
        excluded["silent"] += int((~keep).sum())
    per_inst = Counter(r.instrument_str for r, k in zip(records, keep, strict=True) if k)
    small = {i for i, c in per_inst.items() if c < data.min_notes_per_instrument}
    few = np.array([r.instrument_str in small for r in records]) & keep
    if few.any():
        excluded["instrument_with_too_few_notes"] += int(few.sum())
    keep &= ~few
    idx = np.nonzero(keep)[0]
    if len(idx) == 0:
        raise DataError(f"{description}: no usable notes left (excluded: {dict(excluded)})")
    records = [records[i] for i in idx]
    split_of = [split_of[i] for i in idx]
    feats = feats[idx]

    instrument_names = sorted({r.instrument_str for r in records})
    family_of = {r.instrument_str: r.instrument_family_str for r in records}
    family_names = sorted(set(family_of.values()))
    if all_heldout:
        is_train = np.zeros(len(records), dtype=bool)
    elif folders.keys() == {"all"}:
        heldout = split_instruments(family_of, data.heldout_per_family, data.split_seed)
        is_train = np.array([r.instrument_str not in heldout for r in records])
    else:
        is_train = np.array([s == "train" for s in split_of])
        both = {r.instrument_str for r, t in zip(records, is_train, strict=True) if t} & {
            r.instrument_str for r, t in zip(records, is_train, strict=True) if not t
        }
        if both:
            raise DataError(f"{description}: instruments {sorted(both)[:3]} are in both splits")
    n_train_inst = len({r.instrument_str for r, t in zip(records, is_train, strict=True) if t})
    n_held_inst = len(instrument_names) - n_train_inst
    if all_heldout and n_held_inst < 2:
        raise DataError(
            f"{description}: needs at least two instruments to evaluate, has {n_held_inst}"
        )
    if not all_heldout and (n_train_inst < 2 or n_held_inst < 2):
        raise DataError(
            f"{description}: needs at least two training and two held-out instruments, has "
            f"{n_train_inst} and {n_held_inst}; add instruments to the source (a render: "
            "more --programs, e.g. two GM families of three)"
        )
    for part, in_part in (("held-out", ~is_train), ("training", is_train)):
        if in_part.any():  # (no training notes at all: evaluating)
            require_two_pitches(
                [r.pitch for r, k in zip(records, in_part, strict=True) if k], part, description
            )

    if stats is None:
        train_feats = feats[is_train]
        stats = (
            float(train_feats.mean(dtype=np.float64)),
            float(train_feats.std(dtype=np.float64)) or 1.0,
        )
    mean, std = stats
    inst_index = {n: i for i, n in enumerate(instrument_names)}
    fam_index = {n: i for i, n in enumerate(family_names)}
    summary = DataSummary(
        source=description,
        notes=len(records),
        instruments_train=n_train_inst,
        instruments_heldout=n_held_inst,
        families=len(family_names),
        pitch_range=(min(r.pitch for r in records), max(r.pitch for r in records)),
        velocities=tuple(sorted({r.velocity for r in records})),
        excluded=dict(sorted(excluded.items())),
        cache_paths=cache_paths,
    )
    # What the model is trained on, not where its files came from: the features' checksums,
    # the notes kept with their labels and split, and the normalisation. A copied cache
    # (other file times, so other feature cache files), a moved source folder or a
    # re-render that gives the same audio keeps its trained models.
    notes = hashlib.sha256()
    for r, train in zip(records, is_train.tolist(), strict=True):
        row = (r.note_str, r.pitch, r.velocity, r.instrument_str, r.instrument_family_str, train)
        notes.update(json.dumps(row).encode())
    fingerprint = stable_hash(
        {"features": checksums, "notes": notes.hexdigest(), "normalisation": [mean, std]}
    )
    return NoteDataset(
        features=torch.from_numpy((feats - mean) / std).float(),
        pitch=torch.tensor([r.pitch for r in records]),
        velocity=torch.tensor([r.velocity for r in records]),
        instrument=torch.tensor([inst_index[r.instrument_str] for r in records]),
        family=torch.tensor([fam_index[r.instrument_family_str] for r in records]),
        is_train=torch.from_numpy(is_train),
        instrument_names=instrument_names,
        family_names=family_names,
        records=records,
        mean=mean,
        std=std,
        summary=summary,
        fingerprint=fingerprint,
        preset_names={n: preset_names[n] for n in instrument_names if n in preset_names},
    )
