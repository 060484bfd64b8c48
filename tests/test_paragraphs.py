"""No wall of prose (issue 42, item 6): no paragraph of the README, the docs pages or the
notebooks' findings (``results/findings/*.md``) is longer than :data:`LIMIT` words.

A paragraph is the text between blank lines; tables (lines starting with ``|``), code blocks,
headings and HTML comments (the generated blocks' provenance lines) are not prose; each list
item, nested ones included, is a paragraph of its own.
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
# notebooks 01-04 and their findings are being rewritten as the lab's episodes
LESSONS = re.compile(r"0[1-4]_")
LESSON_REASON = "rewritten as lesson episodes (issue 42 items 1-3)"


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
        if LIST_ITEM.match(line):  # an item starts a paragraph; its marker is not a word
            close()
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
            f"- {words(100)}\n  - {words(100)}\n\n<!-- {words(300)} -->\n{words(5)}\n")
    got = [len(p.split()) for p in paragraphs(text)]
    assert got == [121, 110, 100, 100, 5]
    assert not paragraphs("~~~\nx ``` y\n~~~\n")


def test_a_long_paragraph_is_caught(tmp_path):
    page = tmp_path / "page.md"
    page.write_text("A short one.\n\n" + "word " * (LIMIT + 1) + "\n\n- " + "word " * LIMIT)
    assert len(too_long(page)) == 1


@pytest.mark.parametrize("path", PAGES, ids=lambda p: str(p.relative_to(ROOT)))
def test_no_paragraph_is_over_the_limit(path):
    long = too_long(path)
    if long and path.parent.name == "findings" and LESSONS.match(path.name):
        pytest.skip(LESSON_REASON)
    assert not long, f"{path.relative_to(ROOT)}: paragraphs over {LIMIT} words:\n" + \
        "\n".join(long)
