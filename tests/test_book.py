"""The book (``make book``, htnetlib.study.book): the README, docs/ and the committed, executed
notebooks as a Jupyter Book.

The book is built once into a temporary folder with the command (``python -m
htnetlib.cli.book``, a few seconds); the tests read its pages: a page per notebook and docs
page, the sidebar in reading order, "notebook NN" linked, code folded, equations as MathML, no
page fetching anything from another host. Then a headless Chromium, with every host name
unresolvable, opens the search page and the equations page: the search must find a word and
an equation must be drawn. The whole file skips, saying why, where the ``book`` extra is not
installed; the browser tests skip where no Chromium is installed (``apt-get install
chromium``; ``.ci/run`` installs it; ``$CHROMIUM`` names another binary). About 15 s.
"""

from __future__ import annotations

import hashlib
import html
import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest

pytest.importorskip("jupyter_book", reason="the book extra is not installed "
                    "(pip install -e '.[book]'; make venv installs it)")
pytest.importorskip("latex2mathml", reason="the book extra is not installed "
                    "(pip install -e '.[book]'; make venv installs it)")

from htnetlib.cli import book as book_cli  # noqa: E402
from htnetlib.study import book  # noqa: E402

NOTEBOOKS = sorted(book.NOTEBOOKS.glob("[0-9][0-9]_*.ipynb"))
DOCS = book.docs_pages()
BROWSERS = ("chromium", "chromium-headless-shell", "chromium-browser", "google-chrome")


def browser() -> str | None:
    """``$CHROMIUM``, else the first Chromium found on PATH (as tests/test_lab.py)."""
    named = os.environ.get("CHROMIUM")
    if named:
        return shutil.which(named)
    return next((path for path in map(shutil.which, BROWSERS) if path), None)


def text(fragment: str) -> str:
    """Text of an HTML fragment: tags dropped, entities decoded, spaces collapsed, the
    typographic apostrophes that Sphinx makes plain again."""
    plain = html.unescape(re.sub(r"<[^>]+>", " ", fragment)).replace("\u2019", "'")
    return " ".join(plain.split())


def digest(paths) -> dict[str, str]:
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in paths}


@pytest.fixture(scope="module")
def site(tmp_path_factory):
    out = tmp_path_factory.mktemp("book") / "site"
    before = digest(NOTEBOOKS + DOCS + [book.README])
    assert book_cli.main(["--out", str(out)]) == 0
    assert digest(NOTEBOOKS + DOCS + [book.README]) == before  # copies rewritten, never these
    return out


def test_every_page_is_in_the_sidebar_in_reading_order(site):
    assert NOTEBOOKS and DOCS
    pages = ([f"docs/{p.stem}.html" for p in DOCS]
             + [f"notebooks/{nb.stem}.html" for nb in NOTEBOOKS])
    index = (site / "index.html").read_text()
    title = next(line[2:] for line in book.README.read_text().splitlines()
                 if line.startswith("# "))
    assert f"<title>{html.escape(title)}" in index
    nav = index.split('class="bd-links', 1)[1].split("</nav>", 1)[0]
    assert re.findall(r'href="([^"#]+\.html)"', nav) == pages
    for page in pages:
        assert (site / page).is_file(), page
    titles = [text(t) for t in re.findall(r"<a[^>]*>(.*?)</a>", nav, re.S)]
    assert titles[len(DOCS):] == [book.notebook_title(nb) for nb in NOTEBOOKS]
    assert (site / "search.html").is_file() and (site / "searchindex.js").is_file()


def test_mentions_of_notebooks_link_to_their_pages(site):
    results = (site / "docs" / "results.html").read_text()
    assert 'href="../notebooks/12_honest_selection.html"' in results
    index = (site / "index.html").read_text()
    assert re.search(r'<a[^>]+href="notebooks/12_honest_selection.html[^"]*"[^>]*>\s*'
                     r'(?:<span[^>]*>)?notebook\s+12', index)
    assert not re.search(r'href="[^"]*\.ipynb"', index)


def test_link_mentions_skips_code_and_links():
    targets = {"04": "n/04.ipynb", "06": "n/06.ipynb", "09": "n/09.ipynb", "12": "n/12.ipynb"}
    assert book.link_mentions("see notebook 04.", targets) == "see [notebook 04](n/04.ipynb)."
    assert (book.link_mentions("Notebooks 06 to 09 vary", targets)
            == "Notebooks [06](n/06.ipynb) to [09](n/09.ipynb) vary")
    unchanged = ["`notebook 04`", "[notebook 12](x.ipynb)", "```\nnotebook 04\n```",
                 "notebook 77", "notebooks 12.5 and", "notebook_04"]
    for case in unchanged:
        assert book.link_mentions(case, targets) == case, case


def test_notebooks_fold_their_code_and_keep_every_figure(site):
    for nb in NOTEBOOKS:
        page = (site / "notebooks" / f"{nb.stem}.html").read_text()
        assert book.notebook_title(nb) in text(page)
        if '"cell_type": "code"' in nb.read_text():
            assert "tag_hide-input" in page, nb.name
    figures = sum(len(re.findall(r"<img[^>]+src=\"\.\./_images/", (
        site / "notebooks" / f"{nb.stem}.html").read_text())) for nb in NOTEBOOKS)
    assert figures > 10
    page = (site / "notebooks" / "05_table2_confusion.html").read_text()
    assert "<table" in page


def test_the_equations_are_mathml_numbered_as_the_paper(site):
    page = (site / "docs" / "equations.html").read_text()
    numbers = re.findall(r'<span class="eqno">\((\d+)\)</span>\s*<math', page)
    assert numbers == [str(n) for n in range(1, 10)]
    assert page.count("<mfrac") >= 5


def test_no_page_fetches_anything_from_another_host(site):
    assert book.remote_references(site) == []
    for page in site.rglob("*.html"):
        scripts = " ".join(re.findall(r"<script[^>]*>", page.read_text().lower()))
        assert "mathjax" not in scripts and "katex" not in scripts, page.name
        assert "cdn" not in scripts and "//" not in scripts, page.name


def test_a_bad_out_folder_is_one_line(tmp_path, capsys):
    (tmp_path / "file").write_text("")
    assert book_cli.main(["--out", str(tmp_path / "file")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("book: error: --out") and err.count("\n") == 1


def offline_dom(url: str) -> str:
    """The DOM of ``url`` after its scripts ran in a headless Chromium that resolves no host."""
    chromium = browser()
    if chromium is None:
        pytest.skip("no Chromium (apt-get install chromium, or set $CHROMIUM)")
    out = subprocess.run([chromium, "--headless", "--no-sandbox", "--disable-gpu",
                          "--host-resolver-rules=MAP * ~NOTFOUND", "--virtual-time-budget=5000",
                          "--dump-dom", url], capture_output=True, text=True, timeout=90)
    assert out.returncode == 0 and "</html>" in out.stdout, out.stderr[-2000:]
    return out.stdout


def test_chromium_search_finds_a_word_offline(site):
    dom = offline_dom((site / "search.html").as_uri() + "?q=strain")
    found = re.search(r'<ul class="search">(.*?)</ul>', dom, re.S)
    assert found, "no search results list"
    hits = re.findall(r'href="([^"]+)"', found.group(1))
    assert "notebooks/01_optical_flow.html" in [h.split("?")[0].split("#")[0] for h in hits]


def test_chromium_draws_an_equation_offline(site):
    page = site / "docs" / "equations.html"
    probe = ("<script>window.addEventListener('load', () => { const m = document.querySelector("
             "'div.math math'); const r = m.getBoundingClientRect(); document.body.setAttribute("
             "'data-math', (m instanceof MathMLElement) + ' ' + Math.round(r.width) + ' ' + "
             "Math.round(r.height)); });</script>")
    page.write_text(page.read_text().replace("</body>", probe + "</body>", 1))
    dom = offline_dom(page.as_uri())
    shown = re.search(r'data-math="(\w+) (\d+) (\d+)"', dom)
    assert shown, "the probe did not run"
    is_mathml, width, height = shown.group(1), int(shown.group(2)), int(shown.group(3))
    assert is_mathml == "true" and width > 50 and height > 20  # a drawn fraction, not raw text
