"""What the package cache holds, and what in it can go.

Each entry is keyed by what produced it, so an edit never overwrites an old entry: it makes a
new one, and the old ones stay. Some can never be used again by anyone: runs killed before
their first checkpoint, damaged checkpoints, and the temporary files and folders of killed
writes (a render killed with its kernel leaves its notes: about 250 MB on the cpu profile).
Those are pruned. Models trained by other trainer code are pruned only when asked: the cache
(``~/.cache/pitchtimbre`` by default) is shared by every environment on the machine, so they
may be another version's, or an edit's that will be undone. Rendered notes, features,
results and symbolic links are listed, never pruned.

Chapter: 05_training
"""

from __future__ import annotations

import os
import re
import shutil
import stat
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

from .cache import cache_dir
from .errors import CheckpointError

PRUNE_MIN_AGE_S = 3600.0
"""Nothing written in the last hour is pruned: it may belong to a run in progress (a render
that has not finished, a training run before its first checkpoint)."""

OTHER_CODE = "trained by other trainer code (another version of pitchtimbre, or before an edit)"
"""Why a model that this code will not load can go, when asked: its checkpoint's code is not
:func:`~pitchtimbre.training.trainer_code`."""

_TEMPORARY_FILE = re.compile(r"^\..+\.[0-9a-f]{8}\.tmp$")  # cache.atomic_path's
_STAGING_FOLDER = re.compile(r".+\.partial-[0-9a-f]{8}$")  # a render's staging folder
KINDS = ("notes", "features", "models", "results")
"""The cache's top-level folders, in the order they are made."""


@dataclass(frozen=True)
class CacheEntry:
    """One thing in the cache: its kind (a top-level folder, or 'leftover' for a killed
    write's temporary file or folder), its path, its size (a folder's without the leftovers
    inside it, which are entries of their own), when it or anything in it was last written,
    why it can go (None: it stays) and, for an entry that stays whatever is asked, a note.

    Chapter: 05_training
    """

    kind: str
    path: Path
    size: int
    modified: float
    stale: str | None = None
    note: str | None = None


@dataclass
class Pruned:
    """What :func:`prune_cache` removed (or, on a dry run, would remove) and what it could
    not remove, with the system's reason.

    Chapter: 05_training
    """

    removed: list[CacheEntry] = field(default_factory=list)
    failed: dict[Path, str] = field(default_factory=dict)


def _size_and_mtime(path: Path, leftovers: set[Path]) -> tuple[int, float]:
    """Bytes of the regular files under ``path`` (``leftovers`` and what is in them left out;
    symbolic links not followed) and the newest modification time among them."""
    st = path.lstat()
    if not stat.S_ISDIR(st.st_mode):
        return st.st_size, st.st_mtime
    size, newest = 0, st.st_mtime
    for folder, dirs, files in os.walk(path):
        dirs[:] = [d for d in dirs if Path(folder, d) not in leftovers]
        for name in dirs + files:
            item = Path(folder, name)
            if item in leftovers:
                continue
            try:
                st = item.lstat()
            except FileNotFoundError:  # removed while we looked: a run in progress
                continue
            newest = max(newest, st.st_mtime)
            if stat.S_ISREG(st.st_mode):
                size += st.st_size
    return size, newest


def _can_read(path: Path) -> bool:
    try:
        with open(path, "rb"):
            return True
    except OSError:
        return False


def model_staleness(folder: Path) -> str | None:
    """Why the model folder can go (:data:`OTHER_CODE` when another trainer code trained it),
    or None when it stays: finished or resumable with this code, or a checkpoint this user
    cannot open (another user's, in a shared cache: not ours to judge).

    Chapter: 05_training
    """
    from .training import CHECKPOINT_FILE, read_checkpoint, trainer_code

    ckpt = folder / CHECKPOINT_FILE
    if not ckpt.is_file():
        return "no checkpoint: its run stopped before writing one"
    if not _can_read(ckpt):
        return None
    try:
        state = read_checkpoint(ckpt)
    except CheckpointError as exc:  # damaged, not a checkpoint of ours, another version
        return f"unreadable ({str(exc).removeprefix(f'{ckpt}: ')})"
    if state.get("code") != trainer_code():
        return OTHER_CODE
    return None


def _find_leftovers(root: Path) -> set[Path]:
    """The temporary files and staging folders of killed writes, anywhere in the cache: each
    top-level folder is walked from its own path, so a kind folder that is a link to another
    disk is searched too (links further down are not followed)."""
    found = {p for p in root.iterdir() if _TEMPORARY_FILE.match(p.name) and p.is_file()}
    for top in root.iterdir():
        if not top.is_dir():
            continue
        for folder, dirs, files in os.walk(top):
            staging = [d for d in dirs if _STAGING_FOLDER.match(d)]
            found |= {Path(folder, d) for d in staging}
            dirs[:] = [d for d in dirs if d not in staging]  # what is inside goes with it
            found |= {Path(folder, f) for f in files if _TEMPORARY_FILE.match(f)}
    return found


def _entry(kind: str, path: Path, leftovers: set[Path], stale: str | None = None) -> CacheEntry:
    size, modified = _size_and_mtime(path, leftovers)
    return CacheEntry(kind, path, size, modified, stale)


def cache_entries(root: Path | None = None) -> list[CacheEntry]:
    """Everything in the cache (default :func:`~pitchtimbre.cache.cache_dir`), each with its
    size and, for what can go, why: leftovers of killed writes, and model folders this code
    will not load. An entry that vanishes while it is looked at (a render finishing) is left
    out; one that cannot be read, or a symbolic link, is listed with a note and stays.

    Chapter: 05_training
    """
    root = cache_dir() if root is None else Path(root)
    if not root.is_dir():
        return []
    leftovers = _find_leftovers(root)
    entries: list[CacheEntry] = []
    for path in sorted(leftovers):
        try:
            entries.append(_entry("leftover", path, set(), "left by a killed write"))
        except FileNotFoundError:
            continue
    order = {kind: i for i, kind in enumerate(KINDS)}
    for top in sorted(root.iterdir(), key=lambda p: (order.get(p.name, len(KINDS)), p.name)):
        if top in leftovers:
            continue
        if top.name in KINDS and top.is_dir():
            try:
                children = sorted(p for p in top.iterdir() if p not in leftovers)
            except OSError as exc:
                entries.append(CacheEntry(top.name, top, 0, 0.0, note=_unreadable(exc)))
                continue
            entries += filter(None, (_child(top.name, p, leftovers) for p in children))
        else:
            entries += filter(None, [_child(top.name, top, leftovers)])
    return entries


def _unreadable(exc: OSError) -> str:
    return f"cannot read it ({exc.strerror or exc}): kept"


def _child(kind: str, path: Path, leftovers: set[Path]) -> CacheEntry | None:
    """The entry of one path, None when it vanished while looked at."""
    try:
        if path.is_symlink():
            size, modified = _size_and_mtime(path, leftovers)
            return CacheEntry(kind, path, size, modified, note="a symbolic link: kept")
        stale = model_staleness(path) if kind == "models" and path.is_dir() else None
        return _entry(kind, path, leftovers, stale)
    except FileNotFoundError:
        return None
    except OSError as exc:
        return CacheEntry(kind, path, 0, 0.0, note=_unreadable(exc))


def _remove(path: Path) -> str | None:
    """Remove a file or a folder (links inside it are removed, never followed); the first
    error's reason, or None."""
    errors: list[str] = []

    def note(_function: object, failed: str, exc: BaseException) -> None:
        errors.append(f"{failed}: {getattr(exc, 'strerror', None) or exc}")

    if path.is_dir() and not path.is_symlink():
        if sys.version_info >= (3, 12):
            shutil.rmtree(path, onexc=note)
        else:
            shutil.rmtree(path, onerror=lambda f, p, info: note(f, p, info[1]))
    else:
        try:
            path.unlink(missing_ok=True)
        except OSError as exc:
            note(None, str(path), exc)
    return errors[0] if errors else None


def prune_cache(
    root: Path | None = None,
    dry_run: bool = False,
    other_code: bool = False,
    min_age_s: float = PRUNE_MIN_AGE_S,
) -> Pruned:
    """Remove the cache entries that can go (see :func:`cache_entries`) and were last written
    more than ``min_age_s`` seconds ago. Models trained by other trainer code go only with
    ``other_code``. ``dry_run`` removes nothing and says what would go.

    Chapter: 05_training
    """
    now = time.time()
    result = Pruned()
    for entry in cache_entries(root):  # leftovers come first: a folder's go before it
        if not entry.stale or now - entry.modified <= min_age_s:
            continue
        if entry.stale == OTHER_CODE and not other_code:
            continue
        error = None if dry_run else _remove(entry.path)
        if error:
            result.failed[entry.path] = error
        else:
            result.removed.append(entry)
    return result


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
