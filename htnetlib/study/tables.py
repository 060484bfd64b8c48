"""Tables of stored runs beside the paper's values: Table 2 (notebook 05), notebook 12's rules
under every training variant, and notebook 13's leave-one-dataset-out table."""

from __future__ import annotations

import re

from pathlib import Path

import numpy as np
import pandas as pd

from .. import paper
from ..config import Config
from ..data import DATASET_NAMES
from ..evaluation import metrics
from ..evaluation.selection import RULES, SEED_RULES, honest_rule, oracle_rule
from ..training.nested import nested_complete, nested_predictions
from ..training.store import Run, data_fingerprint, is_complete, load_run, run_id, smoke_folder
from ..training.loso import run_loso
from .experiments import TABLE2, table2_config, table2_seeds


def check_parameters(profile: str, *, seeds=None, seed=None) -> None:
    """Check a notebook's papermill parameters: a known profile, whole-number seeds.

    Raises :class:`htnetlib.config.ConfigError` with one line naming the value and the choices.
    """
    from ..config import PROFILES, ConfigError, check_seed

    if profile not in PROFILES:
        raise ConfigError(f"profile={profile!r} is not a profile; choose one of "
                          f"{', '.join(sorted(PROFILES))}")
    if seed is not None:
        check_seed(seed)
    if seeds is not None:
        if isinstance(seeds, (str, bytes, int)) or not list(seeds):
            raise ConfigError(f"seeds={seeds!r} must be a non-empty list of whole numbers")
        for s in seeds:
            check_seed(s)


def profile_note(profiles=("cpu", "paper")) -> str:
    """Markdown for the top of a notebook with measured numbers: which model each profile is."""
    from ..model import parameter_count
    from ..config import PROFILES

    def size(n: int) -> str:
        return f"{n / 1e6:.0f} M" if n >= 1e6 else f"{n / 1e3:.0f} k"

    what = {"paper": "the paper's own HTNet, trained on a GPU",
            "cpu": "the same architecture scaled down to train all 68 folds on two CPU cores",
            "smoke": "a tiny model on a few folds, for tests only"}
    lines = ["**Which model made each row.** Every measured row is labelled with its profile:"]
    for p in profiles:
        c = PROFILES[p]
        lines.append(f"* `{p}`: {what[p]}: dim {c.dim}, {c.heads} head(s), layers "
                     f"{tuple(c.block_repeats)}, {size(parameter_count(c))} parameters, "
                     f"{c.epochs} epochs at learning rate {c.lr:g}.")
    return "\n".join(lines)


def scores_row(row: dict, scores: dict) -> dict:
    """``row`` with UF1 and UAR columns per group from ``{group: {uf1, uar}}`` (NaN if absent)."""
    for g in metrics.GROUPS:
        f1, ar = (scores[g]["uf1"], scores[g]["uar"]) if g in scores else (float("nan"),) * 2
        row[f"{DATASET_NAMES[g]} UF1"], row[f"{DATASET_NAMES[g]} UAR"] = f1, ar
    return row


def table2_rows(run: Run) -> pd.DataFrame:
    """One row per protocol of ``run`` plus the paper's HTNet row: UF1 and UAR per group."""
    name = {"htnet": "HTNet"}.get(run.meta["config"]["model"], run.meta["config"]["model"])
    rows = [scores_row({"approach": f"{name} ({run.meta.get('profile')} profile, "
                                     f"seed {run.meta['seed']})",
                         "protocol": proto, "source": "measured"}, run.metrics[proto])
            for proto in metrics.PROTOCOLS]
    cited = {"approach": "HTNet (paper, Table 2)", "protocol": "oracle", "source": "cited"}
    rows.append(scores_row(cited, {g: {"uf1": f1, "uar": ar}
                                    for g, (f1, ar) in paper.TABLE2["HTNet"].items()}))
    return pd.DataFrame(rows)


def seed_statistic(runs: list[Run], protocol: str, stat=np.mean) -> dict:
    """``{group: {uf1, uar}}``: ``stat`` over the runs (seeds) of each score of ``protocol``."""
    return {g: {m: float(stat([r.metrics[protocol][g][m] for r in runs])) for m in ("uf1", "uar")}
            for g in runs[0].metrics[protocol]}


def variant_runs(data, profile: str, seeds, *, runs_dir, retrain: bool = False, workers: int = 1,
                 names=None) -> dict[str, list[Run]]:
    """Every variant's runs for ``seeds``, read back or trained where missing.

    Logistic regression is deterministic and fitted once (seed 0).
    """
    out = {}
    for name in names or TABLE2:
        cfg = table2_config(name, profile)
        out[name] = [load_run(run_loso(
            data, cfg, seed=s, runs_dir=runs_dir, profile=profile, retrain=retrain,
            workers=workers, progress=False)) for s in table2_seeds(name, seeds)]
    return out


def stored_run(data, config: Config, seed: int, profile: str, runs_dir,
               fingerprint: str | None = None) -> Run | None:
    """The finished run of ``config`` and ``seed`` under ``runs_dir``, or None; never trains
    (``fingerprint``: :func:`data_fingerprint` of ``data``, if already computed)."""
    rid = run_id(config, seed, fingerprint or data_fingerprint(data), profile)
    path = smoke_folder(runs_dir, profile) / rid
    return load_run(path) if is_complete(path) else None


def other_profiles(profile: str) -> list[str]:
    """The measured profiles shown beside ``profile``'s rows where their runs are stored: the
    ``cpu`` rows beside the ``paper`` rows and the other way round (none beside ``smoke``)."""
    return [p for p in ("cpu", "paper") if p != profile] if profile in ("cpu", "paper") else []


def stored_variant_runs(data, profile: str, seeds, *, runs_dir, names=None
                        ) -> dict[str, list[Run]]:
    """Like :func:`variant_runs`, but only the runs already stored: a variant without any
    stored seed is left out. For the profiles of :func:`other_profiles`, never trained here."""
    fingerprint = data_fingerprint(data)
    out = {}
    for name in names or TABLE2:
        cfg = table2_config(name, profile)
        found = [stored_run(data, cfg, s, profile, runs_dir, fingerprint)
                 for s in table2_seeds(name, seeds)]
        found = [r for r in found if r is not None]
        if found:
            out[name] = found
    return out


def table2_full(runs: dict[str, list[Run]], *, n_boot: int = 1000,
                others: dict[str, dict[str, list[Run]]] | None = None) -> pd.DataFrame:
    """The whole Table 2: every cited row of the paper and our measured rows.

    Measured rows give the mean over seeds per group, the spread (sd over seeds) of the
    composite UF1, and 95 % subject-bootstrap intervals of the seed-averaged composite scores.
    ``others`` maps another profile to its stored runs (:func:`stored_variant_runs`); their
    rows follow each approach's rows, labelled with their profile and seed count.
    """
    rows = []
    for name, scores in paper.TABLE2.items():
        row = {"approach": name, "source": "cited (paper, Table 2)",
               "protocol": "oracle" if name == "HTNet" else "as published", "profile": "-",
               "seeds": "-"}
        rows.append(scores_row(row, {g: {"uf1": f, "uar": a} for g, (f, a) in scores.items()}))
    groups = [(name, rs) for key, base in runs.items()
              for name, rs in [(key, base)] + [(key, o[key]) for o in (others or {}).values()
                                               if key in o]]
    for name, rs in groups:
        protocols = ("honest",) if rs[0].meta["config"]["model"] == "logreg" else metrics.PROTOCOLS
        for proto in protocols:
            row = {"approach": name, "source": "measured", "protocol": proto,
                   "profile": rs[0].meta.get("profile"), "seeds": len(rs)}
            scores_row(row, seed_statistic(rs, proto))
            f1 = [r.metrics[proto]["full"]["uf1"] for r in rs]
            row["Full UF1 sd"] = float(np.std(f1, ddof=1)) if len(rs) > 1 else float("nan")
            ci = metrics.bootstrap_ci([r.predictions for r in rs], proto, n_boot=n_boot)
            row["Full UF1 95% CI"] = "%.3f-%.3f" % ci["uf1"]
            row["Full UAR 95% CI"] = "%.3f-%.3f" % ci["uar"]
            rows.append(row)
    return pd.DataFrame(rows)


def to_precision(x: float, step: float) -> str:
    """``x`` shown to ``step`` (a power of ten), the precision its computation supports on every
    CPU; a value below ``step`` (float noise, or a change too small to be one) as the bound
    "below <step>", never its digits (README, "Same bytes on every machine")."""
    decimals = max(0, -int(np.floor(np.log10(step) + 1e-9)))
    if abs(x) < step:
        return f"below {step:.0e}".replace("e-0", "e-") if step < 1e-4 else \
            f"below {step:.{decimals}f}"
    return f"{x:.{decimals}f}"


def cell_text(v, digits: int = 4) -> str:
    """One table cell as a reader sees it (section 4.3's tables): floats rounded, NaN as "-"."""
    if isinstance(v, (float, np.floating)):
        return "-" if np.isnan(v) else f"{v:.{digits}f}"
    return "-" if v is None or (isinstance(v, str) and v.lower() == "nan") else str(v)


def shown(df: pd.DataFrame, digits: int = 4) -> pd.DataFrame:
    """``df`` rounded for display (section 4.3's tables), an empty statistic (NaN) shown as "-"."""
    def cell(v):
        if isinstance(v, (float, np.floating)):
            return "-" if np.isnan(v) else round(float(v), digits)
        return "-" if v is None else v

    return df.astype(object).map(cell)


def markdown(df: pd.DataFrame, digits: int = 4) -> str:
    """A GitHub-flavoured markdown table with floats rounded and NaN shown as "-"."""
    cols = list(df.columns)
    fmt = lambda v: cell_text(v, digits)  # noqa: E731
    lines = ["| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
    lines += ["| " + " | ".join(fmt(v) for v in r) + " |" for r in df.itertuples(index=False)]
    return "\n".join(lines) + "\n"


def bullets(*items) -> str:
    """A Markdown list of ``items`` (each a string, one bullet, or a list of strings, a bullet
    each; empty ones skipped): how a notebook's findings are written, short items instead of
    one long paragraph."""
    flat = []
    for item in items:
        flat += [item] if isinstance(item, str) else list(item)
    return "\n".join(f"- {' '.join(str(i).split())}" for i in flat if str(i).strip()) + "\n"


def loose_lists(text: str) -> str:
    """``text`` with a blank line before every list item that follows another line: each item
    a paragraph of its own, so a long list is never one block of prose (a Markdown "loose"
    list renders as the same list)."""
    return re.sub(r"(?m)(?<=\S)\n(?=[ ]*[-*] )", "\n\n", text)


# --------------------------------------------------------------------------- notebook 12


def rule_tables(runs: list[Run], rule) -> list[pd.DataFrame]:
    """Per run, its predictions table with the ``rule``'s predictions in column ``pred``."""
    out = []
    for r in runs:
        p = r.predictions
        out.append(p[metrics.KEY + ["label"]].assign(
            pred=rule(r.epochs["pred"], p["label"].to_numpy(), p["subject"].to_numpy())))
    return out


def common_samples(runs: list[Run]) -> pd.DataFrame:
    """The samples (keys and labels) that ``runs`` all list in the same order, for a table of
    predictions made from them together; ValueError naming a run that lists another order."""
    base = runs[0].predictions
    for r in runs[1:]:
        if not r.predictions[metrics.KEY].equals(base[metrics.KEY]):
            raise ValueError(f"{r.path.name} lists its samples in another order than "
                             f"{runs[0].path.name}")
    return base[metrics.KEY + ["label"]]


def seed_rule_table(runs: list[Run], rule) -> pd.DataFrame:
    """One predictions table (column ``pred``) of a rule over the seeds ``runs``."""
    return common_samples(runs).assign(pred=rule([r.epochs["pred"] for r in runs]))


def score_row(tables: list[pd.DataFrame], baseline: list[pd.DataFrame], *,
              n_boot: int = 1000) -> dict:
    """Scores of predictions tables (column ``pred``; the mean over ``tables``, i.e. seeds): UF1
    and UAR of the composite and each dataset, the 95 % subject-bootstrap interval of the
    composite UF1 and UAR, and the paired bootstrap difference of the composite UF1 from
    ``baseline`` (tables with column ``pred``) on the same subjects."""

    row = {}
    for g in metrics.GROUPS:
        per_table = [metrics.scores(t, "pred").get(g) for t in tables]
        for m in ("uf1", "uar"):
            row[f"{DATASET_NAMES[g]} {m.upper()}"] = (
                float(np.mean([x[m] for x in per_table])) if per_table[0] else float("nan"))
    ci = metrics.bootstrap_ci(tables, "pred", n_boot=n_boot)
    row["Full UF1 95% CI"] = "%.3f-%.3f" % ci["uf1"]
    row["Full UAR 95% CI"] = "%.3f-%.3f" % ci["uar"]
    diff = metrics.paired_bootstrap(tables, "pred", baseline, "pred", n_boot=n_boot)
    row["UF1 - plain honest"] = diff["diff"]
    row["difference 95% CI"] = "%+.3f to %+.3f" % diff["ci"]
    row["p(difference <= 0)"] = diff["p_le_zero"]
    return row


def selection_rows(runs: dict[str, list[Run]]) -> list[dict]:
    """Every variant under every rule of notebook 12, unscored: ``{"variant", "rule", "honest",
    "runs", "tables"}`` with ``tables`` the predictions tables (column ``pred``; one per seed for
    a per-run rule, one for a seed ensemble).

    Per-run rules (:data:`RULES`, the oracle for reference, and the nested rules where the run
    has an inner store) give one table per seed; seed rules (:data:`SEED_RULES`) give one
    ensemble over a variant's seeds, where it has two or more."""
    rows = []
    for name, rs in runs.items():
        def add(rule, honest, used, tables):
            rows.append({"variant": name, "rule": rule, "honest": honest, "runs": used,
                         "tables": tables})
        for rule, fn in RULES.items():
            add(rule, True, rs, rule_tables(rs, fn))
        nested = [r for r in rs if nested_complete(r.path)]
        for metric in ("uf1", "accuracy"):
            if nested:
                add(f"nested epoch ({'UF1' if metric == 'uf1' else metric})", True, nested,
                    [r.predictions[metrics.KEY + ["label"]].assign(
                        pred=nested_predictions(r, metric)) for r in nested])
        if len(rs) > 1:
            for rule, fn in SEED_RULES.items():
                add(rule, True, rs, [seed_rule_table(rs, fn)])
        add("oracle (test labels; not honest)", False, rs, rule_tables(rs, oracle_rule))
    return rows


def selection_table(runs: dict[str, list[Run]], *, n_boot: int = 1000,
                    rows: list[dict] | None = None) -> pd.DataFrame:
    """Every variant under every rule (:func:`selection_rows`, or ``rows`` already made): one row
    each, scored by :func:`score_row` against the plain variant's final epoch on the same seeds
    (``runs["plain"]``, by seed). Per-run rules are scored per seed and averaged."""
    plain = {r.meta["seed"]: r for r in runs["plain"]}
    out = []
    for row in rows if rows is not None else selection_rows(runs):
        base = rule_tables([plain[r.meta["seed"]] for r in row["runs"]], honest_rule)
        out.append({"variant": row["variant"], "rule": row["rule"], "honest": row["honest"],
                    "seeds": ",".join(str(r.meta["seed"]) for r in row["runs"]),
                    **score_row(row["tables"], base, n_boot=n_boot)})
    return pd.DataFrame(out)


# --------------------------------------------------------------------------- notebook 13


def lodo_table(lodo: dict[str, list[dict]], loso: dict[str, list[Run]], *,
               n_boot: int = 1000) -> pd.DataFrame:
    """Per model and held-out dataset: leave-one-dataset-out UF1 and UAR (final epoch, mean over
    seeds, sd, 95 % subject-bootstrap interval) beside the same model's honest LOSO scores on
    that dataset within the composite (``loso``, the stored LOSO runs, mean over seeds), and the
    paired difference where the LOSO runs hold every sample of the dataset. The last row per
    model pools the three held-out datasets, beside the composite LOSO score."""

    rows = []
    for name, results in lodo.items():
        held = results[0]["meta"]["held_out"]
        for d in held + ["pooled"]:
            def part(t, column):
                t = t if d == "pooled" else t[t["dataset"] == d]
                return t[metrics.KEY + ["label"]].assign(pred=t[column].to_numpy())
            tables = [part(r["predictions"], "honest") for r in results]
            f1 = [metrics.uf1(t["label"], t["pred"]) for t in tables]
            ci = metrics.bootstrap_ci(tables, "pred", n_boot=n_boot)
            row = {"model": name, "seeds": ",".join(str(r["meta"]["seed"]) for r in results),
                   "trained on": ("each pair" if d == "pooled" else " + ".join(
                       DATASET_NAMES[o] for o in held if o != d)),
                   "tested on": "all three (pooled)" if d == "pooled" else DATASET_NAMES[d],
                   "LODO UF1": float(np.mean(f1)),
                   "LODO UAR": float(np.mean([metrics.uar(t["label"], t["pred"])
                                              for t in tables])),
                   "LODO UF1 sd": float(np.std(f1, ddof=1)) if len(f1) > 1 else float("nan"),
                   "LODO UF1 95% CI": "%.3f-%.3f" % ci["uf1"]}
            runs = loso.get(name, [])
            within = [part(r.predictions, "honest") for r in runs]
            same = bool(within) and all(
                len(w) == len(tables[0]) and set(map(tuple, w[metrics.KEY].to_numpy()))
                == set(map(tuple, tables[0][metrics.KEY].to_numpy())) for w in within)
            row["LOSO honest UF1"] = float(np.mean([metrics.uf1(w["label"], w["pred"])
                                                    for w in within])) if same else float("nan")
            row["LOSO honest UAR"] = float(np.mean([metrics.uar(w["label"], w["pred"])
                                                    for w in within])) if same else float("nan")
            row["LOSO seeds"] = ",".join(str(r.meta["seed"]) for r in runs) if same else "-"
            if same:
                diff = metrics.paired_bootstrap(tables, "pred", within, "pred", n_boot=n_boot)
                row["LODO - LOSO UF1"] = diff["diff"]
                row["difference 95% CI"] = "%+.3f to %+.3f" % diff["ci"]
            else:
                row["LODO - LOSO UF1"], row["difference 95% CI"] = float("nan"), "-"
            rows.append(row)
    return pd.DataFrame(rows)

