"""The book (``make book``, htnetlib.study.book): the committed notebooks as a static site.

The book is built once into a temporary folder with the command (``python -m
htnetlib.cli.book``); the tests read its pages: one per notebook, the contents in the
notebooks' order, every figure embedded, the README's links pointing at the pages, the
navigation on every page. Two pages are then opened in a headless Chromium, which must render
the expected title; that part skips, saying why, where no Chromium is installed (``apt-get
install chromium`` on Debian; ``.ci/run`` installs it; ``$CHROMIUM`` names another binary).
About 15 s.
"""

from __future__ import annotations

import html
import json
import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest

from htnetlib.cli import book as book_cli
from htnetlib.study import book

NOTEBOOKS = sorted(book.NOTEBOOKS.glob("[0-9]*.ipynb"))
BROWSERS = ("chromium", "chromium-headless-shell", "chromium-browser", "google-chrome")


def browser() -> str | None:
    """``$CHROMIUM``, else the first Chromium found on PATH (as tests/test_lab.py)."""
    named = os.environ.get("CHROMIUM")
    if named:
        return shutil.which(named)
    return next((path for path in map(shutil.which, BROWSERS) if path), None)


def text(fragment: str) -> str:
    """Text of an HTML fragment: tags dropped, entities decoded, spaces collapsed."""
    return " ".join(html.unescape(re.sub(r"<[^>]+>", " ", fragment)).split())


def png_outputs(nb: Path) -> int:
    cells = json.loads(nb.read_text())["cells"]
    return sum("image/png" in o.get("data", {}) for c in cells for o in c.get("outputs", []))


@pytest.fixture(scope="module")
def site(tmp_path_factory):
    out = tmp_path_factory.mktemp("book") / "site"
    assert book_cli.main(["--out", str(out)]) == 0
    return out


def test_every_notebook_has_a_page_in_the_contents_in_order(site, capsys):
    assert NOTEBOOKS, "no committed notebooks"
    assert sorted(p.name for p in site.glob("*.html")) == sorted(
        ["index.html", "contents.html"] + [f"{nb.stem}.html" for nb in NOTEBOOKS])
    contents = (site / "contents.html").read_text()
    listed = re.findall(r'<li><a href="([^"]+)">([^<]+)</a>', contents)
    assert [href for href, _ in listed] == [f"{nb.stem}.html" for nb in NOTEBOOKS]
    assert [html.unescape(t) for _, t in listed] == [book.notebook_title(nb) for nb in NOTEBOOKS]
    assert [t[:2] for _, t in listed] == [nb.name[:2] for nb in NOTEBOOKS]  # 01, 02, ...


def test_figures_are_embedded_and_nothing_is_executed(site):
    for nb in NOTEBOOKS:
        page = (site / f"{nb.stem}.html").read_text()
        assert len(re.findall(r'<img[^>]+src="data:image/png;base64,', page)) >= png_outputs(nb)
        assert book.notebook_title(nb) in text(page)
    assert sum(map(png_outputs, NOTEBOOKS)) > 10
    page = (site / "05_table2_confusion.html").read_text()
    assert "<table" in page and "Execution Count" not in page  # tables as committed
    assert not list(site.glob("*.ipynb"))


def test_the_readme_is_the_front_page_with_links_to_the_pages(site):
    index = (site / "index.html").read_text()
    readme = book.README.read_text()
    title = next(line[2:] for line in readme.splitlines() if line.startswith("# "))
    assert f"<title>{html.escape(title)}</title>" in index
    assert "<table>" in index and "make book" in index  # rendered Markdown, this section too
    linked = set(re.findall(r"\]\(notebooks/([\w-]+)\.ipynb\)", readme))
    assert linked and all(f'href="{stem}.html"' in index for stem in linked)
    assert not re.search(r'href="[^"]*\.ipynb', index)


def test_every_page_has_previous_contents_next(site):
    order = ["index.html", "contents.html"] + [f"{nb.stem}.html" for nb in NOTEBOOKS]
    for i, name in enumerate(order):
        page = (site / name).read_text()
        navs = re.findall(r'<nav class="book (?:top|bottom)">.*?</nav>', page, re.S)
        assert len(navs) == 2, name
        for nav in navs:
            assert 'href="contents.html"' in nav
            prev = re.search(r'href="([^"]+)"[^>]*rel="previous"', nav)
            nxt = re.search(r'href="([^"]+)"[^>]*rel="next"', nav)
            assert (prev and prev.group(1)) == (order[i - 1] if i else None), name
            assert (nxt and nxt.group(1)) == (order[i + 1] if i + 1 < len(order) else None)


def test_a_bad_out_folder_is_one_line(tmp_path, capsys):
    (tmp_path / "file").write_text("")
    assert book_cli.main(["--out", str(tmp_path / "file")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("book: error: --out") and err.count("\n") == 1


@pytest.mark.parametrize("name", ["index.html", "02_region_cropping.html"])
def test_chromium_renders_the_page(site, name):
    chromium = browser()
    if chromium is None:
        pytest.skip("no Chromium (apt-get install chromium, or set $CHROMIUM)")
    out = subprocess.run([chromium, "--headless", "--no-sandbox", "--disable-gpu",
                          "--virtual-time-budget=5000", "--dump-dom",
                          (site / name).as_uri()], capture_output=True, text=True, timeout=90)
    dom = out.stdout
    assert out.returncode == 0 and "</html>" in dom, out.stderr[-2000:]
    if name == "index.html":
        title = next(line[2:] for line in book.README.read_text().splitlines()
                     if line.startswith("# "))
    else:
        title = book.notebook_title(book.NOTEBOOKS / name.replace(".html", ".ipynb"))
    headings = [text(h) for h in re.findall(r"<h1[^>]*>(.*?)</h1>", dom, re.S)]
    assert any(h.startswith(title) for h in headings), headings
    assert re.search(r'<nav class="book top">.*contents', dom, re.S)
    if name != "index.html":
        assert re.search(r'<img[^>]+src="data:image/png', dom)
