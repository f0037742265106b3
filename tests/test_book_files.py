"""The book's own files: in step with pyproject.toml, no hidden installs, no allowed errors,
a summary and at least two exercises per chapter, checks that nbval can compare."""

from __future__ import annotations

import re
import subprocess
import sys
import tomllib
from pathlib import Path

import nbformat
import pytest
import yaml

from pitchtimbre.book import BOOK_CHAPTERS, PROSE_PROFILE, repository_url

ROOT = Path(__file__).resolve().parents[1]
CONFIG = yaml.safe_load((ROOT / "_config.yml").read_text())
TOC = yaml.safe_load((ROOT / "_toc.yml").read_text())


def notebook(name: str):
    return nbformat.read(ROOT / "book" / f"{name}.ipynb", as_version=4)


def test_toc_lists_every_chapter_in_order():
    files = [TOC["root"]] + [c["file"] for c in TOC["chapters"]]
    assert [f for f in files if f != "book/references"] == [f"book/{n}" for n in BOOK_CHAPTERS]


def test_notebooks_and_config_are_in_step_with_pyproject():
    proc = subprocess.run(
        [sys.executable, "scripts/sync_book.py", "--check"],
        cwd=ROOT,
        capture_output=True,
        text=True,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    url = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["urls"]["Repository"]
    assert CONFIG["repository"]["url"] == url == repository_url()


def test_execution_never_allows_errors():
    assert CONFIG["execute"]["allow_errors"] is False
    assert CONFIG["execute"]["execute_notebooks"] in ("cache", "force", "auto")
    assert CONFIG["launch_buttons"]["colab_url"].startswith("https://colab")


def test_the_install_cell_shows_pip_and_installs_only_what_chapters_need(monkeypatch):
    """Run where pitchtimbre is missing (as on Colab), the first cell installs the package
    with its `notebook` extra, then the no-deps packages, through IPython's %pip, whose output
    shows in the cell (a subprocess's would go to the kernel's terminal). The extra leaves
    Colab's own kernel and widgets alone: no Jupyter Book, no ipykernel, ipywidgets 7.7 will do."""
    import importlib.util

    from IPython.core.interactiveshell import InteractiveShell

    meta = tomllib.loads((ROOT / "pyproject.toml").read_text())
    shell = InteractiveShell.instance()
    asked: list[str] = []
    shell.register_magic_function(asked.append, "line", "pip")
    real_find_spec = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util,
        "find_spec",
        lambda name, *a: None if name == "pitchtimbre" else real_find_spec(name, *a),
    )
    try:
        results, here = {}, {}
        for name in BOOK_CHAPTERS:
            asked.clear()
            result = shell.run_cell(notebook(name).cells[1].source)
            results[name] = (result.success, result.error_in_exec, list(asked))
        monkeypatch.setattr(importlib.util, "find_spec", real_find_spec)
        for name in BOOK_CHAPTERS:  # where the package is importable (this checkout's .venv)
            asked.clear()
            result = shell.run_cell(notebook(name).cells[1].source)
            here[name] = (result.success, list(asked))
    finally:
        InteractiveShell.clear_instance()  # no shell left behind for other tests' display()
    # ... the cell installs nothing: nbval and the book build run the working tree's package
    assert here == {name: (True, []) for name in BOOK_CHAPTERS}
    for name, (success, error, pip_lines) in results.items():
        assert success, (name, error)
        assert pip_lines == [
            f'install "pitchtimbre[notebook] @ git+{meta["project"]["urls"]["Repository"]}"',
            "install --no-deps " + " ".join(meta["tool"]["pitchtimbre"]["setup"]["no-deps"]),
        ]
    notebook_extra = " ".join(meta["project"]["optional-dependencies"]["notebook"])
    assert "jupyter-book" not in notebook_extra and "ipykernel" not in notebook_extra
    assert "ipywidgets>=7.7" in notebook_extra
    assert "pitchtimbre[notebook]" in meta["project"]["optional-dependencies"]["book"]


@pytest.mark.parametrize("name", list(BOOK_CHAPTERS))
def test_chapter_shape(name):
    nb = notebook(name)
    badge = "[![Open In Colab](https://colab.research.google.com/assets/colab-badge.svg)]"
    colab = f"https://colab.research.google.com/github/{repository_url().removeprefix('https://github.com/')}"
    assert f"{badge}({colab}/blob/main/book/{name}.ipynb)" in nb.cells[0].source
    code = [c for c in nb.cells if c.cell_type == "code"]
    assert "pip" in code[0].source and "%%capture" not in code[0].source  # a visible install cell
    assert f'setup_chapter("{name}")' in code[1].source and "ImportError" in code[1].source
    text = "\n".join(c.source for c in nb.cells if c.cell_type == "markdown")
    # every chapter ends with a summary, then at least two exercises (chapter 9, whose
    # sections are exercises, with more of them)
    headings = re.findall(r"^## .*$", text, flags=re.M)
    last = "## More exercises" if name == "09_exercises" else "## Exercises"
    assert headings[-2:] == ["## Summary", last]
    exercises = text.split(last)[-1]
    assert len(re.findall(r"^\d+\. ", exercises, flags=re.M)) >= 2
    for cell in code:  # outputs are stored only where nbval compares them
        if "# NBVAL_CHECK_OUTPUT" not in cell.source:
            assert cell.outputs == []
        else:
            assert cell.outputs, "a check cell needs its stored output"


def test_there_are_stable_checks_for_nbval():
    checks = sum(
        "# NBVAL_CHECK_OUTPUT" in c.source
        for name in BOOK_CHAPTERS
        for c in notebook(name).cells
        if c.cell_type == "code"
    )
    assert checks >= 10


def test_chapters_cite_every_reference_and_only_known_ones():
    bib = (ROOT / "book" / "references.bib").read_text()
    keys = set(re.findall(r"@\w+\{(\w+),", bib))
    cited = set()
    for name in BOOK_CHAPTERS:
        for cell in notebook(name).cells:
            cited |= set(re.findall(r"\{cite:[pt]\}`([\w,]+)`", cell.source))
    assert cited and cited <= keys
    assert cited == keys, f"entries of references.bib cited nowhere: {sorted(keys - cited)}"
    assert {
        "tanaka2021",
        "kingma2014",
        "kingma2015",
        "hadsell2006",
        "engel2017",
        "luo2019",
        "mcinnes2018",
        "griffin1984",
        "schroff2015",
    } <= cited


@pytest.fixture(scope="module")
def bibliography_labels():
    """book/_ext/bibliography_labels.py, imported from where _config.yml tells Sphinx to."""
    import importlib.util

    sphinx = CONFIG["sphinx"]
    ((name, folder),) = sphinx["local_extensions"].items()
    assert sphinx["config"]["bibtex_default_style"] == "author_year_labels"
    spec = importlib.util.spec_from_file_location(name, ROOT / folder / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    assert module.STYLE_NAME == "author_year_labels"
    return module


def test_the_references_page_labels_each_entry_as_the_text_cites_it(bibliography_labels):
    from pybtex.database import parse_file

    entries = parse_file(ROOT / "book" / "references.bib").entries
    formatted = bibliography_labels.AuthorYearStyle().format_entries(entries.values())
    labels = {e.key: e.label for e in formatted}
    assert labels["tanaka2021"] == "Tanaka et al., 2021"
    assert labels["kingma2014"] == "Kingma and Welling, 2014"
    assert labels["schoerkhuber2010"] == "Schörkhuber and Klapuri, 2010"  # not SchorkhuberK10
    assert len(set(labels.values())) == len(entries)
    order = list(labels)  # sorted by surname as read, the accent ignored
    assert order.index("schoerkhuber2010") < order.index("schroff2015") < order.index("tanaka2021")


def test_equal_author_year_labels_get_a_year_suffix(bibliography_labels):
    from pybtex.database import Entry, Person

    def entry(key: str, title: str, *authors: str) -> Entry:
        e = Entry("misc", fields={"title": title, "year": "2021"})
        e.key = key
        e.persons["author"] = [Person(a) for a in authors]
        return e

    entries = [
        entry("b", "Second", "Tanaka, K.", "Bando, Y.", "Yoshii, K."),
        entry("a", "First", "Tanaka, K.", "Nishikimi, R.", "Yoshii, K."),
        entry("solo", "Alone", "Tanaka, K."),
    ]
    formatted = bibliography_labels.AuthorYearStyle().format_entries(entries)
    assert [(e.key, e.label) for e in formatted] == [
        ("solo", "Tanaka, 2021"),
        ("b", "Tanaka et al., 2021a"),
        ("a", "Tanaka et al., 2021b"),
    ]


def test_a_chapter_on_another_profile_says_its_figures_differ_from_the_text(capsys):
    import matplotlib

    from pitchtimbre.book import setup_chapter

    with matplotlib.rc_context():  # setup_chapter sets the chapters' figure settings
        setup_chapter("06_metrics", profile="ci")
        out = capsys.readouterr().out
        setup_chapter("06_metrics", profile=PROSE_PROFILE)
    assert f"the text quotes figures of the '{PROSE_PROFILE}' profile" in out
    assert "the text quotes" not in capsys.readouterr().out


def test_a_chapter_starts_every_random_generator_from_its_seed(capsys):
    """A chapter run twice draws the same numbers (Python, NumPy and torch), whatever ran
    before it in the kernel."""
    import random

    import matplotlib
    import numpy as np
    import torch

    from pitchtimbre.book import setup_chapter

    def draws() -> tuple:
        return random.random(), float(np.random.rand()), float(torch.rand(()))  # noqa: NPY002

    with matplotlib.rc_context():
        setup_chapter("06_metrics", profile="ci", seed=3)
        first = draws()
        draws()  # the generators move on ...
        setup_chapter("06_metrics", profile="ci", seed=3)  # ... and are put back
        assert draws() == first
        setup_chapter("06_metrics", profile="ci", seed=4)
        assert all(a != b for a, b in zip(draws(), first, strict=True))
    capsys.readouterr()


def test_pages_workflow_builds_and_publishes():
    wf = yaml.safe_load((ROOT / ".github" / "workflows" / "book.yml").read_text())
    steps = [
        s.get("run", "") + s.get("uses", "") for job in wf["jobs"].values() for s in job["steps"]
    ]
    assert any("bash scripts/reproduce.sh" in s for s in steps)  # the README's main job
    assert "bash scripts/build_book.sh" in (ROOT / "scripts" / "reproduce.sh").read_text()
    assert "jupyter-book build -W -n" in (ROOT / "scripts" / "build_book.sh").read_text()
    # the published pages show the runs the text quotes
    assert wf["jobs"]["build"]["env"]["PITCHTIMBRE_PROFILE"] == PROSE_PROFILE
    assert any("deploy-pages" in s for s in steps)
    on = wf.get("on", wf.get(True))
    assert "main" in on["push"]["branches"]


def test_a_chapters_results_reuse_its_loaded_notes(toy_folder, tmp_path, monkeypatch):
    """Chapter 7 loads the notes for its pictures and runs `reproduce`: one load, not two."""
    import torch
    from conftest import tiny_config

    from pitchtimbre import experiment
    from pitchtimbre.book import Chapter
    from pitchtimbre.errors import ConfigError

    monkeypatch.setenv("PITCHTIMBRE_CACHE", str(tmp_path / "cache"))
    cfg = tiny_config(str(toy_folder), steps=10).with_overrides({"seeds": (0,)})
    chapter = Chapter("07_results", cfg, torch.device("cpu"))

    def second_load(*args, **kwargs):
        raise AssertionError("reproduce loaded the notes again")

    monkeypatch.setattr(experiment, "load_dataset", second_load)
    results = chapter.results()
    assert (chapter.results_dir() / "results.json").is_file()
    assert results["data"]["fingerprint"] == chapter.dataset().fingerprint
    # the notes of another feature setting are refused, not evaluated under this config
    longer = cfg.with_overrides({"features.n_frames": 24})
    with pytest.raises(ConfigError, match=r"reproduce: the dataset given has features \(80, 32\)"):
        experiment.reproduce(longer, tmp_path / "r", progress=False, dataset=chapter.dataset())
