"""The NSynth json/wav layout: one loader for NSynth itself and for rendered SoundFont notes.

A folder holds ``examples.json`` (note_str -> fields) and ``audio/<note_str>.wav``. NSynth
ships ``nsynth-train``, ``nsynth-valid`` and ``nsynth-test`` folders whose instruments do
not overlap. Rendered folders use the same field names; their family is the GM family and
their source is ``soundfont``.

Chapter: 02_data
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tarfile
import urllib.request
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

from ..cache import atomic_path, atomic_write_json
from ..errors import DataError

NSYNTH_FAMILIES: tuple[str, ...] = (
    "bass",
    "brass",
    "flute",
    "guitar",
    "keyboard",
    "mallet",
    "organ",
    "reed",
    "string",
    "synth_lead",
    "vocal",
)
NSYNTH_SOURCES: tuple[str, ...] = ("acoustic", "electronic", "synthetic")
NSYNTH_SPLITS: tuple[str, ...] = ("train", "valid", "test")
NSYNTH_URL = "https://download.magenta.tensorflow.org/datasets/nsynth/nsynth-{split}.jsonwav.tar.gz"
NSYNTH_SHA256: dict[str, str | None] = {"train": None, "valid": None, "test": None}
"""No checksum is published with the archives; a None entry makes :func:`download_nsynth`
record the sha256 of the first download beside it and verify every later use against it.
Pass ``sha256=`` to pin one you trust."""

REQUIRED_FIELDS = (
    "note_str",
    "pitch",
    "velocity",
    "instrument",
    "instrument_str",
    "instrument_family",
    "instrument_family_str",
    "instrument_source",
    "instrument_source_str",
    "sample_rate",
)


@dataclass(frozen=True)
class NoteRecord:
    """One note: NSynth's fields and the path of its wav.

    Chapter: 02_data
    """

    note_str: str
    pitch: int
    velocity: int
    instrument: int
    instrument_str: str
    instrument_family: int
    instrument_family_str: str
    instrument_source: int
    instrument_source_str: str
    sample_rate: int
    audio_path: Path

    def to_json(self) -> dict:
        d = asdict(self)
        d.pop("audio_path")
        return d


def examples_path(folder: Path | str) -> Path:
    """The ``examples.json`` of an NSynth-layout folder.

    Chapter: 02_data
    """
    return Path(folder) / "examples.json"


def read_examples(folder: Path | str, check_audio: bool = True) -> list[NoteRecord]:
    """All notes of an NSynth-layout folder, in sorted note_str order.

    Raises :class:`DataError` naming the file and what to do when ``examples.json`` is
    missing or malformed, a field is missing, or (``check_audio``) a wav is missing.

    Chapter: 02_data
    """
    folder = Path(folder)
    path = examples_path(folder)
    if not folder.is_dir():
        raise DataError(f"{folder}: no such folder; pass a folder holding examples.json and audio/")
    if not path.is_file():
        raise DataError(
            f"{path}: missing; render one with `python -m pitchtimbre render --out {folder}` "
            "or point --source at an NSynth folder (nsynth-*/examples.json)"
        )
    try:
        table = json.loads(path.read_text(encoding="utf-8-sig"))  # a BOM is tolerated
    except UnicodeDecodeError:
        raise DataError(f"{path}: not UTF-8 text; save it as UTF-8") from None
    except json.JSONDecodeError as exc:
        raise DataError(
            f"{path}: not valid JSON (line {exc.lineno}: {exc.msg}); re-extract or re-render it"
        ) from None
    if not isinstance(table, dict) or not table:
        raise DataError(f"{path}: expected a non-empty mapping note_str -> fields")
    records = []
    for key in sorted(table):
        fields = table[key]
        if not isinstance(fields, dict):
            raise DataError(f"{path}: entry {key!r} is not a mapping of fields")
        missing = [f for f in REQUIRED_FIELDS if f not in fields and f != "note_str"]
        if missing:
            raise DataError(
                f"{path}: entry {key!r} lacks field(s) {missing}; NSynth's layout needs them"
            )
        not_text = [
            f
            for f in REQUIRED_FIELDS
            if f.endswith("_str") and not isinstance(fields.get(f, ""), str)
        ]
        if not_text:
            raise DataError(
                f"{path}: entry {key!r} has field(s) {not_text} that are not text; NSynth's "
                "layout has names there"
            )
        for name in (
            "pitch",
            "velocity",
            "instrument",
            "instrument_family",
            "instrument_source",
            "sample_rate",
        ):
            _whole_number(fields[name], f"{path}: entry {key!r} has {name}")
        try:
            rec = NoteRecord(
                note_str=str(fields.get("note_str", key)),
                pitch=int(fields["pitch"]),
                velocity=int(fields["velocity"]),
                instrument=int(fields["instrument"]),
                instrument_str=str(fields["instrument_str"]),
                instrument_family=int(fields["instrument_family"]),
                instrument_family_str=str(fields["instrument_family_str"]),
                instrument_source=int(fields["instrument_source"]),
                instrument_source_str=str(fields["instrument_source_str"]),
                sample_rate=int(fields["sample_rate"]),
                audio_path=folder / "audio" / f"{fields.get('note_str', key)}.wav",
            )
        except (TypeError, ValueError) as exc:
            raise DataError(
                f"{path}: entry {key!r} has a field of the wrong type ({exc})"
            ) from None
        for name in ("pitch", "velocity"):
            if not 0 <= getattr(rec, name) <= 127:
                raise DataError(
                    f"{path}: entry {key!r} has {name} {getattr(rec, name)}, outside MIDI's 0..127"
                )
        records.append(rec)
    twice = sorted(n for n, c in Counter(r.note_str for r in records).items() if c > 1)
    if twice:
        raise DataError(
            f"{path}: {len(twice)} note_str value(s) name more than one entry, first "
            f"{twice[0]!r}; each note is one entry with a wav of its own"
        )
    if check_audio:
        check_audio_exists(records, path)
    return records


def _whole_number(value: object, what: str) -> None:
    """Refuse a label that int() would quietly change: a bool (True -> 1) or a fraction
    (60.7 -> 60). Whole floats (60.0) and digit strings pass, as NSynth's readers allow."""
    if isinstance(value, bool) or (isinstance(value, float) and not value.is_integer()):
        raise DataError(f"{what} {value!r}, not a whole number; fix that entry")


def check_audio_exists(records: Iterable[NoteRecord], source: Path) -> None:
    """Raise :class:`DataError` naming the first wav that ``source`` lists but the disk lacks.

    Chapter: 02_data
    """
    records = list(records)
    missing = [r for r in records if not r.audio_path.is_file()]
    if missing:
        more = f" (and {len(missing) - 1} more)" if len(missing) > 1 else ""
        raise DataError(
            f"{source}: names {missing[0].audio_path}, which does not exist{more}; "
            "restore the audio/ folder or remove those entries"
        )


def write_examples(folder: Path | str, records: Sequence[NoteRecord]) -> Path:
    """Write ``examples.json`` for ``records`` atomically (the last step of a render).

    Chapter: 02_data
    """
    path = examples_path(folder)
    atomic_write_json(
        path, {r.note_str: r.to_json() for r in sorted(records, key=lambda r: r.note_str)}
    )
    return path


def filter_notes(
    records: Sequence[NoteRecord],
    pitch_range: tuple[int, int] | None = None,
    velocities: Sequence[int] | None = None,
    families: Sequence[str] | None = None,
    sources: Sequence[str] | None = None,
    where: str = "source",
) -> list[NoteRecord]:
    """Notes passing every given filter. An empty result raises :class:`DataError` that
    names the filters, so a typo in a family name is not a silent empty experiment.

    Chapter: 02_data
    """
    out = []
    for r in records:
        if pitch_range is not None and not (pitch_range[0] <= r.pitch <= pitch_range[1]):
            continue
        if velocities is not None and r.velocity not in velocities:
            continue
        if families is not None and r.instrument_family_str not in families:
            continue
        if sources is not None and r.instrument_source_str not in sources:
            continue
        out.append(r)
    if not out:
        have_fams = sorted({r.instrument_family_str for r in records})
        raise DataError(
            f"{where}: no notes left after filtering (pitch_range={pitch_range}, "
            f"velocities={velocities}, families={families}, sources={sources}); "
            f"it has families {have_fams} and pitches "
            f"{min((r.pitch for r in records), default=None)}..{max((r.pitch for r in records), default=None)}"
        )
    return out


def find_nsynth_splits(root: Path | str) -> dict[str, Path]:
    """The official split folders under an NSynth root: {'train': .../nsynth-train, ...}.

    Chapter: 02_data
    """
    root = Path(root)
    return {
        s: root / f"nsynth-{s}"
        for s in NSYNTH_SPLITS
        if examples_path(root / f"nsynth-{s}").is_file()
    }


def sha256_file(path: Path, chunk: int = 1 << 20) -> str:
    """The SHA-256 of a file, read in chunks (archives take gigabytes).

    Chapter: 02_data
    """
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        while block := fh.read(chunk):
            h.update(block)
    return h.hexdigest()


def verify_archive(archive: Path, sha256: str | None) -> str:
    """Check ``archive`` against ``sha256``, or against the checksum recorded beside it
    (``<archive>.sha256``) on first use. Returns the digest; raises :class:`DataError` on a
    mismatch, naming the file and what to do.

    Chapter: 02_data
    """
    archive = Path(archive)
    if not archive.is_file():
        raise DataError(f"{archive}: archive not found")
    if sha256 is not None and not _is_sha256(sha256):
        raise DataError(
            f"the expected sha256 for {archive} must be 64 hex digits, got {sha256!r:.80}"
        )
    digest = sha256_file(archive)
    record = archive.with_name(archive.name + ".sha256")
    recorded = None
    if record.is_file():
        try:
            recorded = recorded_sha256(record)
        except DataError:
            if sha256 is None:  # nothing else to check the archive against
                raise
    expected = sha256 or recorded
    if expected is not None and digest != expected.lower():
        raise DataError(
            f"{archive}: sha256 {digest[:16]}... does not match the expected {expected[:16]}...; "
            "the download is corrupt or altered: delete it and download again"
        )
    if recorded is None or recorded.lower() != digest:  # missing, damaged, or another digest
        with atomic_path(record) as tmp:  # a killed write leaves no half record
            tmp.write_text(f"{digest}  {archive.name}\n")
    return digest


def _is_sha256(text: str) -> bool:
    return len(text) == 64 and all(c in "0123456789abcdefABCDEF" for c in text)


def recorded_sha256(record: Path) -> str:
    """The digest in a ``<archive>.sha256`` record (``sha256sum``'s format).

    Chapter: 02_data
    """
    words = record.read_text(errors="replace").split()
    if not words or not _is_sha256(words[0]):
        raise DataError(
            f"{record}: not a sha256 record (64 hex digits, then the archive's name); "
            "delete it to record the archive's digest again, or pass the expected sha256"
        )
    return words[0]


def safe_extract(archive: Path, target: Path) -> list[Path]:
    """Extract a tar archive into ``target``, refusing any member that would land outside
    it (absolute paths, ``..``, links pointing out, devices). Returns the extracted files.

    Chapter: 02_data
    """
    archive, target = Path(archive), Path(target)
    target.mkdir(parents=True, exist_ok=True)
    root = target.resolve()
    try:
        tar = tarfile.open(archive)
    except (tarfile.TarError, OSError) as exc:
        raise DataError(
            f"{archive}: not a readable tar archive ({exc}); download it again"
        ) from None
    extracted = []
    with tar:
        members = tar.getmembers()
        for m in members:
            dest = (root / m.name).resolve()
            if m.name.startswith(("/", "\\")) or not dest.is_relative_to(root):
                raise DataError(
                    f"{archive}: member {m.name!r} would be written outside {target}; refusing to extract"
                )
            if m.issym() or m.islnk():
                link = (
                    (dest.parent / m.linkname).resolve()
                    if m.issym()
                    else (root / m.linkname).resolve()
                )
                if not link.is_relative_to(root):
                    raise DataError(
                        f"{archive}: link {m.name!r} points outside {target}; refusing to extract"
                    )
            if m.ischr() or m.isblk() or m.isfifo():
                raise DataError(
                    f"{archive}: member {m.name!r} is a device or pipe; refusing to extract"
                )
        for m in members:
            if hasattr(tarfile, "data_filter"):
                tar.extract(m, root, filter="data")
            else:  # pragma: no cover - Python < 3.11.4
                tar.extract(m, root)
            if m.isfile():
                extracted.append(root / m.name)
    return extracted


def download_nsynth(split: str, dest: Path | str, sha256: str | None = None) -> Path:
    """Download and extract one NSynth split (json/wav) into ``dest/nsynth-<split>``.

    The archive is verified (see :func:`verify_archive`) and extracted with
    :func:`safe_extract`. Needs the network (e.g. on Colab); the tests never run it.

    Chapter: 02_data
    """
    if split not in NSYNTH_SPLITS:
        raise DataError(f"split: must be one of {NSYNTH_SPLITS}, got {split!r}")
    dest = Path(dest)
    folder = dest / f"nsynth-{split}"
    if examples_path(folder).is_file():
        return folder
    url = NSYNTH_URL.format(split=split)
    archive = dest / Path(url).name
    if not archive.is_file():
        from tqdm.auto import tqdm

        dest.mkdir(parents=True, exist_ok=True)
        with atomic_path(archive) as tmp, urllib.request.urlopen(url) as resp:
            total = int(resp.headers.get("Content-Length", 0)) or None
            with (
                open(tmp, "wb") as fh,
                tqdm(total=total, unit="B", unit_scale=True, desc=archive.name) as bar,
            ):
                while block := resp.read(1 << 20):
                    fh.write(block)
                    bar.update(len(block))
    verify_archive(archive, sha256 or NSYNTH_SHA256.get(split))
    staging = dest / f".nsynth-{split}.extracting"
    if staging.exists():
        shutil.rmtree(staging)
    safe_extract(archive, staging)
    inner = staging / f"nsynth-{split}"
    os.replace(inner if inner.is_dir() else staging, folder)
    if staging.exists():
        shutil.rmtree(staging)
    return folder
