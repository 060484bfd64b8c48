"""Notebook 15 (beyond the paper): candidates toward an honest 0.76, chosen on seeds 0-2 without
any held-out label, and their pre-registered confirmation on fresh seeds 6-8.

The candidates are **readouts** of one training (``Config.readouts``,
:func:`htnetlib.training.fold.train_fold`), each stored after every epoch: the model's own
probabilities; test-time mirror augmentation (TTA: the mean of the probabilities of the test
face and of its mirror); stochastic weight averaging (SWA: a ``torch.optim.swa_utils
.AveragedModel`` whose weights are the running mean of the network's weights from the first
epoch of the last quarter up to the current epoch; its probabilities are stored after each of
those epochs, so a rule votes over them as over the model's own); and both. They are read from
the whole-map model, the regions model, or both together (the runs of the two architectures
pooled in one vote on the same folds). A run with readouts trains exactly as the run without
(tested), so its ``model`` readout *is* notebook 12's run of the same variant and seed:
:func:`pairing_table` checks it on every seed where both are stored. Each candidate is a
:data:`RULES` rule over the runs (hard majority votes of the predicted classes, or soft votes:
the class of the mean probability; none reads a label) of one :data:`READOUTS` readout of one
:data:`MODELS` model; *vote of seeds x last 25% of epochs* is one vote per run and per epoch of
the last quarter (:func:`vote_count`).

* :func:`candidate_rows`, :func:`candidate_table`, :func:`forest_figure`: every candidate on
  the choosing seeds, scored against the current headline (:data:`BASELINE`, notebook 12's
  confirmed row) on the same seeds; :func:`htnetlib.study.confirmation.winners_curse` corrects
  the largest.
* :data:`PRIMARY`, :data:`PREREGISTRATION`: the row chosen, fixed in the committed
  pre-registration before any run of :data:`CONFIRM_SEEDS` existed;
  :func:`preregistration_check` verifies that order from git.
* :func:`confirmation_table`, :func:`confirmation_bullets`, :func:`shortfall_bullet`: the
  primary row and the headline on the fresh seeds, with the pre-registered paired test, the
  CPU-mismatch count beside the gain, and how far the choosing seeds' score fell.
"""

from __future__ import annotations

import dataclasses
import subprocess

import numpy as np
import pandas as pd

from ..evaluation import metrics
from ..evaluation.selection import fraction_of_epochs, seed_epochs_vote, soft_vote
from ..io import ROOT
from ..training.loso import run_loso
from ..training.store import Run, load_run
from .experiments import (HEADLINE, READOUT_CONFIRM_SEEDS, READOUT_VARIANTS, readout_config,
                          SEEDS)
from .tables import bullets, common_samples, score_row

PREREGISTRATION = (ROOT / "results" / "preregistration"
                   / "confirmation_seeds_6-8_cpu_preregistration.md")
CHOOSE_SEEDS = tuple(SEEDS)
CONFIRM_SEEDS = READOUT_CONFIRM_SEEDS
GOAL = 0.76

# the models: notebook 12's variants (htnetlib.study.experiments.SELECTION_VARIANTS), trained
# with readouts; "both" pools the runs of the two
MODELS = {"whole map": READOUT_VARIANTS[:1], "regions": READOUT_VARIANTS[1:],
          "whole map + regions": READOUT_VARIANTS}


def _mean(a, b):
    return (np.asarray(a, dtype=np.float32) + np.asarray(b, dtype=np.float32)) / 2


# readout name -> (epochs, N, 3) probabilities of a run's epochs.npz
READOUTS = {
    "model": lambda ep: np.asarray(ep["prob"], dtype=np.float32),
    "mirror (TTA)": lambda ep: _mean(ep["prob"], ep["prob_mirror"]),
    "weight average (SWA)": lambda ep: np.asarray(ep["prob_swa"], dtype=np.float32),
    "SWA + mirror": lambda ep: _mean(ep["prob_swa"], ep["prob_swa_mirror"]),
}


def _hard(probs: list, fraction):
    """Majority vote over runs' per-epoch classes (the argmax of each epoch's probabilities)."""
    return seed_epochs_vote([p.argmax(-1).astype(np.int8) for p in probs], fraction)


# rule name -> function of the probabilities of the runs (list of (epochs, N, 3)); labels never
RULES = {
    "vote of seeds x last 25% of epochs": lambda probs: _hard(probs, 0.25),
    "soft vote of seeds x last 25% of epochs": lambda probs: soft_vote(probs, 0.25),
    "vote of seeds, final epoch": lambda probs: _hard(probs, None),
    "soft vote of seeds, final epoch": lambda probs: soft_vote(probs),
}

# notebook 12's confirmed headline, as a candidate row (model readout: its own predictions)
BASELINE = {"model": "whole map", "readout": "model", "rule": HEADLINE["rule"]}
# the row chosen on seeds 0-2 (notebook 15: the largest composite UF1 of the candidate table),
# fixed by the pre-registration before any run of seeds 6-8; None until then
PRIMARY: dict | None = {"model": "whole map + regions", "readout": "SWA + mirror",
                         "rule": "vote of seeds x last 25% of epochs"}


def readout_runs(data, profile: str, seeds, *, runs_dir, retrain: bool = False,
                 workers: int = 1) -> dict[str, list[Run]]:
    """Per variant of :data:`MODELS`, its readout runs with each of ``seeds``, read back or
    trained."""
    return {v: [load_run(run_loso(data, readout_config(v, profile), seed=s, runs_dir=runs_dir,
                                  profile=profile, retrain=retrain, workers=workers,
                                  progress=False)) for s in seeds] for v in READOUT_VARIANTS}


def run_table(runs: dict[str, list[Run]]) -> pd.DataFrame:
    """Per readout run: variant, seed, id, its training's CPU-minutes (the folds' seconds
    summed) on which device, and the commit it was trained at."""
    return pd.DataFrame([{"variant": v, "seed": r.meta["seed"], "run": r.path.name,
                          "CPU-minutes": round(r.meta.get("train_seconds", float("nan")) / 60, 1),
                          "device": r.meta.get("device"),
                          "commit": str(r.meta.get("git_commit", ""))[:10]}
                         for v, rs in runs.items() for r in rs])


def pairing_table(runs: dict[str, list[Run]], profile: str, runs_dir) -> pd.DataFrame:
    """Per readout run whose variant and seed notebook 12 also stored without readouts: whether
    the two predicted the same at every epoch, and how many final-epoch predictions differ.
    On one machine they are the same (readouts leave training untouched, tested); trained on
    another CPU, floating-point sums in another order move some predictions."""
    from .tables import stored_run

    cols = ["variant", "seed", "readout run", "run without readouts",
            "same recorded device and versions",
            "same at every epoch", "final predictions that differ"]
    out = []
    for v, rs in runs.items():
        for r in rs:
            other = stored_run(None, dataclasses.replace(r.config, readouts=False),
                               r.meta["seed"], profile, runs_dir,
                               fingerprint=r.meta["data_fingerprint"])
            if other is None:
                continue
            a, b = r.epochs["pred"], other.epochs["pred"]
            out.append(dict(zip(cols, [
                v, r.meta["seed"], r.path.name, other.path.name,
                r.meta.get("device") == other.meta.get("device")
                and r.meta.get("versions") == other.meta.get("versions"),
                bool(np.array_equal(a, b)), int((a[-1] != b[-1]).sum())])))
    return pd.DataFrame(out, columns=cols)


def row_tables(runs: dict[str, list[Run]], model: str, readout: str, rule: str) -> list:
    """The one predictions table (column ``pred``) of a candidate."""
    members = [r for v in MODELS[model] for r in runs[v]]
    samples = common_samples(members)
    if readout == "model" and not rule.startswith("soft"):  # the runs' own stored classes
        pred = seed_epochs_vote([r.epochs["pred"] for r in members],
                                0.25 if "25%" in rule else None)
    else:
        pred = RULES[rule]([READOUTS[readout](r.epochs) for r in members])
    return [samples.assign(pred=pred)]


def candidate_rows(runs: dict[str, list[Run]]) -> list[dict]:
    """Every model x readout x rule, unscored: ``{"variant", "model", "readout", "rule",
    "honest", "runs", "tables"}`` (``variant`` names the whole candidate, as
    :func:`~htnetlib.study.confirmation.winners_curse` prints it)."""
    rows = []
    for model, variants in MODELS.items():
        for readout in READOUTS:
            for rule in RULES:
                rows.append({"variant": f"{model}, {readout}", "model": model,
                             "readout": readout, "rule": rule, "honest": True,
                             "runs": [r for v in variants for r in runs[v]],
                             "tables": row_tables(runs, model, readout, rule)})
    return rows


def is_row(row, spec: dict | None) -> bool:
    return spec is not None and all(row[k] == spec[k] for k in ("model", "readout", "rule"))


# the role of the pre-registered row on the seeds that chose it: there it is the choosing row,
# not yet a pre-registered result (the pre-registration was written after this choice)
CHOSEN_ROLE = "chosen here (then pre-registered)"


def candidate_table(rows: list[dict], *, n_boot: int = 1000) -> pd.DataFrame:
    """Every candidate scored by :func:`htnetlib.study.tables.score_row` against
    :data:`BASELINE` on the same seeds; the largest composite UF1 first."""
    base = next(r for r in rows if is_row(r, BASELINE))["tables"]
    out = []
    for r in rows:
        s = score_row(r["tables"], base, n_boot=n_boot)
        out.append({"model": r["model"], "readout": r["readout"], "rule": r["rule"],
                    "seeds": ",".join(dict.fromkeys(str(x.meta["seed"]) for x in r["runs"])),
                    "role": ("current headline" if is_row(r, BASELINE) else
                             CHOSEN_ROLE if is_row(r, PRIMARY) else "candidate"),
                    **{k.replace("plain honest", "headline"): v for k, v in s.items()}})
    df = pd.DataFrame(out)
    return df.sort_values("Full UF1", ascending=False, kind="stable").reset_index(drop=True)


SHOWN = ["role", "model", "readout", "rule", "seeds", "Full UF1", "Full UF1 95% CI", "Full UAR",
         "UF1 - headline", "difference 95% CI", "p(difference <= 0)"]


# the columns a page shows of a candidate or confirmation table (the CSV keeps every column)
NARROW = ["role", "model", "readout", "rule", "Full UF1", "Full UF1 95% CI", "UF1 - headline",
          "difference 95% CI"]


def winner(table: pd.DataFrame) -> dict:
    """The candidate with the largest composite UF1 (the first row of a candidate table)."""
    return {k: table.iloc[0][k] for k in ("model", "readout", "rule")}


def cost_minutes(runs) -> float:
    """CPU-minutes of training of ``runs`` (each run's folds' seconds summed)."""
    return float(sum(r.meta.get("train_seconds", 0.0) for r in runs) / 60)


def choice_bullets(table: pd.DataFrame, curse: pd.DataFrame,
                   runs: dict[str, list[Run]]) -> list[str]:
    """The choice on the choosing seeds as findings bullets: the winner, its lead over the
    headline's row on the same runs, the correction for choosing it, what the runs cost, and
    whether the pre-registered :data:`PRIMARY` is that winner."""
    w, base = table.iloc[0], table[table["role"] == "current headline"].iloc[0]
    corrected = curse.set_index("estimate")["composite UF1"]
    every = [r for rs in runs.values() for r in rs]
    fixed = (f"The committed pre-registration (`{PREREGISTRATION.relative_to(ROOT)}`), written "
             "after this choice, names this row the primary." if PRIMARY == winner(table) else
             "No pre-registration fixes this row yet." if PRIMARY is None else
             f"The pre-registered primary ({PRIMARY['model']}, {PRIMARY['readout']}, "
             f"{PRIMARY['rule']}) is not this row: these runs are not the ones that chose it.")
    return [
        f"**Chosen on seeds {w['seeds']}** among {len(table)} label-free candidates: "
        f"*{w['model']}, {w['readout']}* with *{w['rule']}*, composite UF1 "
        f"**{w['Full UF1']:.3f}** (95 % CI {w['Full UF1 95% CI']}).",
        f"Against the current headline's row on the same runs ({base['Full UF1']:.3f}): "
        f"{w['UF1 - headline']:+.3f} (paired 95 % CI {w['difference 95% CI']}).",
        f"Corrected for choosing it among {len(table)}: {corrected.iloc[1]:.3f} by the "
        f"bootstrap, {corrected.iloc[3]:.3f} by split halves. The {len(every)} runs cost "
        f"{cost_minutes(every):.0f} CPU-minutes. {fixed}",
    ]


def choice_note(table: pd.DataFrame, curse: pd.DataFrame, runs: dict[str, list[Run]]) -> str:
    """:func:`choice_bullets` as Markdown."""
    return bullets(choice_bullets(table, curse, runs))


def vote_count(runs: dict[str, list[Run]], model: str, rule: str) -> dict:
    """How many votes a hard vote rule of :data:`RULES` counts per sample for ``model``: one
    per run (seed of each of the model's variants) and per epoch of the last quarter (or the
    final epoch only): ``{"runs", "seeds", "models", "epochs", "of", "votes"}``."""
    members = [r for v in MODELS[model] for r in runs[v]]
    total = len(members[0].epochs["pred"])
    k = fraction_of_epochs(total, 0.25) if "25%" in rule else 1
    return {"runs": len(members), "seeds": len({r.meta["seed"] for r in members}),
            "models": len(MODELS[model]), "epochs": k, "of": total,
            "votes": len(members) * k}


def definitions_note(runs: dict[str, list[Run]]) -> str:
    """The rules and readouts in numbers of these runs: how many votes *vote of seeds x last 25%
    of epochs* counts per sample, for one model and for both, and which epochs SWA averages."""
    one = vote_count(runs, "whole map", "vote of seeds x last 25% of epochs")
    both = vote_count(runs, "whole map + regions", "vote of seeds x last 25% of epochs")
    first = one["of"] - one["epochs"] + 1
    return bullets([
        f"**vote of seeds x last 25% of epochs**: \"x\" pairs every run with every epoch of its "
        f"last quarter; each pair casts one vote (its predicted class) and the majority wins. "
        f"One model: {one['runs']} runs (seeds) x {one['epochs']} epochs (of {one['of']}) = "
        f"**{one['votes']} votes** per sample; *whole map + regions*: {both['models']} models "
        f"x {both['seeds']} seeds = {both['runs']} runs x {both['epochs']} epochs = "
        f"**{both['votes']} votes**. A hard vote: the chosen row is not a soft ensemble.",
        f"**SWA**: from epoch {first} of {one['of']} on, the averaged weights are the running "
        f"mean of the network's weights of epochs {first} up to the current one (epoch "
        f"{first}: the network itself; epoch {one['of']}: the mean of {one['epochs']}); the "
        f"averaged model's prediction after each of these epochs is one member of the vote.",
        "**mirror (TTA)**: after every epoch, the mean of the class probabilities of the test "
        "face and of its left-right mirror; the class of that mean is the epoch's prediction.",
    ])


def mismatch(pairing: pd.DataFrame, runs: dict[str, list[Run]]) -> dict:
    """From :func:`pairing_table`: the fewest and most final-epoch predictions that differ
    between a readout run and notebook 12's run of the same variant and seed trained on
    another CPU, and the samples a run predicts: ``{"low", "high", "of", "runs"}``."""
    n = len(next(r for rs in runs.values() for r in rs).epochs["pred"][-1])
    d = pairing["final predictions that differ"]
    return {"low": int(d.min()), "high": int(d.max()), "of": n, "runs": len(d)}


def mismatch_note(pairing: pd.DataFrame, runs: dict[str, list[Run]]) -> str:
    """The CPU mismatch in words, read from :func:`pairing_table`."""
    if pairing.empty:
        return "No run of notebook 12 pairs with these runs."
    m = mismatch(pairing, runs)
    return (f"Trained again on another CPU, a run's final epoch predicts **{m['low']} to "
            f"{m['high']} of its {m['of']}** samples differently ({m['runs']} pairs; "
            f"{m['low'] / m['of']:.1%} to {m['high'] / m['of']:.1%} of them). So every "
            "candidate is paired with the headline's row **on the readout runs themselves**, "
            "never across machines, and the confirmation names this count beside its gain.")


def ci_bounds(text: str) -> tuple[float, float]:
    """(low, high) of an interval written "0.702-0.807" or "-0.001 to +0.045"."""
    lo, hi = (text.split(" to ") if " to " in text else text.split("-"))
    return float(lo), float(hi)


def forest_rows(table: pd.DataFrame) -> pd.DataFrame:
    """Per candidate of a :func:`candidate_table` (or :func:`confirmation_table`), sorted by
    composite UF1 (largest first): its label, UF1 with its 95 % interval, the paired difference
    from the headline's row with its interval, and whether it is the pre-registered row or the
    headline's."""
    rows = []
    for _, r in table.iterrows():
        lo, hi = ci_bounds(str(r["Full UF1 95% CI"]))
        dlo, dhi = ci_bounds(str(r["difference 95% CI"]))
        rows.append({"candidate": f"{r['model']} | {r['readout']} | {r['rule']}",
                     "UF1": float(r["Full UF1"]), "low": lo, "high": hi,
                     "difference": float(r["UF1 - headline"]), "diff low": dlo,
                     "diff high": dhi, "chosen": is_row(r, PRIMARY),
                     "headline": is_row(r, BASELINE)})
    out = pd.DataFrame(rows)
    return out.sort_values("UF1", ascending=False, kind="stable").reset_index(drop=True)


# short names in the forest plot's labels (the figure's key spells them out)
SHORT = {"whole map + regions": "both", "whole map": "whole", "regions": "regions",
         "model": "model", "mirror (TTA)": "TTA", "weight average (SWA)": "SWA",
         "SWA + mirror": "SWA+TTA", "vote of seeds x last 25% of epochs": "vote x last 25%",
         "soft vote of seeds x last 25% of epochs": "soft x last 25%",
         "vote of seeds, final epoch": "vote, final", "soft vote of seeds, final epoch":
         "soft, final"}
FOREST_KEY = ("both: whole map + regions; TTA: mirror; SWA: weight average; vote x last 25%: "
              "vote of seeds x last 25% of epochs; soft: soft vote")


def forest_figure(table: pd.DataFrame, title: str, goal: float = GOAL):
    """A forest plot of every candidate: composite UF1 with its 95 % subject-bootstrap interval
    (left) and the paired difference from the headline's row with its interval (right), largest
    first; the pre-registered row in red, the headline's row in blue; labels in
    :data:`SHORT` names, spelt out under the plot. Values are drawn quantized to 0.001
    (``figures.quantized``), so the pixels do not follow float noise."""
    import matplotlib.pyplot as plt

    from .figures import quantized

    f = forest_rows(table)
    q = {c: quantized(f[c], 0.001) for c in ("UF1", "low", "high", "difference", "diff low",
                                             "diff high")}
    y = np.arange(len(f))[::-1]
    colour = np.where(f["chosen"], "tab:red", np.where(f["headline"], "tab:blue", "0.3"))
    labels = [("* " if c else "") + " | ".join(SHORT.get(part, part) for part in t.split(" | "))
              for t, c in zip(f["candidate"], f["chosen"])]
    fig, (left, right) = plt.subplots(1, 2, figsize=(8, 0.17 * len(f) + 1.8), sharey=True,
                                      gridspec_kw={"width_ratios": [3, 2]})
    for ax, (mid, lo, hi) in ((left, ("UF1", "low", "high")),
                              (right, ("difference", "diff low", "diff high"))):
        ax.hlines(y, q[lo], q[hi], colors=colour, lw=1.2)
        ax.scatter(q[mid], y, c=colour, s=[40 if c else 12 for c in f["chosen"]], zorder=3)
        ax.grid(axis="x", color="0.9")
        ax.tick_params(axis="x", labelsize=8)
    left.axvline(goal, color="tab:green", ls="--", lw=1, label=f"goal {goal:.2f}")
    head = f[f["headline"]]
    if len(head):
        left.axvline(float(quantized(head["UF1"], 0.001)[0]), color="tab:blue", lw=0.8,
                     ls=":", label="headline's row")
    right.axvline(0, color="0.4", lw=0.8)
    right.xaxis.set_major_locator(plt.MaxNLocator(4))
    left.set_yticks(y, labels, fontsize=7.5)
    for tick, c in zip(left.get_yticklabels(), colour):
        tick.set_color(c)
    left.set_ylim(-1, len(f))
    left.set_xlabel("composite UF1 (95 % CI)", fontsize=8)
    right.set_xlabel("minus the headline's row (paired 95 % CI)", fontsize=8)
    left.legend(fontsize=7, loc="upper left")
    fig.suptitle(title, fontsize=10)
    fig.tight_layout(rect=(0, 0.03, 1, 1))  # the bottom strip: save_figure's provenance line
    fig.text(0.01, -0.005, FOREST_KEY, fontsize=7, color="0.25", ha="left", va="top")
    return fig


def first_headline(data, profile: str, *, runs_dir, retrain: bool = False,
                   workers: int = 1) -> dict:
    """Notebook 12's confirmed headline: its row on notebook 12's confirmation seeds (runs read
    back, or trained where missing): ``{"seeds", "uf1", "ci"}``, and its score on the seeds
    that chose it in notebook 12 (``"chosen seeds"``, ``"chosen"``)."""
    from ..evaluation.selection import SEED_RULES
    from .experiments import CONFIRM_SEEDS, selection_config
    from .tables import seed_rule_table

    runs = [load_run(run_loso(data, selection_config(HEADLINE["variant"], profile), seed=s,
                              runs_dir=runs_dir, profile=profile, retrain=retrain,
                              workers=workers, progress=False)) for s in CONFIRM_SEEDS]
    table = seed_rule_table(runs, SEED_RULES[HEADLINE["rule"]])
    ci = metrics.bootstrap_ci([table], "pred", n_boot=1000)["uf1"]
    chose = [load_run(run_loso(data, selection_config(HEADLINE["variant"], profile), seed=s,
                               runs_dir=runs_dir, profile=profile, retrain=retrain,
                               workers=workers, progress=False)) for s in SEEDS]
    chosen = seed_rule_table(chose, SEED_RULES[HEADLINE["rule"]])
    return {"seeds": ",".join(map(str, CONFIRM_SEEDS)),
            "uf1": metrics.scores(table, "pred")["full"]["uf1"], "ci": "%.3f-%.3f" % ci,
            "chosen seeds": ",".join(map(str, SEEDS)),
            "chosen": metrics.scores(chosen, "pred")["full"]["uf1"]}


def not_tried_note(data, profile: str, runs_dir) -> str:
    """What this exploration left out, and where it was tried since: soft votes with STSTNet
    and logistic regression, and the release's apex faces as a second input, are notebook 16's
    (their stored runs of Table 2 keep no probabilities; STSTNet's cost per seed is read from
    them)."""
    from .experiments import SEEDS, table2_config
    from .tables import stored_run

    ststnet = [r for s in SEEDS if (r := stored_run(data, table2_config("STSTNet", profile), s,
                                                     profile, runs_dir)) is not None]
    cost = (f"; STSTNet costs {cost_minutes(ststnet) / len(ststnet):.0f} CPU-minutes a seed, "
            f"by its stored {profile} runs" if ststnet else "")
    return ("Not tried here: soft votes with STSTNet and logistic regression (their Table 2 "
            f"runs keep no probabilities{cost}), and the release's apex faces as a second, "
            "appearance input. Notebook 16 trains both, and an RCN-style network, with "
            "probabilities, and chooses among them by cross-fitting.")


# --------------------------------------------------------------------------- pre-registration


def _git(*args) -> subprocess.CompletedProcess:
    return subprocess.run(["git", *args], cwd=ROOT, capture_output=True, text=True)


def preregistration_check(runs: list[Run]) -> pd.DataFrame:
    """Per confirmation run: the commit it was trained at, and whether the commit that added
    :data:`PREREGISTRATION` is among that commit's ancestors (``git merge-base --is-ancestor``),
    i.e. whether the pre-registration was committed before the run was trained."""
    added = _git("log", "--diff-filter=A", "--format=%H", "--",
                 str(PREREGISTRATION.relative_to(ROOT))).stdout.split()
    rows = []
    for r in runs:
        commit = str(r.meta.get("git_commit", "")).removesuffix("+dirty")
        if not added:
            verdict = "no committed pre-registration"
        elif not commit or commit == "unknown":
            verdict = "the run records no commit"
        else:
            done = _git("merge-base", "--is-ancestor", added[-1], commit)
            verdict = ("yes" if done.returncode == 0 else
                       "no" if done.returncode == 1 else "commit unknown here")
        rows.append({"run": r.path.name, "seed": r.meta["seed"], "trained at": commit[:10],
                     "pre-registration committed before": verdict})
    return pd.DataFrame(rows, columns=["run", "seed", "trained at",
                                       "pre-registration committed before"])


# --------------------------------------------------------------------------- the confirmation


def confirmation_table(runs: dict[str, list[Run]], *, n_boot: int = 1000) -> pd.DataFrame:
    """The fresh seeds: the pre-registered primary row, the current headline, then every other
    candidate as secondary (never used to replace the primary), each against the headline."""
    rows = candidate_rows(runs)
    order = ([r for r in rows if is_row(r, PRIMARY)] + [r for r in rows if is_row(r, BASELINE)]
             + [r for r in rows if not is_row(r, PRIMARY) and not is_row(r, BASELINE)])
    table = candidate_table(order, n_boot=n_boot)
    key = ["model", "readout", "rule"]
    spec = pd.DataFrame([{k: r[k] for k in key} for r in order])
    table = spec.merge(table, on=key, how="left")  # back in the pre-registered order
    table["role"] = ["primary (pre-registered)", "current headline (pre-registered baseline)"] + \
        ["secondary"] * (len(table) - 2)
    return table


def beats_headline(conf: pd.DataFrame) -> bool:
    """The pre-registered criterion: the primary's paired 95 % interval against the headline
    lies above 0."""
    return float(conf.iloc[0]["difference 95% CI"].split(" to ")[0]) > 0


def confirmation_bullets(conf: pd.DataFrame, chosen_on: pd.DataFrame, curse: pd.DataFrame,
                         first: dict, pairing: pd.DataFrame | None = None,
                         runs: dict[str, list[Run]] | None = None,
                         goal: float = GOAL) -> list[str]:
    """The second confirmation as findings bullets, every number read from the tables: the
    primary row with its interval, the paired difference from the headline beside the
    CPU-mismatch count (``pairing``, ``runs``: :func:`pairing_table` and its runs), the
    criterion's verdict, the winner's-curse shortfall (:func:`shortfall_bullet`) and the gap to
    the goal; ``first`` is :func:`first_headline`."""
    p, h = conf.iloc[0], conf.iloc[1]
    better = beats_headline(conf)
    best = float(p["Full UF1"]) if better else first["uf1"]
    scale = ""
    if pairing is not None and runs is not None and not pairing.empty:
        m = mismatch(pairing, runs)
        scale = (f" For scale: trained again on another CPU, {m['low']}-{m['high']} of "
                 f"{m['of']} final predictions of one run differ.")
    verdict = ("By the pre-registered criterion (interval above 0) it is better and becomes "
               "the headline." if better else
               "By the pre-registered criterion (interval above 0) it is **not** shown better; "
               "the headline stays notebook 12's row.")
    goal_text = (f"The headline honest score, {best:.3f}, reaches the goal of {goal:.2f}."
                 if best >= goal else
                 f"The headline honest score, {best:.3f}, stays {goal - best:.3f} below the "
                 f"goal of {goal:.2f}.")
    return [
        f"**Second confirmation, fresh seeds {p['seeds']}** (pre-registered before they were "
        f"trained): *{p['model']}, {p['readout']}* with *{p['rule']}* scores "
        f"**{p['Full UF1']:.3f}** (95 % CI {p['Full UF1 95% CI']}); the headline's row on the "
        f"same runs {h['Full UF1']:.3f} (95 % CI {h['Full UF1 95% CI']}).",
        f"Paired difference **{p['UF1 - headline']:+.3f}** (95 % CI {p['difference 95% CI']}, "
        f"one-sided p = {p['p(difference <= 0)']:.3f}).{scale} {verdict}",
        shortfall_bullet(conf, chosen_on, curse, first),
        goal_text,
    ]


def shortfall_bullet(conf: pd.DataFrame, chosen_on: pd.DataFrame, curse: pd.DataFrame,
                     first: dict) -> str:
    """The winner's curse against what happened: the shrinkage the corrections predicted for
    the chosen row, the drop observed from the choosing seeds to the fresh ones (and notebook
    12's, ``first``: :func:`first_headline`), beside the drop of the headline's row, which no
    choice here picked."""
    p, h = conf.iloc[0], conf.iloc[1]
    spec = {k: p[k] for k in ("model", "readout", "rule")}
    before = chosen_on[[is_row(r, spec) for _, r in chosen_on.iterrows()]].iloc[0]
    base = chosen_on[[is_row(r, BASELINE) for _, r in chosen_on.iterrows()]].iloc[0]
    corrected = curse.set_index("estimate")["composite UF1"]
    boot = corrected.iloc[0] - corrected.iloc[1]
    split = corrected.iloc[0] - corrected.iloc[3]
    observed = float(before["Full UF1"]) - float(p["Full UF1"])
    base_drop = float(base["Full UF1"]) - float(h["Full UF1"])
    lead = (f"its lead over that row went from {before['UF1 - headline']:+.3f} to "
            f"{p['UF1 - headline']:+.3f}")
    why = ("so the drop belongs to the fresh seeds more than to the choice: the bootstrap "
           "resamples the subjects of the same runs and cannot see how far new seeds move a "
           "score" if base_drop >= observed else
           "so part of the drop is the choice itself, part the fresh seeds, which a bootstrap "
           "over the subjects of the same runs cannot see")
    return (f"**Winner's curse, predicted and observed.** The bootstrap predicted {boot:.3f} of "
            f"shrinkage (split halves {split:.3f}); from seeds {before['seeds']} to "
            f"{p['seeds']} the chosen row fell **{observed:.3f}** (notebook 12's headline row: "
            f"{first['chosen'] - first['uf1']:.3f}, seeds {first['chosen seeds']} to "
            f"{first['seeds']}). The headline's row, fixed before this choice, fell "
            f"{base_drop:.3f} on the same seeds and {lead}, {why}.")


def confirmation_note(conf: pd.DataFrame, chosen_on: pd.DataFrame, curse: pd.DataFrame,
                      first: dict, pairing: pd.DataFrame | None = None,
                      runs: dict[str, list[Run]] | None = None, goal: float = GOAL) -> str:
    """:func:`confirmation_bullets` as Markdown."""
    return bullets(confirmation_bullets(conf, chosen_on, curse, first, pairing, runs, goal))


def findings(table, curse, runs, conf, first, pairing, data, profile: str, runs_dir) -> str:
    """Notebook 15's "What we found", as Markdown bullets: the choice, the confirmation, the
    shortfall, notebook 12's headline for reference and what was not tried."""
    return bullets(f"All numbers: the **{profile}** profile.",
                   choice_bullets(table, curse, runs),
                   confirmation_bullets(conf, table, curse, first, pairing, runs),
                   f"Notebook 12's headline for reference: {first['uf1']:.3f} (95 % CI "
                   f"{first['ci']}, seeds {first['seeds']}).",
                   not_tried_note(data, profile, runs_dir))
