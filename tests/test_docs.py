"""Every public function and class of the package names the book chapter that introduces it,
and every chapter named exists in the book."""

from __future__ import annotations

import importlib
import inspect
import pkgutil
import re
from pathlib import Path

import pitchtimbre
from pitchtimbre.book import BOOK_CHAPTERS

ROOT = Path(__file__).resolve().parents[1]
CHAPTER = re.compile(r"Chapter: (\w+)")


def public_objects():
    for info in pkgutil.walk_packages(pitchtimbre.__path__, "pitchtimbre."):
        if info.name.endswith("__main__"):
            continue
        module = importlib.import_module(info.name)
        yield info.name, None, module
        for name, obj in vars(module).items():
            if name.startswith("_") or getattr(obj, "__module__", None) != module.__name__:
                continue
            if inspect.isfunction(obj) or inspect.isclass(obj):
                yield info.name, name, obj


def test_every_public_function_names_its_chapter():
    missing = [
        f"{mod}.{name}" if name else mod
        for mod, name, obj in public_objects()
        if not CHAPTER.search(inspect.getdoc(obj) or "")
    ]
    assert not missing, f"docstrings without 'Chapter: ...': {missing}"


def test_every_named_chapter_exists():
    named = {
        m for _, _, obj in public_objects() for m in CHAPTER.findall(inspect.getdoc(obj) or "")
    }
    assert named <= set(BOOK_CHAPTERS), named - set(BOOK_CHAPTERS)
    for chapter in named:
        assert (ROOT / "book" / f"{chapter}.ipynb").is_file(), chapter
