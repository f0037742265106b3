"""On-disk cache: where it lives, stable hashing of settings, and atomic writes.

Everything the package caches (rendered notes, features, trained models) is keyed by a hash
of what produced it and written atomically: a write goes to a temporary file in the same
folder and is renamed into place, so a killed process leaves the previous file intact.

Chapter: 02_data
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from .errors import ConfigError

CACHE_ENV = "PITCHTIMBRE_CACHE"


def cache_dir() -> Path:
    """The cache root: ``$PITCHTIMBRE_CACHE`` or ``~/.cache/pitchtimbre``.

    Chapter: 02_data
    """
    env = os.environ.get(CACHE_ENV)
    if env:
        root = Path(env).expanduser()
        where = f"{CACHE_ENV}={env}"
        fix = f"point {CACHE_ENV} at a folder you can write, or unset it"
    else:
        base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
        root = Path(base) / "pitchtimbre"
        where = f"cache folder {root}"
        fix = f"set {CACHE_ENV} to a folder you can write"
    try:
        root.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise ConfigError(f"{where}: cannot use it as a folder ({exc.strerror}); {fix}") from None
    if not os.access(root, os.W_OK | os.X_OK):
        raise ConfigError(f"{where}: not writable; {fix}")
    return root


def stable_hash(obj: Any, length: int = 16) -> str:
    """A short sha256 of a JSON-serialisable object, independent of dict order.

    Chapter: 02_data
    """
    text = json.dumps(obj, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:length]


def _fsync_dir(folder: Path) -> None:
    """Flush a folder's entries, so that a rename survives a power cut (POSIX; elsewhere a
    no-op, since Windows cannot open a folder for syncing)."""
    if os.name != "posix":
        return
    fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _umask() -> int:
    """The process's file-creation mask (reading it means setting it: restored at once)."""
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


@contextlib.contextmanager
def atomic_path(target: Path | str) -> Iterator[Path]:
    """Yield a temporary path beside ``target``; rename it onto ``target`` only on success.

    Chapter: 02_data
    """
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent)
    os.close(fd)
    tmp_path = Path(tmp)
    try:
        yield tmp_path
        with open(tmp_path, "rb+") as fh:
            os.fsync(fh.fileno())
        # mkstemp makes the file private (0600); give it the mode a plain open() would, so a
        # render or a results folder can be shared (a teacher's notes, read by students)
        os.chmod(tmp_path, 0o666 & ~_umask())
        os.replace(tmp_path, target)
        _fsync_dir(target.parent)
    finally:
        if tmp_path.exists():
            tmp_path.unlink()


def atomic_write_bytes(target: Path | str, data: bytes) -> None:
    """Write ``data`` to ``target`` atomically.

    Chapter: 02_data
    """
    with atomic_path(target) as tmp:
        tmp.write_bytes(data)


def atomic_write_json(target: Path | str, obj: Any) -> None:
    """Write ``obj`` as indented JSON to ``target`` atomically.

    Chapter: 02_data
    """
    atomic_write_bytes(target, (json.dumps(obj, indent=2, sort_keys=False) + "\n").encode())
