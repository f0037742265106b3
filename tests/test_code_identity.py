"""The trainer's code in the model cache key: a statement changed retrains, a docstring,
comment or layout changed does not."""

from __future__ import annotations

import textwrap

from conftest import import_file

from pitchtimbre.code_identity import code_text, modules_digest

LOSS = textwrap.dedent(
    '''
    """A module's docstring."""

    SCALE = 2.0
    """An attribute's docstring."""


    def loss(a, b):
        """A function's docstring."""
        d = (a - b).abs()  # the distance
        return SCALE * d.mean()
    '''
)


def test_code_text_ignores_docstrings_comments_and_layout():
    reworded = (
        LOSS.replace("A function's docstring.", "Reworded, over\n    two lines.")
        .replace("# the distance", "# another comment")
        .replace("return SCALE * d.mean()", "return SCALE * d.mean()   \n\n")
        .replace('"""An attribute\'s docstring."""', "")
    )
    assert code_text(reworded) == code_text(LOSS)
    assert "docstring" not in code_text(LOSS) and "distance" not in code_text(LOSS)


def test_code_text_keeps_every_statement():
    assert code_text(LOSS.replace("SCALE = 2.0", "SCALE = 3.0")) != code_text(LOSS)
    assert code_text(LOSS.replace(".abs()", ".square()")) != code_text(LOSS)
    assert code_text(LOSS.replace("return SCALE", "return -SCALE")) != code_text(LOSS)


def test_code_text_cuts_by_position_whatever_the_characters():
    """Non-ASCII text before a comment or docstring on the same line (positions are bytes in
    the parser and characters in the tokenizer), a docstring on its function's line, and an
    f-string, which the tokenizer of Python 3.12 splits into parts."""
    source = 'def f(σ):  # σ, not s\n    x = f"{σ!r:>4} ±"  # a\n    return x\n'
    assert code_text(source) == 'def f(σ):\n    x = f"{σ!r:>4} ±"\n    return x'
    assert code_text('def g(): """One line."""\n') == "def g():"


def test_code_text_keeps_the_lines_inside_a_string_as_they_are():
    """Blank lines, trailing spaces and odd line breaks inside a string literal are what the
    program computes with: they are not layout."""
    spaced = 'T = """a\n\n  b   \nc"""  # a table\n\nU = f"""{T}\n\n"""\n'
    assert code_text(spaced) == 'T = """a\n\n  b   \nc"""\nU = f"""{T}\n\n"""'
    assert code_text(spaced) != code_text('T = """a\n  b\nc"""\nU = f"""{T}\n"""\n')
    assert code_text('T = "a\x0cb\x85c"\n') == 'T = "a\x0cb\x85c"'  # no line breaks here
    assert code_text('T = "a \\\nb"\n') == 'T = "a \\\nb"'  # a backslash-continued string


def test_modules_digest_follows_the_code_of_the_files(tmp_path):
    first = import_file(tmp_path / "a" / "first.py", LOSS)
    reworded = import_file(tmp_path / "b" / "first.py", LOSS.replace("the distance", "a comment"))
    edited = import_file(tmp_path / "c" / "first.py", LOSS.replace(".abs()", ".square()"))
    assert modules_digest([first]) == modules_digest([reworded])
    assert modules_digest([first]) != modules_digest([edited])
