"""Tables of stored runs beside the paper's values (the rows of Table 2)."""

from __future__ import annotations

import pandas as pd

from . import metrics, paper
from .data import DATASET_NAMES
from .train import Run


def _scores_row(row: dict, scores: dict) -> dict:
    for g in metrics.GROUPS:
        f1, ar = (scores[g]["uf1"], scores[g]["uar"]) if g in scores else (float("nan"),) * 2
        row[f"{DATASET_NAMES[g]} UF1"], row[f"{DATASET_NAMES[g]} UAR"] = f1, ar
    return row


def table2_rows(run: Run, *, ci: bool = False, n_boot: int = 1000) -> pd.DataFrame:
    """One row per protocol of ``run`` plus the paper's HTNet row: UF1 and UAR per group.

    With ``ci=True`` a 95 % subject-bootstrap interval of the composite UF1 and UAR is added.
    """
    rows = []
    for proto in metrics.PROTOCOLS:
        row = {"approach": f"{run.meta['config']['model']} ({run.meta.get('profile')})",
               "protocol": proto, "source": "measured"}
        _scores_row(row, run.metrics[proto])
        if ci:
            b = metrics.bootstrap_ci(run.predictions, proto, n_boot=n_boot)
            row["Full UF1 95% CI"] = "%.3f-%.3f" % b["uf1"]
            row["Full UAR 95% CI"] = "%.3f-%.3f" % b["uar"]
        rows.append(row)
    cited = {"approach": "HTNet (paper, Table 2)", "protocol": "oracle", "source": "cited"}
    _scores_row(cited, {g: {"uf1": f1, "uar": ar} for g, (f1, ar) in paper.TABLE2["HTNet"].items()})
    rows.append(cited)
    return pd.DataFrame(rows)


def markdown(df: pd.DataFrame, digits: int = 4) -> str:
    """A GitHub-flavoured markdown table with floats rounded."""
    cols = list(df.columns)
    fmt = lambda v: f"{v:.{digits}f}" if isinstance(v, float) else str(v)  # noqa: E731
    lines = ["| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
    lines += ["| " + " | ".join(fmt(v) for v in r) + " |" for r in df.itertuples(index=False)]
    return "\n".join(lines) + "\n"
