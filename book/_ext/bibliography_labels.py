"""Author-year labels for the book's references page, a local Sphinx extension.

The chapters cite author-year ("Tanaka et al., 2021", `bibtex_reference_style: author_year`
in `_config.yml`), but pybtex's own label styles label the same entry `[TNB+21]` on the
references page, and a surname with an accent `[SchorkhuberK10]`. This extension registers
the pybtex style `author_year_labels`: pybtex's `unsrt` entries, sorted by author, year and
title (accents in the authors' names ignored), each labelled as the text cites it.
`_config.yml` loads it (`local_extensions`) and names it (`bibtex_default_style`);
`tests/test_book_files.py` checks it against `book/references.bib`. Sphinx does not watch
this file: after editing it, run `jupyter-book clean .` (the executed chapters stay cached)
before building the book again.
"""

from __future__ import annotations

import unicodedata
from collections import Counter
from collections.abc import Iterable, Iterator
from string import ascii_lowercase

from pybtex.database import Entry, Person
from pybtex.plugin import register_plugin
from pybtex.richtext import Text
from pybtex.style.formatting.unsrt import Style as UnsrtStyle
from pybtex.style.labels import BaseLabelStyle
from pybtex.style.sorting.author_year_title import SortingStyle

STYLE_NAME = "author_year_labels"


def surname(person: Person) -> str:
    """The surname as printed, LaTeX accents decoded: 'Sch{\\"o}rkhuber' -> 'Schörkhuber'."""
    parts = person.prelast_names + person.last_names
    return Text.from_latex(" ".join(parts)).render_as("text")


def author_year(entry: Entry) -> str:
    """'Tanaka et al., 2021'; two authors are both named, one alone by surname."""
    people = entry.persons.get("author") or entry.persons.get("editor") or []
    names = [surname(p) for p in people]
    if len(names) > 2:
        who = f"{names[0]} et al."
    elif names:
        who = " and ".join(names)
    else:
        who = entry.fields.get("title", entry.key)
    return f"{who}, {entry.fields.get('year', 'n.d.')}"


def plain(latex: str) -> str:
    """LaTeX accents decoded and then dropped, for sorting: 'Sch{\\"o}rkhuber' -> 'schorkhuber'."""
    text = unicodedata.normalize("NFD", Text.from_latex(latex).render_as("text"))
    return "".join(c for c in text if not unicodedata.combining(c)).casefold()


class AuthorYearOrder(SortingStyle):
    """pybtex's author, year, title order, with 'Schörkhuber' sorted as 'Schorkhuber'."""

    def person_key(self, person: Person) -> str:
        return plain(super().person_key(person))


class AuthorYearLabels(BaseLabelStyle):
    """Labels as the text cites; equal ones get a year suffix (2021a, 2021b) in sort order."""

    def format_labels(self, sorted_entries: Iterable[Entry]) -> Iterator[str]:
        labels = [author_year(entry) for entry in sorted_entries]
        total = Counter(labels)
        seen: Counter[str] = Counter()
        for label in labels:
            if total[label] == 1:
                yield label
            else:
                yield label + ascii_lowercase[seen[label]]
                seen[label] += 1


class AuthorYearStyle(UnsrtStyle):
    """pybtex's unsrt entries, sorted by author, year and title, labelled author-year."""

    default_label_style = AuthorYearLabels
    default_sorting_style = AuthorYearOrder


def setup(app) -> dict[str, bool]:
    register_plugin("pybtex.style.formatting", STYLE_NAME, AuthorYearStyle)
    return {"parallel_read_safe": True, "parallel_write_safe": True}
