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
import secrets
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from .errors import ConfigError

CACHE_ENV = "PITCHTIMBRE_CACHE"


def cache_dir() -> Path:
    """The cache root: ``$PITCHTIMBRE_CACHE``, else ``$XDG_CACHE_HOME/pitchtimbre``, else
    ``~/.cache/pitchtimbre``.

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
    # a read-only cache that already holds everything is fine: only a write can fail, and
    # says where
    return root


def display_path(path: str | os.PathLike[str]) -> str:
    """``path`` as a page shows it: relative to the working folder when it lies there or one
    level up (a chapter runs in ``book/``, the repository's cache is ``../.cache``), else
    under ``~``, else absolute. A built book then shows no path of the machine that built
    it, and a reader's own run still shows where its files are.

    Chapter: 02_data
    """
    p = Path(path).expanduser().absolute()
    here = Path.cwd()
    for base, prefix in ((here, ""), (here.parent, "../"), (Path.home(), "~/")):
        if p.is_relative_to(base) and base != base.parent:  # never relative to "/"
            return prefix + str(p.relative_to(base))
    return str(p)


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


def _create_unique(
    parent: Path, name: Callable[[str], str], create: Callable[[Path], None]
) -> Path:
    """``create`` a path in ``parent`` named ``name(random suffix)``, retrying on a clash.

    Unlike ``mkstemp`` and ``mkdtemp`` (always 0600 and 0700), ``create`` gets the mode a
    plain ``open()`` or ``mkdir`` would, the user's umask applied by the system, so a render
    or a results folder can be shared (a teacher's notes, read by students)."""
    for _ in range(100):
        path = parent / name(secrets.token_hex(4))
        try:
            create(path)
        except FileExistsError:
            continue
        return path
    raise FileExistsError(f"{parent}: no free name like {name('*')}")


def _new_temporary(target: Path) -> Path:
    """A new, empty file beside ``target`` with a unique name."""
    return _create_unique(
        target.parent,
        lambda suffix: f".{target.name}.{suffix}.tmp",
        lambda path: os.close(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)),
    )


def new_staging_folder(parent: Path, prefix: str) -> Path:
    """A new, empty folder in ``parent`` named ``prefix`` + a unique suffix, readable by
    others where the umask allows (``mkdtemp``'s 0700 would hide a shared cache).

    Chapter: 02_data
    """
    return _create_unique(parent, lambda suffix: prefix + suffix, lambda path: path.mkdir(0o777))


@contextlib.contextmanager
def atomic_path(target: Path | str) -> Iterator[Path]:
    """Yield a temporary path beside ``target``; rename it onto ``target`` only on success.

    Chapter: 02_data
    """
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp_path = _new_temporary(target)
    try:
        yield tmp_path
        with open(tmp_path, "rb+") as fh:
            os.fsync(fh.fileno())
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
