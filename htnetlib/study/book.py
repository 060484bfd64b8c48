"""The book: the README, the docs pages and the committed, executed notebooks as a Jupyter Book
(``make book``; Jupyter Book 1, Sphinx with the book theme, the ``book`` extra).

Nothing is executed: the notebooks are committed with their outputs and the book shows them as
they are. The book is built from copies in a temporary folder, laid out as the repository is
(``index.md`` from the README, ``docs/*.md``, ``notebooks/NN_*.ipynb``), so the links between
them work as they do on a code host; the copies are rewritten on the way, never the committed
files:

* every mention of "notebook NN" (and "notebooks 12, 13", "notebooks 06 to 09") becomes a link to
  that notebook's page, in the Markdown of the pages, the notebooks' Markdown cells and their
  Markdown outputs, outside code;
* code cells follow the lab's cell tags (:mod:`htnetlib.study.lab`): a ``lesson`` or
  ``exercise`` cell is shown, source and outputs; every other code cell, a ``solution`` among
  them, gets the ``hide-input`` tag: its source is folded behind a toggle, its outputs shown;
* links to ``README.md`` point at the front page; mentions of a pre-registration file
  (``results/preregistration/*.md``) link to its page, and the files become pages of their
  own (:data:`PREREGISTRATIONS`);
* the front page gets the lab's schedule (:func:`schedule_markdown`, from
  :func:`htnetlib.study.lab.schedule_table`), in its section on the lab, or before its first
  section where it has none;
* links in a notebook's Markdown *outputs* point at the built ``.html`` pages (outputs are
  rendered as they are, their links not resolved by Sphinx).

Every notebook page has a download button for the notebook as the book shows it (a file in the
built site, ``_sources/``; nothing fetched). Wide tables scroll sideways instead of being clipped
(:data:`CSS`, a style sheet in the site).

The pages have the theme's sidebar (every page, in reading order), a search box (Sphinx's
search index, read from the folder, no server) and each page's contents in the margin. Math is
MathML made when the book is built (:mod:`htnetlib.study.bookmath`), so no page loads MathJax
or anything else from the network; :func:`remote_references` finds any page that would.
"""

from __future__ import annotations

import json
import re
import shutil
import tempfile
from pathlib import Path

from ..io import ROOT, write_text

NOTEBOOKS = ROOT / "notebooks"
README = ROOT / "README.md"
DOCS = ROOT / "docs"
PREREGISTRATIONS = ROOT / "results" / "preregistration"
# code cells the book shows (htnetlib.study.lab's tags); every other code cell is folded
SHOWN_TAGS = ("lesson", "exercise")
PREREG_MENTION = re.compile(r"`(results/preregistration/(?:([\w.-]+)\.md)?)`")
# wide tables and printed lines scroll sideways instead of being clipped
CSS = """/* htnetlib book: wide tables and outputs scroll sideways instead of being clipped */
.bd-article table { display: block; max-width: 100%; overflow-x: auto; }
.bd-article .cell_output .output, .bd-article .cell_output pre { overflow-x: auto; }
.bd-article .cell_output pre { white-space: pre; }
"""
# the docs pages in the sidebar's order; pages not named here follow, by name
DOCS_ORDER = ("reproducing", "results", "predict", "equations", "notebooks", "cluster",
              "architecture", "credit")
MENTION = re.compile(r"(?<![\[\w/.-])([Nn]otebooks?)((?:(?:,\s*|\s+and\s+|\s+to\s+|\s*-\s*|\s+)"
                     r"\d{2}\b(?!\.\d|\s*%|_))+)")
NUMBER = re.compile(r"\d{2}")
CODE = re.compile(r"(```.*?```|~~~.*?~~~|`[^`\n]*`|\[[^\]\n]*\]\([^)\n]*\)|<[^>\n]*>)", re.S)


def notebook_title(path: Path) -> str:
    """The text of the notebook's first Markdown heading (``# ...``), else its file name."""
    for cell in json.loads(path.read_text(encoding="utf-8"))["cells"]:
        if cell["cell_type"] == "markdown":
            for line in "".join(cell["source"]).splitlines():
                if line.startswith("# "):
                    return line[2:].strip()
    return path.stem


def numbered_notebooks(notebooks: Path = NOTEBOOKS) -> dict[str, Path]:
    """The book's notebooks by their two-digit number ("01": 01_optical_flow.ipynb, ...)."""
    found = sorted(notebooks.glob("[0-9][0-9]_*.ipynb"))
    if not found:
        raise FileNotFoundError(f"{notebooks}: no numbered notebooks to make a book of")
    return {p.name[:2]: p for p in found}


def docs_pages(docs: Path = DOCS) -> list[Path]:
    """The docs pages in the sidebar's order (:data:`DOCS_ORDER`, then any other by name)."""
    found = {p.stem: p for p in sorted(docs.glob("*.md"))} if docs.is_dir() else {}
    return [found[n] for n in DOCS_ORDER if n in found] + [
        p for n, p in found.items() if n not in DOCS_ORDER]


def link_mentions(text: str, targets: dict[str, str]) -> str:
    """``text`` (Markdown) with each "notebook NN" outside code and existing links made a link
    to ``targets[NN]`` (a relative path); numbers without a target stay text."""
    def numbers(m: re.Match) -> str:
        if not any(n in targets for n in NUMBER.findall(m.group(2))):
            return m.group(0)
        if len(NUMBER.findall(m.group(2))) == 1:
            n = NUMBER.search(m.group(2)).group(0)
            return f"[{m.group(0)}]({targets[n]})"
        return m.group(1) + NUMBER.sub(
            lambda k: f"[{k.group(0)}]({targets[k.group(0)]})" if k.group(0) in targets
            else k.group(0), m.group(2))

    parts = CODE.split(text)
    return "".join(p if i % 2 else MENTION.sub(numbers, p) for i, p in enumerate(parts))


def front_links(text: str, up: str) -> str:
    """``text`` with Markdown links to the README pointing at the book's front page."""
    return re.sub(r"\]\(((?:\.\./)*)README\.md(#[^)]*)?\)",
                  lambda m: f"]({up}index.md{m.group(2) or ''})", text)


def prereg_links(text: str, up: str, suffix: str = ".md") -> str:
    """``text`` with each mention of a pre-registration file in code
    (`` `results/preregistration/NAME.md` ``) made a link to its page, and the folder's
    (`` `results/preregistration/` ``) to the pages' index; ``up`` leads to the book's root."""
    def link(m: re.Match) -> str:
        if m.group(2) and not (PREREGISTRATIONS / f"{m.group(2)}.md").is_file():
            return m.group(0)
        page = m.group(2) or "index"
        return f"[{m.group(0)}]({up}preregistration/{page}{suffix})"

    parts = re.split(r"(\[[^\]\n]*\]\([^)\n]*\))", text)  # existing links stay as they are
    return "".join(p if i % 2 else PREREG_MENTION.sub(link, p) for i, p in enumerate(parts))


def shown(cell: dict) -> bool:
    """Whether the book shows a code cell's source: a lab ``lesson`` or ``exercise`` cell."""
    return bool(set(cell.get("metadata", {}).get("tags", [])) & set(SHOWN_TAGS))


def book_notebook(path: Path, targets: dict[str, str]) -> dict:
    """The notebook as the book shows it: Markdown (cells and outputs) with its mentions
    linked (in outputs to the built ``.html`` pages), every code cell but a ``lesson`` or
    ``exercise`` cell tagged ``hide-input``, and the shown cells without nbval's marker line."""
    nb = json.loads(path.read_text(encoding="utf-8"))
    own = {n: t for n, t in targets.items() if t != path.name}
    built = {n: str(Path(t).with_suffix(".html")) for n, t in own.items()}
    for cell in nb["cells"]:
        if cell["cell_type"] == "markdown":
            cell["source"] = prereg_links(front_links(link_mentions(
                "".join(cell["source"]), own), "../"), "../")
        elif cell["cell_type"] == "code":
            tags = cell.setdefault("metadata", {}).setdefault("tags", [])
            if not shown(cell) and "hide-input" not in tags:
                tags.append("hide-input")
            elif shown(cell):  # nbval's marker means nothing to a reader of the book
                cell["source"] = "".join(line for line in "".join(cell["source"]).splitlines(True)
                                         if line.strip() != "# NBVAL_CHECK_OUTPUT")
            for out in cell.get("outputs", []):
                md = out.get("data", {}).get("text/markdown")
                if md is not None:
                    out["data"]["text/markdown"] = prereg_links(
                        link_mentions("".join(md), built), "../", ".html")
    return nb


def schedule_markdown(notebooks: dict[str, str]) -> str:
    """The lab's timetable (:func:`htnetlib.study.lab.schedule_table`) as a Markdown section:
    each episode linked to its page (``notebooks``: stem to relative path), its teaching and
    exercise minutes and start, and the total."""
    from .lab import schedule_table

    rows = schedule_table()
    total = sum(r["teaching"] + r["exercises"] for r in rows)
    lines = ["## The 90-minute lab" if total == 90 else f"## The {total}-minute lab", "",
             f"Notebooks {rows[0]['episode'][:2]} to {rows[-1]['episode'][:2]} are the "
             f"episodes of a {total}-minute lab. It runs with or without the licensed release: "
             "without `HTNET_DATA` the episodes run on a synthetic cohort and say so at the top.",
             "", "| start | episode | title | teaching (min) | exercises (min) |",
             "|---|---|---|---|---|"]
    for r in rows:
        link = (f"[{r['episode']}]({notebooks[r['episode']]})" if r["episode"] in notebooks
                else r["episode"])
        lines.append(f"| {r['start'] // 60}:{r['start'] % 60:02d} | {link} | {r['title']} | "
                     f"{r['teaching']} | {r['exercises']} |")
    lines.append(f"| | **total** | | {sum(r['teaching'] for r in rows)} | "
                 f"{sum(r['exercises'] for r in rows)} ({total} in all) |")
    return "\n".join(lines) + "\n"


def with_schedule(text: str, schedule: str) -> str:
    """``text`` (the front page) with ``schedule`` (:func:`schedule_markdown`): at the end of
    the page's own section on the lab (``## The NN-minute lab``) where it has one, without
    its heading, else as a section before the first ``##`` section."""
    own = re.search(r"^## The \d+-minute lab\s*$", text, re.M)
    if own:
        table = schedule[schedule.index("| start |"):]  # the page already says what the lab is
        body = "The timetable, the same with or without the licensed release:\n\n" + table
        end = re.search(r"^## ", text[own.end():], re.M)
        at = own.end() + end.start() if end else len(text)
        return text[:at].rstrip("\n") + "\n\n" + body + "\n" + text[at:]
    m = re.search(r"^## ", text, re.M)
    return (text[:m.start()] + schedule + "\n" + text[m.start():] if m
            else text.rstrip("\n") + "\n\n" + schedule)


def preregistration_pages(folder: Path = PREREGISTRATIONS) -> list[Path]:
    """The committed pre-registrations, by name."""
    return sorted(folder.glob("*.md")) if folder.is_dir() else []


def config_text(title: str) -> str:
    """The book's ``_config.yml``: no execution, no launch or repository buttons, a download
    button (the page's source, copied into the site), math as MathML, no widget scripts from a
    CDN, the book's style sheet (:data:`CSS`)."""
    return f"""title: {json.dumps(title)}
author: the htnetlib authors
copyright: ""
only_build_toc_files: true
execute:
  execute_notebooks: "off"
html:
  home_page_in_navbar: true
  use_download_button: true
  use_repository_button: false
  use_issues_button: false
  use_edit_page_button: false
  use_multitoc_numbering: false
launch_buttons:
  notebook_interface: ""
  binderhub_url: ""
  jupyterhub_url: ""
  thebe: false
  colab_url: ""
parse:
  myst_enable_extensions: [dollarmath, colon_fence]
sphinx:
  extra_extensions: [htnetlib.study.bookmath]
  config:
    html_math_renderer: mathml
    html_copy_source: true
    html_show_sourcelink: false
    html_static_path: [_static]
    html_css_files: [htnet.css]
    html_show_copyright: false
    html_show_sphinx: false
    html_theme_options:
      use_download_button: true
      use_fullscreen_button: false
      show_navbar_depth: 2
      show_toc_level: 2
    nb_ipywidgets_js: {{}}
    suppress_warnings: [myst.xref_missing, myst.header, misc.highlighting_failure, mystnb.unknown_mime_type]
    nb_merge_streams: true
"""


def toc_text(docs: list[str], notebooks: list[str], preregistrations: list[str] = ()) -> str:
    """The book's ``_toc.yml``: the front page, the guide (docs pages), the notebooks, the
    pre-registrations (an index page and one page each)."""
    lines = ["format: jb-book", "root: index", "parts:", "  - caption: Guide", "    chapters:"]
    lines += [f"      - file: docs/{d}" for d in docs]
    lines += ["  - caption: Notebooks", "    chapters:"]
    lines += [f"      - file: notebooks/{n}" for n in notebooks]
    if preregistrations:
        lines += ["  - caption: Pre-registrations", "    chapters:",
                  "      - file: preregistration/index", "        sections:"]
        lines += [f"          - file: preregistration/{p}" for p in preregistrations]
    return "\n".join(lines) + "\n"


def preregistration_index(pages: list[Path]) -> str:
    """The pre-registrations' index page: each file, linked, with its title."""
    lines = ["# Pre-registrations", "",
             "Each file was committed before the runs it names were trained (notebooks 12 and "
             "15 check the order with git); the book shows them as committed in "
             "`results/preregistration/`.", ""]
    for p in pages:
        title = next((line[2:].strip() for line in p.read_text(encoding="utf-8").splitlines()
                      if line.startswith("# ")), p.stem)
        lines.append(f"- [{title}]({p.name})")
    return "\n".join(lines) + "\n"


def stage(src: Path, *, notebooks: Path = NOTEBOOKS, readme: Path = README,
          docs: Path = DOCS, preregistrations: Path = PREREGISTRATIONS) -> str:
    """Lay out the book's sources in ``src`` (copies, rewritten as the module says); returns
    the book's title (the README's first heading)."""
    nbs = numbered_notebooks(notebooks)
    pages = docs_pages(docs)
    prereg = preregistration_pages(preregistrations)
    text = readme.read_text(encoding="utf-8")
    title = next((line[2:].strip() for line in text.splitlines() if line.startswith("# ")),
                 "README")
    schedule = schedule_markdown({p.stem: f"notebooks/{p.name}" for p in nbs.values()})
    write_text(src / "index.md", prereg_links(with_schedule(link_mentions(
        text, {n: f"notebooks/{p.name}" for n, p in nbs.items()}), schedule), ""))
    for page in pages:
        body = link_mentions(page.read_text(encoding="utf-8"),
                             {n: f"../notebooks/{p.name}" for n, p in nbs.items()})
        write_text(src / "docs" / page.name, prereg_links(front_links(body, "../"), "../"))
    for p in nbs.values():
        nb = book_notebook(p, {n: q.name for n, q in nbs.items()})
        write_text(src / "notebooks" / p.name, json.dumps(nb, ensure_ascii=False))
    for p in prereg:
        body = link_mentions(p.read_text(encoding="utf-8"),
                             {n: f"../notebooks/{q.name}" for n, q in nbs.items()})
        write_text(src / "preregistration" / p.name, front_links(body, "../"))
    if prereg:
        write_text(src / "preregistration" / "index.md", link_mentions(
            preregistration_index(prereg), {n: f"../notebooks/{q.name}" for n, q in nbs.items()}))
    write_text(src / "_static" / "htnet.css", CSS)
    write_text(src / "_config.yml", config_text(title))
    write_text(src / "_toc.yml", toc_text([p.stem for p in pages], [p.stem for p in nbs.values()],
                                          [p.stem for p in prereg]))
    return title


def remote_references(site: Path) -> list[str]:
    """Every script, style sheet, font or image that a page of ``site`` would fetch from
    another host (``src=``/``href=`` of ``<script>``, ``<link>``, ``<img>``, ``<iframe>``, CSS
    ``url()``/``@import``), as ``page: reference``; links a reader may click are not counted."""
    tag = re.compile(r"<(?:script|link|img|iframe|source|embed)\b[^>]*?\b(?:src|href)=\"("
                     r"(?:https?:)?//[^\"]+)\"", re.I)
    css = re.compile(r"(?:url\(\s*['\"]?|@import\s+['\"])((?:https?:)?//[^'\")\s]+)", re.I)
    found = []
    for page in sorted(site.rglob("*")):
        if page.suffix in (".html", ".css", ".js") and page.is_file():
            text = page.read_text(encoding="utf-8", errors="replace")
            pattern = tag if page.suffix == ".html" else css
            found += [f"{page.relative_to(site)}: {u}" for u in pattern.findall(text)]
            if page.suffix == ".html":
                found += [f"{page.relative_to(site)}: {u}" for u in css.findall(text)]
    return found


def build_book(out_dir: Path | str, *, notebooks: Path = NOTEBOOKS, readme: Path = README,
               docs: Path = DOCS) -> Path:
    """Build the book into ``out_dir`` (its previous contents replaced once the build has
    finished) and return the path of its front page, ``index.html``. RuntimeError, with
    Sphinx's reason, where the build fails."""
    from jupyter_book.sphinx import build_sphinx

    out = Path(out_dir)
    out.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="htnet-book-") as tmp:
        src, html = Path(tmp, "src"), Path(tmp, "html")
        stage(src, notebooks=notebooks, readme=readme, docs=docs)
        overrides = {"external_toc_path": (src / "_toc.yml").as_posix(),
                     "latex_individualpages": False}
        result = build_sphinx(src, html, noconfig=True, path_config=src / "_config.yml",
                              confoverrides=overrides, doctreedir=Path(tmp, "doctrees"),
                              builder="html", force_all=True, quiet=True)
        if isinstance(result, Exception) or result:
            raise RuntimeError(f"the book did not build: {result}")
        for leftover in (".buildinfo", ".doctrees"):
            target = html / leftover
            if target.is_dir():
                shutil.rmtree(target)
            elif target.exists():
                target.unlink()
        staged = out.with_name(f".{out.name}.new")
        shutil.rmtree(staged, ignore_errors=True)
        shutil.copytree(html, staged)
        shutil.rmtree(out, ignore_errors=True)
        staged.rename(out)
    return out / "index.html"
