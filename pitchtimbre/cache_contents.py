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

PRUNE_MIN_AGE_S = 3600.0
"""Nothing written in the last hour is pruned: it may belong to a run in progress (a render
that has not finished, a training run before its first checkpoint)."""

OTHER_CODE = "trained by other trainer code (another version of pitchtimbre, or before an edit)"
"""Why a model that this code will not load can go, when asked: its checkpoint's code is not
:func:`~pitchtimbre.training.trainer_code`."""

MODEL_FOLDER = re.compile(r"^(vanilla|proposed)-seed-?[0-9]+-[0-9a-f]{16}$")
"""The name :func:`~pitchtimbre.training.model_dir` gives a model's folder. Only folders so
named are judged: anything else under ``models/`` (a cache pointed at a project folder, say)
is listed and kept."""
_TEMPORARY_FILE = re.compile(r"^\..+\.[0-9a-f]{8}\.tmp$")  # cache.atomic_path's
_STAGING_FOLDER = re.compile(r".+\.partial-[0-9a-f]{8}$")  # a render's staging folder
NOT_OURS = "not named as this package names a model's folder: kept"
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
    other_version: bool = False
    """Stale only to this version (another trainer code or checkpoint format): pruned when
    asked (``other_code=True``), since a version sharing the cache may load it."""


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
    symbolic links not followed, and of size 0) and the newest modification time among
    them."""
    st = path.lstat()
    if not stat.S_ISDIR(st.st_mode):
        return (st.st_size if stat.S_ISREG(st.st_mode) else 0), st.st_mtime
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


def model_staleness(folder: Path) -> tuple[str, bool] | None:
    """Why the model folder can go, and whether only to this version of the package (the
    checkpoint of another trainer code, another checkpoint format or another torch: a
    version sharing the cache may load it); None when it stays: finished or resumable with
    this code, or a checkpoint this user cannot open (another user's: not ours to judge).

    Chapter: 05_training
    """
    import zipfile

    import torch

    from .checkpoints import CHECKPOINT_FILE, checkpoint_problem, pickled_class
    from .training import trainer_code

    ckpt = folder / CHECKPOINT_FILE
    if not ckpt.is_file():
        return "no checkpoint: its run stopped before writing one", False
    if not _can_read(ckpt):
        return None
    try:  # torch.save writes a zip archive; a killed or truncated copy is not a whole one
        with zipfile.ZipFile(ckpt) as archive:
            whole = archive.testzip() is None
    except (zipfile.BadZipFile, OSError, EOFError):
        whole = False
    if not whole:
        return "a damaged checkpoint (not a whole archive)", False
    try:  # mmap: the weights stay on disk, only the fields below are read
        state = torch.load(ckpt, map_location="cpu", weights_only=True, mmap=True)
    except Exception as exc:  # a whole archive torch cannot read: a newer torch's, say
        found = pickled_class(exc)
        if found is not None:  # torch.save(model): not ours
            return f"not a pitchtimbre checkpoint (a pickled {found})", True
        return "a checkpoint this torch cannot read (another version's?)", True
    problem = checkpoint_problem(state)
    if problem is not None:
        return problem, True
    if state.get("code") != trainer_code():
        return OTHER_CODE, True
    return None


def _find_leftovers(root: Path) -> set[Path]:
    """The temporary files and staging folders of killed writes in the cache's kind folders
    (walked from their own path, so a kind folder that is a link to another disk is searched
    too; links further down are neither followed nor taken) and at its top."""
    found = {p for p in root.iterdir() if _TEMPORARY_FILE.match(p.name) and _is_file(p)}
    for kind in KINDS:
        top = root / kind
        try:
            if not top.is_dir():
                continue
        except OSError:  # a link into a folder we may not enter: listed with a note
            continue
        for folder, dirs, files in os.walk(top):
            staging = [d for d in dirs if _STAGING_FOLDER.match(d)]
            found |= {Path(folder, d) for d in staging if not os.path.islink(Path(folder, d))}
            dirs[:] = [d for d in dirs if d not in staging]  # what is inside goes with it
            found |= {Path(folder, f) for f in files if _TEMPORARY_FILE.match(f)}
    return {p for p in found if not p.is_symlink()}


def _is_file(path: Path) -> bool:
    return stat.S_ISREG(path.lstat().st_mode)


def _owner_note(path: Path) -> str | None:
    """A note when another user owns ``path`` (a shared cache): theirs to remove, not ours."""
    if not hasattr(os, "getuid"):
        return None
    owner = path.lstat().st_uid
    return None if owner == os.getuid() else f"another user's (uid {owner}): kept"


def _entry(kind: str, path: Path, leftovers: set[Path], why: tuple[str, bool] | None) -> CacheEntry:
    size, modified = _size_and_mtime(path, leftovers)
    if why is None:
        return CacheEntry(kind, path, size, modified)
    note = _owner_note(path)
    if note:
        return CacheEntry(kind, path, size, modified, note=note)
    return CacheEntry(kind, path, size, modified, why[0], other_version=why[1])


def cache_entries(root: Path | None = None) -> list[CacheEntry]:
    """Everything in the cache (default :func:`~pitchtimbre.cache.cache_dir`), each with its
    size and, for what can go, why: leftovers of killed writes, and model folders this code
    will not load. An entry that vanishes while it is looked at (a render finishing) is left
    out; one that cannot be read, another user's, or a symbolic link, is listed with a note
    and stays.

    Chapter: 05_training
    """
    root = cache_dir() if root is None else Path(root)
    if not root.is_dir():
        return []
    leftovers = _find_leftovers(root)
    entries: list[CacheEntry] = []
    for path in sorted(leftovers):
        entries += filter(None, [_look("leftover", path, set())])
    order = {kind: i for i, kind in enumerate(KINDS)}
    for top in sorted(root.iterdir(), key=lambda p: (order.get(p.name, len(KINDS)), p.name)):
        if top in leftovers:
            continue
        try:
            is_kind = top.name in KINDS and top.is_dir()
            children = sorted(p for p in top.iterdir() if p not in leftovers) if is_kind else []
        except OSError as exc:
            entries.append(CacheEntry(top.name, top, 0, 0.0, note=_unreadable(exc)))
            continue
        if not is_kind:
            entries += filter(None, [_look(top.name, top, leftovers)])
        entries += filter(None, (_look(top.name, path, leftovers) for path in children))
    return entries


def _unreadable(exc: OSError) -> str:
    return f"cannot read it ({exc.strerror or exc}): kept"


def _look(kind: str, path: Path, leftovers: set[Path]) -> CacheEntry | None:
    """The entry of one path (of a kind folder, a leftover, or at the top); None when it
    vanished while looked at; kept with a note when it is a link or cannot be read."""
    try:
        if path.is_symlink():
            size, modified = _size_and_mtime(path, leftovers)
            return CacheEntry(kind, path, size, modified, note="a symbolic link: kept")
        why = None
        if kind == "leftover":
            why = ("left by a killed write", False)
        elif kind == "models" and path.is_dir():
            if not MODEL_FOLDER.match(path.name):
                size, modified = _size_and_mtime(path, leftovers)
                return CacheEntry(kind, path, size, modified, note=NOT_OURS)
            why = model_staleness(path)
        return _entry(kind, path, leftovers, why)
    except FileNotFoundError:
        return None
    except OSError as exc:
        return CacheEntry(kind, path, 0, 0.0, note=_unreadable(exc))


def _remove(path: Path) -> str | None:
    """Remove a file or a folder (links inside it are removed, never followed); the first
    error's reason, or None."""
    errors: list[str] = []

    def note(_function: object, failed: str, exc: BaseException) -> None:
        if not isinstance(exc, FileNotFoundError):  # gone already: a second prune, say
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


def prunable(
    entries: list[CacheEntry], other_code: bool = False, min_age_s: float = PRUNE_MIN_AGE_S
) -> list[CacheEntry]:
    """The entries :func:`prune_cache` removes: those that can go, last written more than
    ``min_age_s`` seconds ago, and those stale only to this version when ``other_code``.

    Chapter: 05_training
    """
    now = time.time()
    return [
        e
        for e in entries
        if e.stale and now - e.modified > min_age_s and (other_code or not e.other_version)
    ]


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
    result = Pruned()
    for entry in prunable(cache_entries(root), other_code, min_age_s):
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
