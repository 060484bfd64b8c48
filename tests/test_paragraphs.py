"""No wall of prose (issue 42, item 6): no paragraph of the README, the docs pages or the
notebooks' findings (``results/findings/*.md``) is longer than :data:`LIMIT` words.

A paragraph is the text between blank lines; tables (lines starting with ``|``), code blocks,
headings and HTML comments (the generated blocks' provenance lines) are not prose. A list whose
items follow each other without a blank line is one paragraph: the writers separate items by
blank lines (``tables.loose_lists``), so each item counts on its own and must be short.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
LIMIT = 120
LIST_ITEM = re.compile(r"^\s*(?:[-*+]|\d+[.)])\s+")
PAGES = ([ROOT / "README.md"] + sorted((ROOT / "docs").glob("*.md"))
         + sorted((ROOT / "results" / "findings").glob("*.md")))


def paragraphs(text: str) -> list[str]:
    """The prose paragraphs of Markdown ``text``, each as one line."""
    text = re.sub(r"<!--.*?-->", "", text, flags=re.S)
    out: list[str] = []
    current: list[str] = []
    fence = None

    def close():
        if current:
            out.append(" ".join(current))
            current.clear()

    for line in text.splitlines():
        stripped = line.strip()
        marker = re.match(r"(```|~~~)", stripped)
        if fence is not None:
            if marker and marker.group(1) == fence:
                fence = None
            continue
        if marker:
            close()
            fence = marker.group(1)
            continue
        if not stripped or stripped.startswith(("|", "#")):
            close()
            continue
        if LIST_ITEM.match(line):  # an item's marker is not a word
            stripped = LIST_ITEM.sub("", line).strip()
        current.append(stripped)
    close()
    return out


def too_long(path: Path) -> list[str]:
    return [f"{len(p.split())} words: {p[:80]}..." for p in
            paragraphs(path.read_text(encoding="utf-8")) if len(p.split()) > LIMIT]


def test_paragraphs_are_split_as_documented():
    words = lambda n: " ".join(["word"] * n)  # noqa: E731
    text = (f"# {words(200)}\n\n{words(60)}\n{words(61)}\n\n| {words(300)} |\n|---|\n\n"
            f"```\n{words(300)}\n\n{words(10)}\n```\n\n- {words(100)}\n  {words(10)}\n"
            f"- {words(100)}\n  - {words(100)}\n\n<!-- {words(300)} -->\n{words(5)}\n\n"
            f"- {words(50)}\n\n  - {words(40)}\n")
    got = [len(p.split()) for p in paragraphs(text)]
    assert got == [121, 310, 5, 50, 40]  # a tight list is one block, a loose one is not
    assert not paragraphs("~~~\nx ``` y\n~~~\n")


def test_a_long_paragraph_is_caught(tmp_path):
    page = tmp_path / "page.md"
    page.write_text("A short one.\n\n" + "word " * (LIMIT + 1) + "\n\n- " + "word " * LIMIT)
    assert len(too_long(page)) == 1


@pytest.mark.parametrize("path", PAGES, ids=lambda p: str(p.relative_to(ROOT)))
def test_no_paragraph_is_over_the_limit(path):
    long = too_long(path)
    assert not long, f"{path.relative_to(ROOT)}: paragraphs over {LIMIT} words:\n" + \
        "\n".join(long)


def test_writers_separate_list_items_by_blank_lines(tmp_path):
    from htnetlib.study import figures, tables

    assert tables.loose_lists("- a\n- b\n  - c\n\n| x |\n") == "- a\n\n- b\n\n  - c\n\n| x |\n"
    written = figures.save_findings("- one\n- two\n", "f", tmp_path).read_text()
    assert written == "- one\n\n- two\n"
