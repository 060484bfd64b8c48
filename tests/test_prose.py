"""A notebook's prose against its own computations (issue 35).

Three checks on the markdown cells of every committed notebook (and, for the claims, on the
Markdown a cell prints, such as "What we found"):

* **Named, then computed.** A markdown sentence that names an estimator or a selection rule
  (Farneback, TV-L1, DIS, oracle, final epoch, vote, nested, cross-subject, global oracle,
  logistic regression, STSTNet, MTCNN, LeaveOneGroupOut) needs a code cell or a code output of
  the same notebook that computes or reports it; a sentence that points to another notebook
  ("notebook 12 ...") is exempt.
* **Introduced where first used.** Terms a reader cannot guess (MTCNN, D&C-RoIs, uniform LBP,
  DIS) are set in bold (``**term**``, the notebooks' mark of a definition) at their first use in
  the markdown of a walkthrough notebook (01-04, read first), or that sentence refers to the
  notebook that explains them; the later notebooks build on the walkthrough's terms.
* **Claims match the table.** A sentence that ranks flow estimators by accuracy ("X is more
  exact", "X errs least", "less accurate than Y", "X underestimates the motion") is checked
  against every table in the notebook's outputs whose rows are those estimators: the claimed
  best (worst) must have the smallest (largest) value in each error column the sentence's
  scope selects ("smooth" field, "action-unit" or "small moving" areas; all when none is
  named), and an estimator said to underestimate must have a speed ratio below 1 (and below
  the ones it is compared with). The old notebook 01 said TV-L1 was "more exact on small
  moving areas" beside a table where it erred by 0.415 px to Farneback's 0.218.
"""

from __future__ import annotations

import json
import re
from html.parser import HTMLParser
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOKS = sorted((ROOT / "notebooks").glob("[0-9][0-9]_*.ipynb"))

# term: (how prose names it, what a code cell or output that computes it contains)
TERMS = {
    "Farneback": (r"Farneb[aä]ck", r"farneback"),
    "TV-L1": (r"\bTV-?L1\b", r"tvl1|tv-l1"),
    "DIS": (r"\bDIS\b", r"\bdis\b|DISOpticalFlow"),
    "oracle": (r"\boracle\b", r"oracle"),
    "final epoch": (r"\b(final|last) epoch", r"final|honest|\[-1\]"),
    "vote": (r"\bvot(e|es|ing)\b", r"vote"),
    "nested": (r"\bnested\b", r"nested"),
    "cross-subject": (r"\bcross-subject\b", r"cross.subject"),
    "global oracle": (r"\bglobal oracle\b", r"global oracle|pooled_best_epoch"),
    "logistic regression": (r"\blogistic regression\b", r"logreg|logistic"),
    "STSTNet": (r"\bSTSTNet\b", r"ststnet"),
    "MTCNN": (r"\bMTCNN\b", r"mtcnn|landmarks"),
    "LeaveOneGroupOut": (r"\bLeaveOneGroupOut\b", r"LeaveOneGroupOut"),
}
# terms that must be introduced (bold) at their first use in a notebook's markdown
INTRODUCED = {"MTCNN": r"MTCNN", "D&C-RoIs": r"D&C-RoIs", "uniform LBP": r"uniform LBP",
              "DIS": r"\bDIS\b"}
# (notebook, term) left to their notebooks' owners: named in prose, computed in another notebook
KNOWN = {("12_honest_selection.ipynb", "MTCNN"): "mirrored landmarks; notebook 02 finds them",
         ("14_from_frames_to_prediction.ipynb", "Farneback"): "the pipeline's steps name the "
         "method notebook 01 computes; notebook 14 runs TV-L1"}
ELSEWHERE = re.compile(r"\bnotebooks? \d\d\b", re.I)

ESTIMATORS = {"tvl1": r"\bTV-?L1\b|`tvl1`", "farneback": r"Farneb[aä]ck|`farneback`",
              "dis": r"\bDIS\b|`dis`"}
BETTER = r"more (?:exact|accurate|precise)|most (?:exact|accurate|precise)|errs? (?:least|less)" \
         r"|(?:smaller|smallest|lower|lowest) error"
WORSE = r"less (?:exact|accurate|precise)|least (?:exact|accurate|precise)|errs? (?:most|more)" \
        r"|(?:larger|largest|higher|highest) error"
UNDER = r"underestimat"
SCOPES = {"smooth": "smooth", "action-unit": "action-unit", "small moving": "action-unit",
          "moving area": "action-unit", "local motion": "action-unit"}


def cells(nb: dict, kind: str) -> list[str]:
    return ["".join(c["source"]) if isinstance(c["source"], list) else c["source"]
            for c in nb["cells"] if c["cell_type"] == kind]


def outputs(nb: dict, mime: str) -> list[str]:
    out = []
    for c in nb["cells"]:
        for o in c.get("outputs", []):
            if o.get("output_type") == "stream":
                text = o.get("text", "")
                out.append("".join(text) if mime == "text/plain" else "")
            value = o.get("data", {}).get(mime)
            if value is not None:
                out.append("".join(value) if isinstance(value, list) else value)
    return out


def sentences(text: str) -> list[str]:
    """The sentences of ``text``; each item of a Markdown list ends a sentence."""
    out = []
    for item in re.split(r"\n\s*[-*]\s+", "\n" + text.replace("**", "")):
        item = re.sub(r"\s+", " ", item).strip()
        out += [s for s in re.split(r"(?<=[.!?])\s+(?=[A-Z*`(])", item) if s.strip()]
    return out


def unbacked_terms(nb: dict, name: str = "") -> list[str]:
    """Terms the prose names that no code cell or code output of ``nb`` computes."""
    code = "\n".join(cells(nb, "code") + outputs(nb, "text/plain") + outputs(nb, "text/markdown")
                     + outputs(nb, "text/html"))
    problems = []
    for term, (prose, computed) in TERMS.items():
        if (name, term) in KNOWN:
            continue
        for s in (s for md in cells(nb, "markdown") for s in sentences(md)):
            if re.search(prose, s) and not ELSEWHERE.search(s) \
                    and not re.search(computed, code, re.I):
                problems.append(f"names {term!r} but no cell computes it: {s[:120]!r}")
                break
    return problems


def uninterpreted_terms(nb: dict) -> list[str]:
    """Terms whose first use in the markdown is neither bold nor a reference to a notebook."""
    problems = []
    for term, pattern in INTRODUCED.items():
        for md in cells(nb, "markdown"):
            hit = re.search(pattern, md)
            if not hit:
                continue
            bold = re.search(r"\*\*[^*]*" + pattern + r"[^*]*\*\*", md)
            first = next(s for s in sentences(md) if re.search(pattern, s))
            if not (bold and bold.start() <= hit.start()) and not ELSEWHERE.search(first):
                problems.append(f"uses {term!r} before introducing it: {first[:120]!r}")
            break
    return problems


class Tables(HTMLParser):
    """Every HTML table of an output as (column names, {row name: [cells]})."""

    def __init__(self):
        super().__init__()
        self.tables, self.row, self.cell, self.head = [], None, None, False

    def handle_starttag(self, tag, attrs):
        if tag == "table":
            self.tables.append(([], {}))
        elif tag == "thead":
            self.head = True
        elif tag == "tbody":
            self.head = False
        elif tag == "tr":
            self.row = []
        elif tag in ("th", "td"):
            self.cell = ""

    def handle_data(self, data):
        if self.cell is not None:
            self.cell += data

    def handle_endtag(self, tag):
        if tag in ("th", "td") and self.row is not None:
            self.row.append(self.cell.strip())
            self.cell = None
        elif tag == "tr" and self.tables and self.row:
            columns, rows = self.tables[-1]
            if self.head and not columns:
                columns.extend(self.row[1:])
            elif not self.head:
                rows[self.row[0]] = self.row[1:]
            self.row = None


def estimator_tables(nb: dict) -> list[dict]:
    """``{column: {estimator: value}}`` of every output table whose rows are estimators."""
    found = []
    for html in outputs(nb, "text/html"):
        parser = Tables()
        parser.feed(html)
        for columns, rows in parser.tables:
            if len(set(rows) & set(ESTIMATORS)) < 2:
                continue
            table = {}
            for j, col in enumerate(columns):
                try:
                    table[col] = {m: float(v[j]) for m, v in rows.items() if m in ESTIMATORS}
                except (ValueError, IndexError):
                    continue
            found.append(table)
    return found


def mentions(s: str) -> list[tuple[int, str]]:
    return sorted((m.start(), name) for name, pat in ESTIMATORS.items()
                  for m in re.finditer(pat, s))


def false_claims(nb: dict) -> list[str]:
    """Sentences ranking estimators against the notebook's own estimator tables."""
    tables = estimator_tables(nb)
    if not tables:
        return []
    problems = []
    texts = cells(nb, "markdown") + outputs(nb, "text/markdown")
    for s in (s for t in texts for s in sentences(t)):
        named = mentions(s)
        if not named:
            continue
        scope = {col for word, col in SCOPES.items() if word in s.lower()}
        for kind, pattern in (("better", BETTER), ("worse", WORSE), ("under", UNDER)):
            for claim in re.finditer(pattern, s):
                before = [n for at, n in named if at < claim.start()]
                subject = before[-1] if before else named[0][1]
                than = s[claim.end():].split(";")[0]
                others = [n for n in dict.fromkeys(n for _, n in mentions(than)) if n != subject] \
                    if re.match(r"\s*(?:\w+\s+){0,4}than\b", than) else []
                for table in tables:
                    wanted = "speed" if kind == "under" else "error"
                    columns = [c for c in table if wanted in c.lower() or
                               (wanted == "error" and c.startswith("EPE"))]
                    if scope:
                        columns = [c for c in columns if any(w in c for w in scope)] or columns
                    for col in columns:
                        values = table[col]
                        if subject not in values:
                            continue
                        rivals = [values[o] for o in (others or values) if o != subject
                                  and o in values]
                        mine = values[subject]
                        ok = (mine <= min(rivals) if kind == "better" else
                              mine >= max(rivals) if kind == "worse" else
                              mine < 1 and (not others or mine <= min(rivals)))
                        if rivals and not ok:
                            problems.append(f"{s[:140]!r} contradicts {col!r}: {subject} "
                                            f"{mine:g}, others {rivals}")
    return problems


def problems_of(nb: dict, walkthrough: bool = True, name: str = "") -> list[str]:
    return (unbacked_terms(nb, name) + (uninterpreted_terms(nb) if walkthrough else [])
            + false_claims(nb))


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_prose_matches_the_notebook(path):
    problems = problems_of(json.loads(path.read_text(encoding="utf-8")),
                           walkthrough=path.name[:2] <= "04", name=path.name)
    assert not problems, f"{path.name}:\n  " + "\n  ".join(problems)


# --------------------------------------------------------------------------- the checks fail


def notebook(markdown: list[str], code: list[str], html: str = "") -> dict:
    cs = [{"cell_type": "markdown", "source": m} for m in markdown]
    outs = [{"output_type": "execute_result", "data": {"text/html": html}}] if html else []
    cs += [{"cell_type": "code", "source": c, "outputs": outs} for c in code]
    return {"cells": cs}


TABLE = ("<table><thead><tr><th></th><th>median endpoint error (px), smooth field</th>"
         "<th>median endpoint error (px), action-unit areas</th><th>speed found</th></tr>"
         "<tr><th>method</th><th></th><th></th><th></th></tr></thead><tbody>"
         "<tr><th>tvl1</th><td>0.106</td><td>0.415</td><td>0.547</td></tr>"
         "<tr><th>farneback</th><td>0.155</td><td>0.218</td><td>0.851</td></tr>"
         "<tr><th>dis</th><td>0.154</td><td>0.437</td><td>0.477</td></tr></tbody></table>")


def test_a_claim_against_the_table_fails():
    wrong = notebook(["**TV-L1** is slower and more exact on small moving areas."],
                     ['flow.optical_flow(a, b, "tvl1")'], TABLE)
    assert any("contradicts" in p and "action-unit" in p for p in problems_of(wrong))
    right = notebook(["On the smooth field **TV-L1** errs least. On the action-unit areas "
                      "**Farneback** is more accurate than **TV-L1**."],
                     ['flow.optical_flow(a, b, "tvl1"), flow.optical_flow(a, b, "farneback")'],
                     TABLE)
    assert problems_of(right) == []
    worse = notebook(["**Farneback** is less accurate than **DIS** on the action-unit areas."],
                     ['"farneback", "dis"'], TABLE)
    assert any("contradicts" in p for p in problems_of(worse))


def test_an_estimator_nobody_computes_fails():
    nb = notebook(["Flow by **Farneback**; the nested rule picks the epoch."],
                  ['flow.optical_flow(a, b, "farneback")'])
    assert problems_of(nb) == ["names 'nested' but no cell computes it: "
                               "'Flow by Farneback; the nested rule picks the epoch.'"]
    elsewhere = notebook(["Notebook 12 computes the nested rule."], ["x = 1"])
    assert problems_of(elsewhere) == []


def test_a_term_used_before_its_introduction_fails():
    nb = notebook(["The apex is spotted with D&C-RoIs.", "**D&C-RoIs** searches ..."], ["x"])
    assert [p.split(":")[0] for p in problems_of(nb)] == ["uses 'D&C-RoIs' before introducing it"]
    ok = notebook(["MTCNN's landmarks (notebook 02 explains MTCNN) are used."], ['"mtcnn"'])
    assert problems_of(ok) == []


def test_the_old_notebook_01_fails():
    """The notebook 01 of issue 35's review: its prose called TV-L1 more exact on small moving
    areas beside a table that shows the opposite, and used D&C-RoIs and uniform LBP undefined."""
    import subprocess

    old = subprocess.run(["git", "show", "e72fcbe:notebooks/01_optical_flow.ipynb"], cwd=ROOT,
                         capture_output=True, text=True)
    if old.returncode:
        pytest.skip("the reviewed commit is not in this checkout")
    problems = problems_of(json.loads(old.stdout))
    assert any("contradicts" in p and "tvl1" in p for p in problems), problems
    assert any("'D&C-RoIs' before" in p for p in problems), problems
    assert any("'uniform LBP' before" in p for p in problems), problems
