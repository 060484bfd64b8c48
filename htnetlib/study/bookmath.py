"""A Sphinx extension for the book: LaTeX math rendered to MathML when the book is built.

Browsers draw MathML themselves (MathML Core: Chromium, Firefox, Safari), so the book's pages
need no MathJax or KaTeX script and nothing from the network when they are read. Every ``$...$``
and ``$$...$$`` of the docs pages and the notebooks' Markdown becomes a ``<math>`` element
(:mod:`latex2mathml`); a display equation labelled ``eqN`` (``$$ ... $$ (eqN)``) is numbered N, so
the book keeps the paper's numbers (eqs. 1-9). LaTeX that latex2mathml cannot read stays
visible as code rather than breaking the page.
"""

from __future__ import annotations

import html
import re

NAME = "mathml"


def to_mathml(latex: str, display: bool) -> str:
    """``latex`` as a MathML ``<math>`` element, or ``<code>`` holding the LaTeX when it cannot
    be converted."""
    from latex2mathml.converter import convert

    try:
        return convert(latex.strip(), display="block" if display else "inline")
    except Exception:  # latex2mathml raises many kinds on LaTeX it does not know
        return f'<code class="latex">{html.escape(latex)}</code>'


def equation_number(node, translator) -> str | None:
    """The number shown for a display equation: N for the label ``eqN`` (the paper's number),
    else Sphinx's own number, else None."""
    label = node.get("label") or ""
    m = re.fullmatch(r"(?:.*:)?eq-?(\d+)", label)
    if m:
        return m.group(1)
    if node.get("number"):
        from sphinx.util.math import get_node_equation_number

        return get_node_equation_number(translator, node)
    return None


def visit_inline(translator, node) -> None:
    from docutils import nodes

    translator.body.append(translator.starttag(node, "span", "", CLASS="math notranslate")
                           + to_mathml(node.astext(), False) + "</span>")
    raise nodes.SkipNode


def visit_block(translator, node) -> None:
    from docutils import nodes

    translator.body.append(translator.starttag(node, "div", CLASS="math notranslate"))
    number = equation_number(node, translator)
    if number:
        translator.body.append(f'<span class="eqno">({number})</span>')
    translator.body.append(to_mathml(node.astext(), True) + "</div>\n")
    raise nodes.SkipNode


def setup(app) -> dict:
    """Register the renderer; the book's configuration selects it (``html_math_renderer``)."""
    app.add_html_math_renderer(NAME, (visit_inline, None), (visit_block, None))
    return {"parallel_read_safe": True, "parallel_write_safe": True}
