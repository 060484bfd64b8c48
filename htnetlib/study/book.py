"""The book: the committed, executed notebooks as a static HTML site (``make book``).

The notebooks in ``notebooks/`` are committed with their outputs, so the book renders them as
they are, never executing a cell: one page per notebook (nbconvert's ``lab`` template, every
figure embedded in the page as a PNG data URI, every table as HTML), the README as the front
page, and a contents page listing the notebooks in the paper's order (their numbering), each by
the title of its first Markdown heading. Every page carries the same navigation, top and
bottom: previous, contents, next, in the order front page, contents, 01, 02, ...

Links between the documents are rewritten to the book's pages (``notebooks/04_x.ipynb`` in the
README and ``04_x.ipynb`` in a notebook become ``04_x.html``), so the site works from any
folder, with no server: open ``index.html``.
"""

from __future__ import annotations

import html
import json
import re
from dataclasses import dataclass
from pathlib import Path

from ..io import ROOT, write_text

NOTEBOOKS = ROOT / "notebooks"
README = ROOT / "README.md"
TEMPLATE = "lab"  # nbconvert's JupyterLab look; "classic" also works
CONTENTS = "contents.html"

STYLE = """
nav.book { font: 14px/1.4 system-ui, sans-serif; display: flex; gap: 1.5em; align-items: center;
  padding: .6em 1em; margin: 0 0 1em; background: #f3f5f8; border-bottom: 1px solid #d0d7de; }
nav.book.bottom { margin: 2em 0 0; border-top: 1px solid #d0d7de; border-bottom: 0; }
nav.book a { color: #0b57d0; text-decoration: none; } nav.book a:hover { text-decoration: underline; }
nav.book .here { color: #555; margin-left: auto; }
nav.book .none { color: #aaa; }
main.book-text { max-width: 60em; margin: 0 auto 3em; padding: 0 1.5em;
  font: 16px/1.55 system-ui, sans-serif; color: #1f2328; }
main.book-text table { border-collapse: collapse; margin: 1em 0; font-size: 14px; }
main.book-text th, main.book-text td { border: 1px solid #d0d7de; padding: .3em .6em; }
main.book-text pre { background: #f6f8fa; padding: .8em; overflow-x: auto; }
main.book-text code { font-size: 90%; }
main.book-text ul.contents { list-style: none; padding-left: 0; }
main.book-text ul.contents li { margin: .4em 0; }
main.book-text a.anchor-link { text-decoration: none; opacity: .25; margin-left: .2em; }
"""


@dataclass(frozen=True)
class Page:
    """One page of the book: its file name in the book, its title and what it renders."""

    name: str
    title: str
    source: Path | None  # a notebook or the README; None for the contents page


def notebook_title(path: Path) -> str:
    """The text of the notebook's first Markdown heading (``# ...``), else its file name."""
    for cell in json.loads(path.read_text(encoding="utf-8"))["cells"]:
        if cell["cell_type"] == "markdown":
            for line in "".join(cell["source"]).splitlines():
                if line.startswith("# "):
                    return line[2:].strip()
    return path.stem


def pages(notebooks: Path = NOTEBOOKS, readme: Path = README) -> list[Page]:
    """The book's pages in reading order: the README, the contents, then the notebooks by their
    number (the paper's order)."""
    found = sorted(notebooks.glob("[0-9]*.ipynb"))
    if not found:
        raise FileNotFoundError(f"{notebooks}: no numbered notebooks to make a book of")
    front = next((line[2:].strip() for line in readme.read_text(encoding="utf-8").splitlines()
                  if line.startswith("# ")), "README")
    return ([Page("index.html", front, readme), Page(CONTENTS, "Contents", None)]
            + [Page(f"{p.stem}.html", notebook_title(p), p) for p in found])


def navigation(book: list[Page], i: int, where: str) -> str:
    """The navigation bar of page ``i``: previous, contents, next, and the page's own title."""
    def link(j: int, rel: str, label: str) -> str:
        if not 0 <= j < len(book):
            return f'<span class="none">{label}</span>'
        return (f'<a href="{book[j].name}" title="{html.escape(book[j].title)}" '
                f'rel="{rel}">{label}</a>')
    return (f'<nav class="book {where}">{link(i - 1, "previous", "&larr; previous")}'
            f'<a href="{CONTENTS}" rel="contents">contents</a>'
            f'{link(i + 1, "next", "next &rarr;")}'
            f'<span class="here">{html.escape(book[i].title)}</span></nav>')


def link_pages(text: str, names: set[str]) -> str:
    """``text`` (HTML) with links to a notebook of the book (``notebooks/NN_x.ipynb`` or
    ``NN_x.ipynb``, optionally with a ``#fragment``) pointing at its page."""
    def page(m: re.Match) -> str:
        stem = m.group(2)
        return (f'href="{stem}.html{m.group(3) or ""}"' if f"{stem}.html" in names
                else m.group(0))
    text = re.sub(r'href="((?:\.\./)?(?:notebooks/)?)([\w-]+)\.ipynb(#[^"]*)?"', page, text)
    return re.sub(r'href="(?:\.\./)?README\.md"', 'href="index.html"', text)


def link_code_names(text: str, names: set[str]) -> str:
    """``<code>NN_x.ipynb</code>`` (the README's notebook table) made a link to its page."""
    return re.sub(r"<code>([\w-]+)\.ipynb</code>",
                  lambda m: (f'<a href="{m.group(1)}.html"><code>{m.group(1)}.ipynb</code></a>'
                             if f"{m.group(1)}.html" in names else m.group(0)), text)


def text_page(title: str, body: str) -> str:
    """A page of the book that is not a notebook: the README or the contents."""
    return (f'<!DOCTYPE html>\n<html lang="en">\n<head>\n<meta charset="utf-8">\n'
            f'<meta name="viewport" content="width=device-width, initial-scale=1">\n'
            f'<title>{html.escape(title)}</title>\n<style>{STYLE}</style>\n</head>\n<body>\n'
            f'{body}\n</body>\n</html>\n')


def with_navigation(page: str, top: str, bottom: str) -> str:
    """An nbconvert page with the book's style and navigation bars at the top and bottom."""
    page = page.replace("</head>", f"<style>{STYLE}</style>\n</head>", 1)
    page = re.sub(r"(<body[^>]*>)", lambda m: m.group(1) + "\n" + top, page, count=1)
    head, sep, tail = page.rpartition("</body>")
    if not sep:
        raise ValueError("nbconvert's page has no </body> to put the navigation before")
    return head + bottom + "\n" + sep + tail


def render_notebook(path: Path, exporter) -> str:
    """The notebook as one HTML page, as committed (outputs kept, nothing executed)."""
    import nbformat

    nb = nbformat.read(str(path), as_version=4)
    body, _ = exporter.from_notebook_node(nb, resources={"metadata": {"name": path.stem}})
    return body


def render_markdown(path: Path) -> str:
    """The Markdown file as HTML (nbconvert's renderer, the one its notebooks' cells use)."""
    from nbconvert.filters.markdown_mistune import markdown2html_mistune

    return markdown2html_mistune(path.read_text(encoding="utf-8"))


def contents(book: list[Page]) -> str:
    """The contents page's text: every notebook in order, by its title, with its file name."""
    items = "\n".join(f'<li><a href="{p.name}">{html.escape(p.title)}</a> '
                      f"<small>({html.escape(p.source.name)})</small></li>"
                      for p in book if p.source is not None and p.source.suffix == ".ipynb")
    front = book[0]
    return (f"<h1>Contents</h1>\n<p>The notebooks in the paper's order. The front page is "
            f'<a href="{front.name}">{html.escape(front.title)}</a> (the README).</p>\n'
            f'<ul class="contents">\n{items}\n</ul>')


def build_book(out_dir: Path | str, *, notebooks: Path = NOTEBOOKS, readme: Path = README,
               template: str = TEMPLATE) -> Path:
    """Render the book into ``out_dir`` (made if needed; its pages replaced) and return the
    path of its front page, ``index.html``."""
    from nbconvert import HTMLExporter

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    book = pages(notebooks, readme)
    names = {p.name for p in book}
    exporter = HTMLExporter(template_name=template)
    for i, page in enumerate(book):
        top, bottom = navigation(book, i, "top"), navigation(book, i, "bottom")
        if page.source is None:
            text = text_page(f"Contents · {book[0].title}",
                             f'{top}\n<main class="book-text">\n{contents(book)}\n</main>\n{bottom}')
        elif page.source.suffix == ".ipynb":
            text = with_navigation(link_pages(render_notebook(page.source, exporter), names),
                                   top, bottom)
        else:
            body = link_code_names(link_pages(render_markdown(page.source), names), names)
            text = text_page(page.title, f'{top}\n<main class="book-text">\n{body}\n</main>\n'
                                         f'{bottom}')
        write_text(out / page.name, text)
    return out / book[0].name
