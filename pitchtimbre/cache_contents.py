"""What the package cache holds, and what in it can go.

Each entry is keyed by what produced it, so an edit never overwrites an old entry: it makes a
new one. The old ones stay, and some can never be used again: models trained by other trainer
code (another version of the package, or an edited loss or training loop), runs killed before
their first checkpoint, and the temporary files and folders of killed writes (a render killed
with its kernel leaves its notes: about 250 MB on the cpu profile). Only those are pruned.
Rendered notes and features are listed, never pruned: whether another setting will ask for
them again cannot be told.

Chapter: 05_training
"""

from __future__ import annotations

import re
import shutil
import time
from dataclasses import dataclass
from pathlib import Path

from .cache import cache_dir
from .errors import CheckpointError

PRUNE_MIN_AGE_S = 3600.0
"""Nothing written in the last hour is pruned: it may belong to a run in progress (a kernel
that imported other code, a render that has not finished)."""

_TEMPORARY_FILE = re.compile(r"^\..+\.[0-9a-f]{8}\.tmp$")  # cache.atomic_path's
_STAGING_FOLDER = re.compile(r".+\.partial-[0-9a-f]{8}$")  # a render's staging folder
KINDS = ("notes", "features", "models", "results")
"""The cache's top-level folders, in the order they are made."""


@dataclass(frozen=True)
class CacheEntry:
    """One thing in the cache: its kind (a top-level folder, or 'leftover' for a killed
    write's temporary file or folder), its path, its size, when it was last written and, for
    what can go, why.

    Chapter: 05_training
    """

    kind: str
    path: Path
    size: int
    modified: float
    stale: str | None = None


def _size_and_mtime(path: Path) -> tuple[int, float]:
    """Bytes under ``path`` and the newest modification time of it or anything in it."""
    if not path.is_dir():
        st = path.stat()
        return st.st_size, st.st_mtime
    size, newest = 0, path.stat().st_mtime
    for item in path.rglob("*"):
        try:
            st = item.lstat()
        except FileNotFoundError:  # removed while we looked: a run in progress
            continue
        newest = max(newest, st.st_mtime)
        if item.is_file() and not item.is_symlink():
            size += st.st_size
    return size, newest


def model_staleness(folder: Path) -> str | None:
    """Why the model folder can never be loaded by this package, or None when it can be
    (finished, or unfinished and resumable).

    Chapter: 05_training
    """
    from .training import CHECKPOINT_FILE, read_checkpoint, trainer_code

    ckpt = folder / CHECKPOINT_FILE
    if not ckpt.is_file():
        return "no checkpoint: its run stopped before writing one"
    try:
        state = read_checkpoint(ckpt)
    except CheckpointError as exc:
        return f"unreadable ({str(exc).removeprefix(f'{ckpt}: ')})"
    if state.get("code") != trainer_code():
        return "trained by other trainer code (another version of pitchtimbre, or edited)"
    return None


def _is_leftover(path: Path) -> bool:
    name = path.name
    if path.is_dir():
        return bool(_STAGING_FOLDER.match(name))
    return bool(_TEMPORARY_FILE.match(name))


def cache_entries(root: Path | None = None) -> list[CacheEntry]:
    """Everything in the cache (default :func:`~pitchtimbre.cache.cache_dir`), each with its
    size and, for what can go, why: models this package can never load, and the leftovers of
    killed writes. Top-level folders of other names are listed as they are.

    Chapter: 05_training
    """
    root = cache_dir() if root is None else Path(root)
    entries: list[CacheEntry] = []
    if not root.is_dir():
        return entries
    leftovers = [p for p in root.rglob(".*.tmp") if _is_leftover(p)]
    leftovers += [p for p in root.glob("*/*.partial-*") if _is_leftover(p)]
    # a temporary file inside a staging folder goes with the folder
    leftovers = [p for p in set(leftovers) if not any(a in leftovers for a in p.parents)]
    for path in sorted(leftovers):
        size, modified = _size_and_mtime(path)
        entries.append(CacheEntry("leftover", path, size, modified, "left by a killed write"))
    skip = set(leftovers)
    order = {kind: i for i, kind in enumerate(KINDS)}
    for top in sorted(root.iterdir(), key=lambda p: (order.get(p.name, len(KINDS)), p.name)):
        if top in skip:
            continue
        if not top.is_dir() or top.name not in KINDS:
            size, modified = _size_and_mtime(top)
            entries.append(CacheEntry(top.name, top, size, modified))
            continue
        for path in sorted(top.iterdir()):
            if path in skip:
                continue
            size, modified = _size_and_mtime(path)
            stale = model_staleness(path) if top.name == "models" and path.is_dir() else None
            entries.append(CacheEntry(top.name, path, size, modified, stale))
    return entries


def prune_cache(
    root: Path | None = None, dry_run: bool = False, min_age_s: float = PRUNE_MIN_AGE_S
) -> list[CacheEntry]:
    """Remove the cache entries that can go (see :func:`cache_entries`) and were last
    written more than ``min_age_s`` seconds ago; return them. ``dry_run`` removes nothing.

    Chapter: 05_training
    """
    now = time.time()
    gone = [e for e in cache_entries(root) if e.stale and now - e.modified > min_age_s]
    if not dry_run:
        for entry in gone:
            if entry.path.is_dir():
                shutil.rmtree(entry.path, ignore_errors=True)
            else:
                entry.path.unlink(missing_ok=True)
    return gone


def human_size(size: float) -> str:
    """Bytes as '512 B', '1.6 MB', '2.3 GB' (powers of 1000).

    Chapter: 05_training
    """
    units = ("B", "kB", "MB", "GB", "TB")
    step = 0
    while step < len(units) - 1 and round(size, 1) >= 1000:
        size /= 1000
        step += 1
    return f"{size:.0f} B" if step == 0 else f"{size:.1f} {units[step]}"
