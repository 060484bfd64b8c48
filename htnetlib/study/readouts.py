"""Notebook 15 (beyond the paper): candidates toward an honest 0.76, chosen on seeds 0-2 without
any held-out label, and their pre-registered confirmation on fresh seeds 6-8.

The candidates are **readouts** of one training (``Config.readouts``,
:func:`htnetlib.training.fold.train_fold`): the model's own probabilities, test-time
augmentation (the mean of the map's and its mirror's probabilities), stochastic weight averaging
(the weights averaged over the last quarter of epochs) and both; read from the whole-map model,
the regions model, or both together (a soft ensemble of two architectures on the same folds).
A run with readouts trains exactly as the run without (tested), so its ``model`` readout *is*
notebook 12's run of the same variant and seed: :func:`pairing_table` checks it on every seed
where both are stored. Each candidate is a :data:`RULES` rule over the seeds (votes, soft votes;
none reads a label) of one :data:`READOUTS` readout of one :data:`MODELS` model.

* :func:`candidate_rows`, :func:`candidate_table`: every candidate on the choosing seeds, scored
  against the current headline (:data:`BASELINE`, notebook 12's confirmed row) on the same
  seeds; :func:`htnetlib.study.confirmation.winners_curse` corrects the largest.
* :data:`PRIMARY`, :data:`PREREGISTRATION`: the row chosen, fixed in the committed
  pre-registration before any run of :data:`CONFIRM_SEEDS` existed;
  :func:`preregistration_check` verifies that order from git.
* :func:`confirmation_table`, :func:`confirmation_note`: the primary row and the headline on the
  fresh seeds, with the pre-registered paired test.
"""

from __future__ import annotations

import dataclasses
import subprocess

import numpy as np
import pandas as pd

from ..evaluation import metrics
from ..evaluation.selection import seed_epochs_vote, soft_vote
from ..io import ROOT
from ..training.loso import run_loso
from ..training.store import Run, load_run
from .experiments import (HEADLINE, READOUT_CONFIRM_SEEDS, READOUT_VARIANTS, readout_config,
                          SEEDS)
from .tables import common_samples, score_row

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
                             "pre-registered primary" if is_row(r, PRIMARY) else "candidate"),
                    **{k.replace("plain honest", "headline"): v for k, v in s.items()}})
    df = pd.DataFrame(out)
    return df.sort_values("Full UF1", ascending=False, kind="stable").reset_index(drop=True)


SHOWN = ["role", "model", "readout", "rule", "seeds", "Full UF1", "Full UF1 95% CI", "Full UAR",
         "UF1 - headline", "difference 95% CI", "p(difference <= 0)"]


def winner(table: pd.DataFrame) -> dict:
    """The candidate with the largest composite UF1 (the first row of a candidate table)."""
    return {k: table.iloc[0][k] for k in ("model", "readout", "rule")}


def cost_minutes(runs) -> float:
    """CPU-minutes of training of ``runs`` (each run's folds' seconds summed)."""
    return float(sum(r.meta.get("train_seconds", 0.0) for r in runs) / 60)


def choice_note(table: pd.DataFrame, curse: pd.DataFrame, runs: dict[str, list[Run]]) -> str:
    """The choice on the choosing seeds in words: the winner, its lead over the headline's row
    on the same runs, the correction for choosing it, what the runs cost, and whether the
    pre-registered :data:`PRIMARY` is that winner."""
    w, base = table.iloc[0], table[table["role"] == "current headline"].iloc[0]
    corrected = curse.set_index("estimate")["composite UF1"]
    every = [r for rs in runs.values() for r in rs]
    fixed = (f"The committed pre-registration (`{PREREGISTRATION.relative_to(ROOT)}`) names "
             "this row the primary." if PRIMARY == winner(table) else
             "No pre-registration fixes this row yet." if PRIMARY is None else
             f"The pre-registered primary ({PRIMARY['model']}, {PRIMARY['readout']}, "
             f"{PRIMARY['rule']}) is not this row: these runs are not the ones that chose it.")
    return (f"Among the {len(table)} candidates on seeds {w['seeds']} (none reads a label), the "
            f"largest composite UF1 is *{w['model']}, {w['readout']}* with *{w['rule']}*: "
            f"**{w['Full UF1']:.3f}** (95 % CI {w['Full UF1 95% CI']}), "
            f"{w['UF1 - headline']:+.3f} (95 % CI {w['difference 95% CI']}) against the current "
            f"headline's row on the same runs ({base['Full UF1']:.3f}). Corrected for choosing "
            f"it among {len(table)}: {corrected.iloc[1]:.3f} by the bootstrap, "
            f"{corrected.iloc[3]:.3f} by split halves. The {len(every)} runs cost "
            f"{cost_minutes(every):.0f} CPU-minutes. {fixed}")


def first_headline(data, profile: str, *, runs_dir, retrain: bool = False,
                   workers: int = 1) -> dict:
    """Notebook 12's confirmed headline: its row on notebook 12's confirmation seeds (runs read
    back, or trained where missing): ``{"seeds", "uf1", "ci"}``."""
    from ..evaluation.selection import SEED_RULES
    from .experiments import CONFIRM_SEEDS, selection_config
    from .tables import seed_rule_table

    runs = [load_run(run_loso(data, selection_config(HEADLINE["variant"], profile), seed=s,
                              runs_dir=runs_dir, profile=profile, retrain=retrain,
                              workers=workers, progress=False)) for s in CONFIRM_SEEDS]
    table = seed_rule_table(runs, SEED_RULES[HEADLINE["rule"]])
    ci = metrics.bootstrap_ci([table], "pred", n_boot=1000)["uf1"]
    return {"seeds": ",".join(map(str, CONFIRM_SEEDS)),
            "uf1": metrics.scores(table, "pred")["full"]["uf1"], "ci": "%.3f-%.3f" % ci}


def not_tried_note(data, profile: str, runs_dir) -> str:
    """What the exploration left out, with the cost that kept it out: STSTNet's stored runs'
    CPU-minutes per seed (a soft ensemble with it needs them trained again, with probabilities),
    and the apex faces as a second input (not built)."""
    from .experiments import SEEDS, table2_config
    from .tables import stored_run

    ststnet = [r for s in SEEDS if (r := stored_run(data, table2_config("STSTNet", profile), s,
                                                     profile, runs_dir)) is not None]
    cost = (f"; STSTNet costs {cost_minutes(ststnet) / len(ststnet):.0f} CPU-minutes a seed, "
            f"by its stored {profile} runs" if ststnet else "")
    return ("Not tried here: soft ensembles with STSTNet and logistic regression (their stored "
            f"runs keep no probabilities{cost}), and the release's apex faces "
            "as a second, appearance input (no such model is built yet).")


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


def confirmation_note(conf: pd.DataFrame, chosen_on: pd.DataFrame, curse: pd.DataFrame,
                      first_headline: float, goal: float = GOAL) -> str:
    """The second confirmation in words, every number read from the tables: the primary row
    with its interval, the paired difference from the headline, the criterion's verdict, the
    shrinkage from the choosing seeds and the gap to the goal; ``first_headline`` is the
    headline's composite UF1 on notebook 12's confirmation seeds."""
    p, h = conf.iloc[0], conf.iloc[1]
    before = chosen_on[(chosen_on["model"] == p["model"]) & (chosen_on["readout"] == p["readout"])
                       & (chosen_on["rule"] == p["rule"])].iloc[0]
    corrected = curse.set_index("estimate")["composite UF1"]
    better = beats_headline(conf)
    best = float(p["Full UF1"]) if better else first_headline
    verdict = ("By the pre-registered criterion (interval above 0) the new row is better and "
               "becomes the headline. " if better else
               "By the pre-registered criterion (interval above 0) the new row is **not** shown "
               "better, so the headline stays notebook 12's row. ")
    goal_text = (f"reaches the goal of {goal:.2f}." if best >= goal else
                 f"stays {goal - best:.3f} below the goal of {goal:.2f}.")
    return (
        f"**Second confirmation, fresh seeds {p['seeds']}** (pre-registered before they were "
        f"trained): *{p['model']}, {p['readout']}* with *{p['rule']}* scores a composite UF1 of "
        f"**{p['Full UF1']:.3f}** (95 % CI {p['Full UF1 95% CI']}); the current headline's row "
        f"on the same seeds scores {h['Full UF1']:.3f} (95 % CI {h['Full UF1 95% CI']}); paired "
        f"difference {p['UF1 - headline']:+.3f} (95 % CI {p['difference 95% CI']}, one-sided "
        f"p = {p['p(difference <= 0)']:.3f}). {verdict}On seeds {before['seeds']}, which chose "
        f"it among {len(chosen_on)} candidates, it scored {before['Full UF1']:.3f} (corrected "
        f"for the choice: {corrected.iloc[1]:.3f} by the bootstrap, {corrected.iloc[3]:.3f} by "
        f"split halves). The headline honest score, {best:.3f}, {goal_text}")
