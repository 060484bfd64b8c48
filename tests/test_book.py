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
import json
import os
import re
import shutil
import subprocess
from pathlib import Path
from urllib.parse import unquote, urlsplit

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
             + [f"notebooks/{nb.stem}.html" for nb in NOTEBOOKS] + ["preregistration/index.html"]
             + [f"preregistration/{p.stem}.html" for p in book.preregistration_pages()])
    index = (site / "index.html").read_text()
    title = next(line[2:] for line in book.README.read_text().splitlines()
                 if line.startswith("# "))
    assert f"<title>{html.escape(title)}" in index
    nav = index.split('class="bd-links', 1)[1].split("</nav>", 1)[0]
    assert re.findall(r'href="([^"#]+\.html)"', nav) == pages
    for page in pages:
        assert (site / page).is_file(), page
    titles = [text(t) for t in re.findall(r"<a[^>]*>(.*?)</a>", nav, re.S)]
    assert titles[len(DOCS):len(DOCS) + len(NOTEBOOKS)] == [book.notebook_title(nb)
                                                            for nb in NOTEBOOKS]
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


# --------------------------------------------------------------------------- the lab's book


def local_references(site: Path) -> list[tuple[Path, str]]:
    """Every local ``href``/``src`` of every page of ``site``: (page, reference). The theme's
    Jinja macro files that it copies into ``_static/`` verbatim are not pages."""
    attr = re.compile(r"""\b(?:href|src)\s*=\s*["']([^"']*)["']""", re.I)
    found = []
    for page in sorted(site.rglob("*.html")):
        if page.relative_to(site).parts[0] == "_static":
            continue
        for ref in attr.findall(page.read_text(errors="replace")):
            ref = html.unescape(ref).strip()
            parts = urlsplit(ref)
            if not (parts.scheme or ref.startswith("//")) and parts.path:
                found.append((page, ref))
    return found


def dead_links(site: Path) -> list[str]:
    dead = []
    for page, ref in local_references(site):
        target = (page.parent / unquote(urlsplit(ref).path)).resolve()
        if target.is_dir():
            target = target / "index.html"
        if not target.is_file():
            dead.append(f"{page.relative_to(site)} -> {ref}")
    return sorted(set(dead))


def test_every_local_link_of_every_page_resolves(site):
    refs = local_references(site)
    assert len(refs) > 500 and len({p for p, _ in refs}) == len(
        [p for p in site.rglob("*.html") if p.relative_to(site).parts[0] != "_static"])
    assert dead_links(site) == []
    # the three the issue found, from notebook outputs: 15 -> 12, 14 -> 04 and 05
    links = {(p.name, r) for p, r in refs}
    for page, target in (("15_toward_076.html", "12_honest_selection.html"),
                         ("14_from_frames_to_prediction.html", "04_training_loso.html"),
                         ("14_from_frames_to_prediction.html", "05_table2_confusion.html")):
        assert (page, target) in links, (page, target)


def test_the_link_walker_finds_a_dead_link(site, tmp_path):
    copy = tmp_path / "site"
    shutil.copytree(site, copy)
    page = copy / "notebooks" / "15_toward_076.html"
    page.write_text(page.read_text().replace("</body>", '<a href="12_missing.html#x">x</a>'
                                             '<img src="../_images/none.png"></body>', 1))
    assert dead_links(copy) == ["notebooks/15_toward_076.html -> ../_images/none.png",
                                "notebooks/15_toward_076.html -> 12_missing.html#x"]


def lab_notebook(tmp_path) -> Path:
    cells = [{"cell_type": "markdown", "metadata": {}, "source": "# Episode"}]
    for tags in (["lesson"], ["exercise"], ["solution"], [], ["parameters"]):
        cells.append({"cell_type": "code", "metadata": {"tags": tags}, "outputs": [],
                      "execution_count": None, "source": "# NBVAL_CHECK_OUTPUT\nx = 1"})
    path = tmp_path / "01_episode.ipynb"
    path.write_text(json.dumps({"cells": cells, "metadata": {}, "nbformat": 4,
                                "nbformat_minor": 5}))
    return path


def test_lesson_and_exercise_cells_are_shown_and_everything_else_folded(tmp_path, site):
    nb = book.book_notebook(lab_notebook(tmp_path), {})
    tags = [c["metadata"]["tags"] for c in nb["cells"] if c["cell_type"] == "code"]
    assert tags == [["lesson"], ["exercise"], ["solution", "hide-input"], ["hide-input"],
                    ["parameters", "hide-input"]]
    sources = ["".join(c["source"]) for c in nb["cells"] if c["cell_type"] == "code"]
    assert sources[:2] == ["x = 1"] * 2  # a shown cell without nbval's marker
    assert all(s.startswith("# NBVAL_CHECK_OUTPUT") for s in sources[2:])  # folded: as it is
    for path in NOTEBOOKS:  # in the built book: each code cell folded unless lesson/exercise
        cells = [c for c in json.loads(path.read_text())["cells"] if c["cell_type"] == "code"]
        page = (site / "notebooks" / f"{path.stem}.html").read_text()
        folded = len(re.findall(r'class="cell tag_[^"]*hide-input', page))
        assert folded == sum(not book.shown(c) for c in cells), path.name
        if path.name[:2] >= "05":
            assert not any(book.shown(c) for c in cells), path.name


def test_every_notebook_page_downloads_its_notebook_from_the_site(site):
    for nb in NOTEBOOKS:
        page = (site / "notebooks" / f"{nb.stem}.html").read_text()
        hrefs = re.findall(r'href="([^"]*_sources/[^"]*\.ipynb)"', page)
        assert hrefs == [f"../_sources/notebooks/{nb.name}"], nb.name
        copy = json.loads((site / "_sources" / "notebooks" / nb.name).read_text())
        assert len(copy["cells"]) == len(json.loads(nb.read_text())["cells"])


def test_the_preregistrations_are_pages_linked_where_they_are_named(site):
    files = sorted((book.ROOT / "results" / "preregistration").glob("*.md"))
    assert files
    for f in files:
        page = site / "preregistration" / f"{f.stem}.html"
        title = next(line[2:] for line in f.read_text().splitlines() if line.startswith("# "))
        assert title in text(page.read_text()), f.name
    for nb, name in (("12_honest_selection", files[0].stem), ("15_toward_076", files[1].stem)):
        page = (site / "notebooks" / f"{nb}.html").read_text()
        assert f'href="../preregistration/{name}.html"' in page, nb
    assert book.prereg_links("see `results/preregistration/none.md`", "") == \
        "see `results/preregistration/none.md`"


def test_the_front_page_shows_the_labs_schedule(site):
    from htnetlib.study.lab import schedule_table

    index = (site / "index.html").read_text()
    table = next(t for t in re.findall(r"<table.*?</table>", index, re.S) if "teaching" in t)
    rows = [[text(c) for c in re.findall(r"<td[^>]*>(.*?)</td>", r, re.S)]
            for r in re.findall(r"<tr[^>]*>(.*?)</tr>", table, re.S)[1:]]
    expected = schedule_table()
    assert [r[1] for r in rows[:-1]] == [e["episode"] for e in expected]
    assert [(int(r[3]), int(r[4])) for r in rows[:-1]] == [(e["teaching"], e["exercises"])
                                                          for e in expected]
    assert [r[0] for r in rows[:-1]] == [f"{e['start'] // 60}:{e['start'] % 60:02d}"
                                         for e in expected]
    assert sum(e["teaching"] + e["exercises"] for e in expected) == 90 and "90 in all" in rows[-1][4]
    assert "with or without the licensed release" in text(index)
    for e in expected:
        assert f'href="notebooks/{e["episode"]}.html"' in table


def test_wide_tables_scroll_instead_of_being_clipped(site):
    css = (site / "_static" / "htnet.css").read_text()
    assert "overflow-x: auto" in css
    for page in site.rglob("*.html"):
        if page.relative_to(site).parts[0] != "_static":
            assert "_static/htnet.css" in page.read_text(), page.name
    page = site / "notebooks" / "05_table2_confusion.html"
    probe = ("<script>window.addEventListener('load', () => { const t = [...document.querySelectorAll("
             "'.bd-article table')]; const wide = t.filter(e => e.scrollWidth > e.clientWidth + 1); "
             "const art = document.querySelector('.bd-article'); document.body.setAttribute("
             "'data-wide', t.length + ' ' + wide.length + ' ' + wide.filter(e => ['auto', 'scroll']"
             ".includes(getComputedStyle(e).overflowX)).length + ' ' + (art.scrollWidth <= "
             "art.clientWidth + 1)); });</script>")
    page.write_text(page.read_text().replace("</body>", probe + "</body>", 1))
    dom = offline_dom(page.as_uri())
    found = re.search(r'data-wide="(\d+) (\d+) (\d+) (\w+)"', dom)
    assert found, "the probe did not run"
    tables, wide, scrolling, fits = found.groups()
    assert int(tables) > 0 and int(wide) > 0, "no wide table to test on"
    assert scrolling == wide and fits == "true"  # each wide table scrolls; the page does not


def test_the_schedule_joins_the_front_pages_own_section_on_the_lab():
    schedule = book.schedule_markdown({})
    assert schedule.startswith("## The 90-minute lab\n\n")
    plain = "# Title\n\nIntro.\n\n## Two commands\n\nx\n"
    assert book.with_schedule(plain, schedule).index("## The 90-minute lab") < \
        book.with_schedule(plain, schedule).index("## Two commands")
    own = "# Title\n\n## The 90-minute lab\n\nTheir words.\n\n## Predict\n\ny\n"
    out = book.with_schedule(own, schedule)
    assert out.count("## The 90-minute lab") == 1
    assert out.index("Their words.") < out.index("| start |") < out.index("## Predict")
    assert "with or without the licensed release" in out
