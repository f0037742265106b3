"""The built book in a real browser (Debian's headless Chromium): every chapter page loads,
with all its figures, and without error output. Needs the book built first, which
scripts/test.sh does (scripts/build_book.sh, into $PITCHTIMBRE_BOOK_OUT/_build) before this
test.

The executed chapters are read from the build's jupyter-cache, not from
_build/jupyter_execute: myst-nb writes its copy there with outputs only when it executed the
chapter, and without them when it took the outputs from the cache (a rebuild with nothing
changed), which would leave the figure and warning checks below nothing to check."""

from __future__ import annotations

import functools
import http.server
import os
import re
import shutil
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from pitchtimbre.book import BOOK_CHAPTERS

ROOT = Path(__file__).resolve().parents[1]
BUILD = ROOT / os.environ.get("PITCHTIMBRE_BOOK_OUT", ".") / "_build"
HTML = BUILD / "html"
JUPYTER_CACHE = BUILD / ".jupyter_cache"


@pytest.fixture(scope="module")
def site():
    if not (HTML / "book" / "01_introduction.html").is_file():
        pytest.fail(
            f"the book is not built in {BUILD}: run `bash scripts/build_book.sh` "
            "(scripts/test.sh does) first"
        )
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(HTML))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()


@pytest.fixture(scope="module")
def browser():
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    chromium, driver = shutil.which("chromium"), shutil.which("chromedriver")
    if not (chromium and driver):
        pytest.fail(
            "Debian's chromium and chromium-driver are missing: run `bash scripts/setup.sh --browser`"
        )
    opts = webdriver.ChromeOptions()
    opts.binary_location = chromium
    for flag in (
        "--headless=new",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-quic",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--window-size=1280,2000",
    ):
        opts.add_argument(flag)
    b = webdriver.Chrome(service=Service(driver), options=opts)
    b.set_page_load_timeout(60)
    yield b
    b.quit()


def executed_notebook(name: str):
    """Chapter `name` with the outputs the book's pages were rendered from."""
    import nbformat
    from jupyter_cache import get_cache

    source = nbformat.read(ROOT / "book" / f"{name}.ipynb", as_version=4)
    if not JUPYTER_CACHE.is_dir():
        pytest.fail(
            f"the book is not built in {BUILD}: run `bash scripts/build_book.sh` "
            "(scripts/test.sh does) first"
        )
    try:
        _, nb = get_cache(JUPYTER_CACHE).merge_match_into_notebook(source)
    except KeyError:
        pytest.fail(
            f"book/{name}.ipynb has changed since the book was built: run `jupyter-book build .`"
        )
    return nb


def figures_in_notebook(name: str) -> int:
    nb = executed_notebook(name)
    return sum(
        1
        for cell in nb["cells"]
        for out in cell.get("outputs", [])
        if "image/png" in out.get("data", {})
    )


@pytest.mark.parametrize(
    "number_and_name", list(enumerate(BOOK_CHAPTERS, start=1)), ids=list(BOOK_CHAPTERS)
)
def test_chapter_page_loads_with_figures_and_no_errors(site, browser, number_and_name):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    number, name = number_and_name
    browser.get(f"{site}/book/{name}.html")
    WebDriverWait(browser, 30).until(
        lambda b: b.execute_script("return document.readyState") == "complete"
    )
    heading = browser.find_element(By.CSS_SELECTOR, "article h1").text
    assert heading.startswith(f"{number}. "), heading
    images = browser.find_elements(By.CSS_SELECTOR, "div.cell_output img")
    assert len(images) >= figures_in_notebook(name)
    broken = browser.execute_script(
        "return Array.from(document.querySelectorAll('div.cell_output img'))"
        ".filter(i => !(i.complete && i.naturalWidth > 0)).map(i => i.src.slice(0, 80));"
    )
    assert broken == []
    errors = browser.find_elements(
        By.CSS_SELECTOR, "div.output.traceback, div.output.error, div.output.stderr"
    )
    assert [e.text[:200] for e in errors] == []
    assert "Traceback (most recent call last)" not in browser.page_source


def test_figures_exist_where_the_chapters_draw_them():
    # the chapters that draw figures do so in the build (not only in a live kernel)
    for name in (
        "02_data",
        "03_generative_model",
        "04_contrastive_loss",
        "05_training",
        "07_results",
        "08_latent_explorer",
    ):
        assert figures_in_notebook(name) >= 1, name


WARNING_LINE = re.compile(r"\b[A-Z]\w*Warning: ")


@pytest.mark.parametrize("name", list(BOOK_CHAPTERS))
def test_no_python_warning_reaches_a_chapter(name):
    # cell outputs and the saved state of widgets (whose output areas are not cells: the
    # browser check above cannot see a warning printed there)
    nb = executed_notebook(name)
    outputs = [out for cell in nb["cells"] for out in cell.get("outputs", [])]
    texts = list(strings_in([outputs, nb["metadata"].get("widgets", {})]))
    assert texts and [w for t in texts for w in WARNING_LINE.findall(t)] == []


def strings_in(tree) -> Iterator[str]:
    """Every string in nested lists and dicts, as written (a warning at the start of a line
    stays after a newline, not after JSON's '\\n', where no word boundary is)."""
    if isinstance(tree, str):
        yield tree
    elif isinstance(tree, dict):
        for value in tree.values():
            yield from strings_in(value)
    elif isinstance(tree, list):
        for value in tree:
            yield from strings_in(value)


def test_a_warning_is_found_wherever_it_starts():
    found = [
        w
        for t in strings_in({"a": ["step 1\nUserWarning: x", "b.py:3: FutureWarning: y"]})
        for w in WARNING_LINE.findall(t)
    ]
    assert found == ["UserWarning: ", "FutureWarning: "]


def test_the_explorer_has_its_static_fallback(site, browser):
    from selenium.webdriver.common.by import By

    browser.get(f"{site}/book/08_latent_explorer.html")
    players = browser.find_elements(By.TAG_NAME, "audio")
    assert len(players) >= 8  # two fixed swaps, four players each
    sources = [
        p.get_attribute("src") or p.find_element(By.TAG_NAME, "source").get_attribute("src")
        for p in players
    ]
    assert all(s.startswith("data:audio/wav") for s in sources)
    assert figures_in_notebook("08_latent_explorer") >= 2


def test_the_references_page_labels_entries_as_the_chapters_cite_them(site, browser):
    from selenium.webdriver.common.by import By

    browser.get(f"{site}/book/references.html")
    labels = [e.text for e in browser.find_elements(By.CSS_SELECTOR, "div.citation > .label")]
    entries = re.findall(r"^@", (ROOT / "book" / "references.bib").read_text(), re.M)
    assert len(labels) == len(entries)
    assert "[Tanaka et al., 2021]" in labels
    assert "[Schörkhuber and Klapuri, 2010]" in labels
    browser.get(f"{site}/book/01_introduction.html")
    cites = browser.find_elements(By.CSS_SELECTOR, "a[href^='references.html#']")
    assert "Tanaka et al., 2021" in [c.text for c in cites]
