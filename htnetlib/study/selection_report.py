"""Notebook 12, honest model selection (beyond the paper): the variant runs, the leak test,
cross-subject against nested selection, and the figures and findings of the search for the
best HTNet whose epochs no held-out label chose."""

from __future__ import annotations

import numpy as np
import pandas as pd

from .. import paper
from ..config import profile_config
from ..evaluation import metrics, selection
from ..io import read_json
from ..training import nested
from ..training.loso import run_loso
from ..training.store import Run, load_run
from .leak_report import leak_note
from .experiments import (NESTED_VARIANTS, SELECTION_VARIANTS, nested_seeds, selection_config,
                          selection_seeds)

GOAL = 0.76  # the composite UF1 the search aims at (the plan of notebook 12)


def selection_runs(data, profile: str, seeds, *, runs_dir, retrain: bool = False,
                   workers: int = 1) -> tuple[dict[str, list[Run]], Run]:
    """``(runs, logreg)``: every selection variant's LOSO runs and the logistic regression."""
    runs = {}
    for name in SELECTION_VARIANTS:
        cfg = selection_config(name, profile)
        runs[name] = [load_run(run_loso(
            data, cfg, seed=s, runs_dir=runs_dir, profile=profile, retrain=retrain,
            workers=workers, progress=False)) for s in selection_seeds(name, seeds)]
    for name in NESTED_VARIANTS:
        for s in nested_seeds(name, seeds):
            nested.run_nested(data, selection_config(name, profile), seed=s, runs_dir=runs_dir,
                              profile=profile, workers=workers, retrain=retrain)
    logreg = load_run(run_loso(data, profile_config(profile, "logreg"), runs_dir=runs_dir,
                               profile=profile, progress=False))
    return runs, logreg


def run_table(runs: dict[str, list[Run]]) -> pd.DataFrame:
    """Each variant run with its changes and its training and inner-fit time (CPU minutes)."""
    rows = []
    for name, rs in runs.items():
        for r in rs:
            inner = r.path / nested.INNER_DIR / "config.json"
            inner_s = read_json(inner)["train_seconds"] if inner.is_file() else float("nan")
            rows.append({"variant": name, "seed": r.meta["seed"], "run": r.meta["run_id"],
                         "changes": ", ".join(f"{k}={v}" for k, v in
                                              SELECTION_VARIANTS[name].items()) or "-",
                         "training (CPU min)": r.meta["train_seconds"] / 60,
                         "inner fits (CPU min)": inner_s / 60})
    return pd.DataFrame(rows)


SHOWN = ["variant", "rule", "seeds", "Full UF1", "Full UF1 95% CI", "Full UAR", "SMIC UF1",
         "CASME II UF1", "SAMM UF1", "UF1 - plain honest", "difference 95% CI"]


def anchors(logreg: Run) -> dict[str, float]:
    """The composite UF1 values the honest rows are read against (goal, Table 2 rows)."""
    return {"goal": GOAL, "STSTNet, paper (final epoch)": paper.TABLE2["STSTNet"]["full"][0],
            "STSTNet, MEB toolkit re-run": 0.713,
            "logistic regression, here": logreg.metrics["honest"]["full"]["uf1"]}


def variant_colours() -> dict[str, str]:
    """One colour per selection variant, shared by the notebook's figures."""
    return {v: f"C{i}" for i, v in enumerate(SELECTION_VARIANTS)}


def honest_rows(table: pd.DataFrame) -> pd.DataFrame:
    """The honest rows of the selection table (no held-out label chose anything)."""
    return table[table["honest"]].reset_index(drop=True)


def selection_figure(table: pd.DataFrame, marks: dict[str, float], profile: str):
    """Every honest rule and variant with its 95 % interval beside the anchors (notebook 12)."""
    import matplotlib.pyplot as plt

    honest = honest_rows(table)
    lo_hi = honest["Full UF1 95% CI"].str.split("-", expand=True).astype(float)
    fig, ax = plt.subplots(figsize=(11, 0.25 * len(honest) + 1.5))
    colours = variant_colours()
    ypos = np.arange(len(honest))[::-1]
    ax.errorbar(honest["Full UF1"], ypos,
                xerr=[honest["Full UF1"] - lo_hi[0], lo_hi[1] - honest["Full UF1"]],
                fmt="none", ecolor="0.7", lw=1)
    ax.scatter(honest["Full UF1"], ypos, c=[colours[v] for v in honest["variant"]], zorder=3,
               s=18)
    for (label, x), ls in zip(marks.items(), ["-", "--", ":", "-."]):
        ax.axvline(x, color="k" if label == "goal" else "0.4", ls=ls, lw=1,
                   label=f"{label} {x:.3f}")
    ax.set_yticks(ypos, [f"{v} | {r} ({s})" for v, r, s in
                         zip(honest["variant"], honest["rule"], honest["seeds"])], fontsize=7)
    ax.set(xlabel="composite UF1 (95 % subject-bootstrap interval)",
           title=f"Honest rules and training variants, {profile} profile")
    ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1))
    fig.tight_layout()
    return fig


def agreement(runs: dict[str, list[Run]]) -> tuple[pd.DataFrame, dict]:
    """``(table, chosen_by)``: cross-subject against nested epochs, run by run, for every run
    with an inner store (so the two rules always compare on the same seed); ``chosen_by``
    holds the UF1 choices by (variant, seed)."""
    rows, chosen_by = [], {}
    for name in NESTED_VARIANTS:
        for r in [r for r in runs[name] if nested.nested_complete(r.path)]:
            p = r.predictions
            pred, y, subj = r.epochs["pred"], p["label"].to_numpy(), p["subject"].to_numpy()
            for m in ("uf1", "accuracy"):
                cross = selection.cross_subject_epochs(pred, y, subj, m)
                nest = nested.nested_chosen_epochs(r, m)
                d = np.array([cross[s] - nest[s] for s in nest])
                glob = selection.pooled_best_epoch(pred, y, m)  # the global oracle's epoch
                if m == "uf1":
                    chosen_by[name, r.meta["seed"]] = (cross, nest)
                both = p.assign(cross=selection.at_epochs(pred, subj, cross),
                                nested=selection.at_epochs(pred, subj, nest))
                res = metrics.paired_bootstrap(both, "cross", both, "nested", n_boot=1000)
                rows.append({"variant": name, "seed": r.meta["seed"], "criterion": m,
                             "same epoch (subjects)": int((d == 0).sum()), "subjects": len(d),
                             "median |cross - nested| (epochs)": float(np.median(np.abs(d))),
                             "cross = global oracle (subjects)":
                                 int(sum(cross[s] == glob for s in cross)),
                             "cross-subject UF1": metrics.uf1(y, both["cross"]),
                             "nested UF1": metrics.uf1(y, both["nested"]),
                             "final epoch UF1": metrics.uf1(y, pred[-1]),
                             "cross - nested UF1": res["diff"],
                             "paired 95% CI": "%+.3f to %+.3f" % res["ci"]})
    return pd.DataFrame(rows), chosen_by


def agreement_figure(chosen_by: dict, runs: dict[str, list[Run]]):
    """The epoch each rule chose per held-out subject (UF1), cross-subject against nested."""
    import matplotlib.pyplot as plt

    cols = min(4, len(chosen_by))
    rows = -(-len(chosen_by) // cols)
    fig, axes = plt.subplots(rows, cols, figsize=(3.1 * cols, 3.1 * rows), squeeze=False)
    for ax in axes.flat[len(chosen_by):]:
        ax.set_visible(False)
    for ax, ((name, seed), (cross, nest)) in zip(axes.flat, chosen_by.items()):
        s = list(nest)
        ax.scatter([nest[k] + 1 for k in s], [cross[k] + 1 for k in s], s=12, alpha=0.6)
        top = len(runs[name][0].epochs["epoch"])
        ax.plot([1, top], [1, top], color="0.6", lw=1)
        ax.set(xlabel="nested epoch", ylabel="cross-subject epoch", title=f"{name}, seed {seed}")
        ax.title.set_fontsize(8)
    fig.suptitle("Epoch chosen per held-out subject (UF1)")
    fig.tight_layout()
    return fig


def stopping_curves_figure(runs: dict[str, list[Run]], profile: str):
    """Composite UF1 by stopping epoch per variant, mean over its seeds, beside the goal."""
    import matplotlib.pyplot as plt

    colours = variant_colours()
    fig, ax = plt.subplots(figsize=(8, 4))
    for name, rs in runs.items():
        curve = np.mean([[metrics.uf1(r.predictions["label"], row) for row in r.epochs["pred"]]
                         for r in rs], axis=0)
        ax.plot(rs[0].epochs["epoch"], curve,
                label=f"{name} ({len(rs)} seed{'s' * (len(rs) > 1)})", color=colours[name])
    ax.axhline(GOAL, color="k", lw=1, label=f"goal {GOAL}")
    low, high = ax.get_ylim()
    ax.set_ylim(low, max(high, GOAL) + 0.05 * (max(high, GOAL) - low))  # headroom above the goal
    ax.set(xlabel="epoch", ylabel="composite UF1 (all folds stopped there)",
           title=f"UF1 by stopping epoch, {profile} profile")
    ax.legend(fontsize=7)
    fig.tight_layout()
    return fig


def findings_12(table: pd.DataFrame, runs_made: pd.DataFrame, leaks: pd.DataFrame,
                agree: pd.DataFrame, marks: dict[str, float], runs: dict[str, list[Run]],
                profile: str) -> list[str]:
    """Notebook 12's "What we found" bullets (honest model selection, beyond the paper), as a
    list (:func:`htnetlib.study.tables.bullets` writes them)."""
    honest = honest_rows(table)
    best = honest.loc[honest["Full UF1"].idxmax()]
    plain = honest[(honest["variant"] == "plain") & (honest["rule"] == "final epoch")].iloc[0]
    nest = honest[honest["rule"] == "nested epoch (UF1)"].set_index("variant")
    n_up = int((honest["difference 95% CI"].str.split(" to ").str[0].astype(float) > 0).sum())
    n_down = int((honest["difference 95% CI"].str.split(" to ").str[1].astype(float) < 0).sum())
    goal = marks["goal"]
    new_cpu = runs_made.loc[runs_made["variant"] != "plain", "training (CPU min)"].sum()
    inner_cpu = runs_made["inner fits (CPU min)"].sum()  # NaN (no inner store) is skipped
    oracle = table[(table["variant"] == "plain") & ~table["honest"]]["Full UF1"].iloc[0]
    same = agree["same epoch (subjects)"]
    return [
        f"Without any held-out label, the **{profile}**-profile HTNet scores a composite UF1 of "
        f"{plain['Full UF1']:.3f} at its final epoch (plain honest protocol, seeds "
        f"{plain['seeds']}); the oracle gives {oracle:.3f}.",
        f"Best of the {len(honest)} honest rows: **{best['variant']}** with "
        f"**{best['rule']}** (seeds {best['seeds']}): {best['Full UF1']:.3f} (95 % CI "
        f"{best['Full UF1 95% CI']}), {best['UF1 - plain honest']:+.3f} against plain (paired "
        f"95 % CI {best['difference 95% CI']}); an optimistic pick, being the largest of "
        f"{len(honest)}.",
        (f"It reaches the goal of {goal:.2f}" if best["Full UF1"] >= goal else
         f"It stays {goal - best['Full UF1']:.3f} below the goal of {goal:.2f}")
        + " and is " + ", ".join(f"{'above' if best['Full UF1'] > x else 'below'} {k} ({x:.4f})"
                                 for k, x in marks.items() if k != "goal") + ".",
        f"{n_up} of the {len(honest)} honest rows have a paired interval above 0, {n_down} "
        f"below; with {len(honest)} comparisons at 95 %, about {0.05 * len(honest):.0f} would "
        "exclude 0 by chance alone.",
        "The nested rule (the reference, epochs chosen inside each fold's training subjects): "
        + ", ".join(f"{nest.loc[v, 'Full UF1']:.3f} for {v} (seeds {nest.loc[v, 'seeds']})"
                    for v in nest.index) + ".",
        f"Cross-subject and nested selection pick the same epoch for {same.min()} to "
        f"{same.max()} of {agree['subjects'].max()} subjects ({len(agree)} runs and criteria).",
        leak_note(leaks),
        f"Cost on this machine: the {len(runs_made) - len(runs['plain'])} variant runs took "
        f"{new_cpu:.0f} CPU-minutes of fold training, the nested rule's inner fits "
        f"{inner_cpu:.0f} more; the other rules cost no training.",
    ]


def agreement_note(agree: pd.DataFrame) -> str:
    """Cross-subject against nested selection (notebook 12) in words: the UF1 gaps and their
    paired 95 % subject-bootstrap intervals, computed from :func:`agreement`'s table."""
    gaps = agree["cross - nested UF1"]
    lows = agree["paired 95% CI"].str.split(" to ").str[0].astype(float)
    highs = agree["paired 95% CI"].str.split(" to ").str[1].astype(float)
    resolved = int(((lows > 0) | (highs < 0)).sum())
    rows = "; ".join(f"{a['variant']} seed {a['seed']}, {a['criterion']}: "
                     f"{a['cross - nested UF1']:+.3f} ({a['paired 95% CI']})"
                     for _, a in agree.iterrows())
    same = agree["cross = global oracle (subjects)"] / agree["subjects"]
    return ("Cross-subject minus nested composite UF1, each on the same run (same seed), with the "
            f"paired 95 % subject-bootstrap interval: {rows}. The gaps run from "
            f"{gaps.min():+.3f} to {gaps.max():+.3f}; {resolved} of {len(agree)} intervals "
            f"exclude 0. On these runs the cross-subject rule picks the global oracle's epoch "
            f"(one epoch for all, chosen with the pooled test labels, leaky) for "
            f"{same.min():.0%} to {same.max():.0%} of the subjects: it sits next to a pooled "
            "leak, which is why nested selection, not it, is the reference.")


def nested_scheme_figure(data, profile: str):
    """Nested selection (notebook 12) as a picture: one outer LOSO fold and its inner
    scikit-learn GroupKFold split of the training subjects, from the split the runs used."""
    import matplotlib.pyplot as plt
    from matplotlib.patches import Patch

    split = nested.inner_splits(data, selection_config("plain", profile))[0]
    subjects = data.table["subject"].to_numpy()
    order = list(pd.unique(subjects))
    group = {s: int(split["groups"][subjects == s][0]) for s in order}
    k = max(group.values()) + 1
    colour = {"held out": "tab:red", "train": "tab:blue", "validate": "tab:orange",
              "unused": "0.85"}
    fig, ax = plt.subplots(figsize=(12, 0.45 * (k + 1) + 1.6))
    rows = [("outer LOSO fold: test one subject", lambda s: "held out" if s == split["subject"]
             else "train")]
    rows += [(f"inner fit {g + 1} of {k}", lambda s, g=g: "unused" if group[s] < 0 else
              "validate" if group[s] == g else "train") for g in range(k)]
    for r, (name, role) in enumerate(rows):
        for j, s in enumerate(order):
            ax.add_patch(plt.Rectangle((j, -r - 0.9), 0.9, 0.8, color=colour[role(s)]))
    ax.set(xlim=(0, len(order)), ylim=(-len(rows), 0.2), xticks=[],
           xlabel=f"the {len(order)} subjects (one square each)")
    ax.set_yticks([-r - 0.5 for r in range(len(rows))], [n for n, _ in rows])
    ax.legend(handles=[Patch(color=c, label=n) for n, c in colour.items()], ncol=4, fontsize=9,
              loc="lower center", bbox_to_anchor=(0.5, 1.0), frameon=False)
    ax.set_title("Nested selection: each inner fit trains on the other training subjects and "
                 "scores every epoch on its validation group;\nthe epoch with the best pooled "
                 "validation score is the one used for the held-out subject", fontsize=10,
                 pad=28)
    for side in ("top", "right", "bottom", "left"):
        ax.spines[side].set_visible(False)
    fig.tight_layout()
    return fig
