"""Notebook 12's leak test over every stored run (beyond the paper): each honest rule must pass
the amplified test of :func:`htnetlib.evaluation.leak.leak_test` on every run, and each leaky
reference (:func:`htnetlib.evaluation.leak.leaky_rules`, and the best of N variants by test
score) must fail it on every run, so the test is seen to be able to fail."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from ..evaluation import leak, metrics, selection
from ..training import nested
from ..training.store import RUN, Run, is_complete, load_run

BEST_OF_N = "best of N variants by pooled test UF1 (final epochs)"


def stored_runs(runs_dir: Path | str) -> list[Run]:
    """Every finished run in ``runs_dir`` with more than one epoch (a one-epoch run, such as
    logistic regression, leaves no epoch to choose), in folder order."""
    runs = [load_run(p) for p in sorted(Path(runs_dir).iterdir()) if is_complete(p, RUN)]
    return [r for r in runs if len(r.epochs["pred"]) > 1]


def rules_for(run: Run) -> list[tuple[str, str, object]]:
    """``(rule, kind, function)`` for one run: the honest rules (the nested ones where the run
    has an inner store) and the leaky references."""
    p = run.predictions
    out = [(name, "honest", fn) for name, fn in selection.RULES.items()]
    if nested.nested_complete(run.path):
        inner = nested.load_inner(run.path)
        rows = nested.table_rows(pd.DataFrame({k: inner[k] for k in metrics.KEY}), p)
        for m in ("uf1", "accuracy"):
            out.append((f"nested epoch ({'UF1' if m == 'uf1' else m})", "honest",
                        selection.nested_rule(inner, rows, inner["label"], m)))
    dataset_of = dict(zip(p["subject"], p["dataset"]))
    out += [(name, "leaky reference", fn) for name, fn in leak.leaky_rules(dataset_of).items()]
    return out


def run_leaks(runs: list[Run]) -> pd.DataFrame:
    """One row per run and rule: how many subjects' own predictions moved."""
    rows = []
    for r in runs:
        p = r.predictions
        y, subj = p["label"].to_numpy(), p["subject"].to_numpy()
        for name, kind, fn in rules_for(r):
            rows.append({"run": r.path.name, "rule": name, "kind": kind,
                         "subjects": p["subject"].nunique(),
                         "moved": len(leak.leak_test(fn, r.epochs["pred"], y, subj))})
    return pd.DataFrame(rows)


def best_of_n_leaks(runs: list[Run]) -> pd.DataFrame:
    """The best of N variants as a rule: per seed, the final epochs of every run of that seed
    over the same samples stacked as N "epochs", one chosen for all by the pooled test UF1."""
    rows = []
    by_seed: dict[tuple, list[Run]] = {}
    for r in runs:
        key = (r.meta["seed"], tuple(map(tuple, r.predictions[metrics.KEY].to_numpy())))
        by_seed.setdefault(key, []).append(r)
    for (seed, _), rs in by_seed.items():
        if len(rs) < 2:
            continue
        p = rs[0].predictions
        stack = np.stack([r.epochs["pred"][-1] for r in rs])
        moved = leak.leak_test(leak.global_oracle, stack, p["label"].to_numpy(),
                               p["subject"].to_numpy())
        rows.append({"run": f"{len(rs)} runs of seed {seed}", "rule": BEST_OF_N,
                     "kind": "leaky reference", "subjects": p["subject"].nunique(),
                     "moved": len(moved)})
    return pd.DataFrame(rows)


def leak_summary(per_run: pd.DataFrame) -> pd.DataFrame:
    """Per rule: runs tested, runs where some subject moved, and the range of subjects moved;
    ``verdict`` says whether the rule behaved as its kind requires on every run."""
    rows = []
    for (rule, kind), g in per_run.groupby(["rule", "kind"], sort=False):
        failed = int((g["moved"] > 0).sum())
        ok = failed == 0 if kind == "honest" else failed == len(g)
        rows.append({"rule": rule, "kind": kind, "runs tested": len(g),
                     "runs where a subject moved": failed,
                     "subjects moved (min-max)": f"{g['moved'].min()}-{g['moved'].max()} "
                                                 f"of {g['subjects'].max()}",
                     "as required": "yes" if ok else "NO"})
    return pd.DataFrame(rows)


def leak_note(summary: pd.DataFrame) -> str:
    """The leak table in words, from :func:`leak_summary`."""
    honest = summary[summary["kind"] == "honest"]
    leaky = summary[summary["kind"] != "honest"]
    bad = summary[summary["as required"] != "yes"]
    return (f"{len(honest)} honest rules were tested on up to "
            f"{honest['runs tested'].max()} stored runs each and "
            f"{int((honest['runs where a subject moved'] == 0).sum())} of them moved no subject "
            f"on any run; {int((leaky['as required'] == 'yes').sum())} of {len(leaky)} leaky "
            f"references moved at least one subject on every run they were tested on. "
            + ("Every rule behaved as its kind requires." if bad.empty else
               "Not as required: " + "; ".join(bad["rule"]) + "."))
