"""Notebook 12, after the search (beyond the paper): the winner's curse of choosing the largest
honest row, the pre-registered confirmation of that row on fresh seeds, and the calibration of
the final epoch's probabilities.

* :func:`winners_curse`: choosing one row among many is itself a selection, and the chosen
  row's score is optimistic. Two corrections, both resampling subjects: the bootstrap estimate
  of the optimism of the maximum (in each resample, the row that wins the resample is scored
  in each resample, how far the row that wins the resample leads the row that won the observed
  data; the mean lead is the optimism), and split halves (choose the row on half the subjects,
  score it on the other half).
* :func:`confirmation_table`: the row chosen on seeds 0-2 (:data:`~htnetlib.study.experiments
  .HEADLINE`) and the plain baseline trained again on fresh seeds, analysed as the committed
  pre-registration (:data:`PREREGISTRATION`) states.
* :func:`calibration_table`, :func:`reliability_figure`: expected calibration error of the final
  epoch (:mod:`htnetlib.evaluation.calibration`), before and after a temperature fitted per
  outer fold on that fold's inner fits (never on the held-out subject's labels).
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from ..evaluation import calibration, metrics
from ..evaluation.selection import RULES, SEED_RULES, SOFT_SEED_RULES, honest_rule
from ..io import ROOT
from ..training import nested
from ..training.loso import run_loso
from ..training.store import Run, load_run
from .experiments import CONFIRM_VARIANTS, HEADLINE, selection_config
from .tables import bullets, rule_tables, score_row, seed_rule_table

PREREGISTRATION = (ROOT / "results" / "preregistration"
                   / "confirmation_seeds_3-5_cpu_preregistration.md")


# --------------------------------------------------------------------------- winner's curse


def _weights_for(tables, ids: np.ndarray, weights: np.ndarray) -> np.ndarray:
    """``weights`` (R, subjects in ``ids`` order) reordered to the subject order of ``tables``."""
    pos = {s: i for i, s in enumerate(ids)}
    return weights[:, [pos[s] for s in metrics.subject_ids(tables)]]


def winners_curse(rows: list[dict], *, n_boot: int = 1000, n_splits: int = 200,
                  seed: int = 0) -> pd.DataFrame:
    """The largest composite UF1 among the honest rows of ``rows``
    (:func:`htnetlib.study.tables.selection_rows`) beside two estimates corrected for having
    chosen it: the subject-bootstrap correction of the maximum and split halves by subject."""
    honest = [r for r in rows if r["honest"]]
    ids = metrics.subject_ids(honest[0]["tables"])
    boot = metrics.bootstrap_weights(honest[0]["tables"], n_boot, seed)
    rng = np.random.default_rng(seed)
    halves = np.zeros((2 * n_splits, len(ids)))
    for i in range(n_splits):
        first = rng.permutation(len(ids))[:len(ids) // 2]
        halves[2 * i, first] = 1
        halves[2 * i + 1] = 1 - halves[2 * i]
    every = np.ones((1, len(ids)))
    weights = np.concatenate([every, boot, halves])
    scores = np.stack([metrics.weighted_scores(r["tables"], "pred",
                                               _weights_for(r["tables"], ids, weights))["uf1"]
                       for r in honest])  # (rows, 1 + n_boot + 2 n_splits)
    observed, resampled = scores[:, 0], scores[:, 1:1 + n_boot]
    best = int(np.argmax(observed))
    winner = resampled.argmax(0)
    cols_b = np.arange(n_boot)
    optimism = float(np.mean(resampled[winner, cols_b] - resampled[best, cols_b]))
    a, b = scores[:, 1 + n_boot::2], scores[:, 2 + n_boot::2]  # (rows, n_splits) each
    cols = np.arange(n_splits)
    chosen = np.concatenate([b[a.argmax(0), cols], a[b.argmax(0), cols]])
    top = np.concatenate([b.max(0), a.max(0)])
    name = f"{honest[best]['variant']} | {honest[best]['rule']}"
    return pd.DataFrame([
        {"estimate": f"largest of the {len(honest)} honest rows (raw)", "composite UF1":
         observed[best], "how": name},
        {"estimate": "bootstrap-corrected maximum", "composite UF1": observed[best] - optimism,
         "how": f"raw minus the mean lead of each resample's winner over the observed winner "
                f"in that resample ({optimism:+.4f}), {n_boot} subject resamples"},
        {"estimate": "split half: chosen on one half, scored on the other",
         "composite UF1": float(chosen.mean()),
         "how": f"{n_splits} random halves of the {len(ids)} subjects, both ways; the best row "
                f"of the scoring half averages {top.mean():.4f} there"},
        {"estimate": "split-half-corrected maximum",
         "composite UF1": observed[best] - float((top - chosen).mean()),
         "how": "raw minus the mean gap between the scoring half's best row and the row "
                "chosen on the other half"},
    ])


# --------------------------------------------------------------------------- the confirmation


def confirmation_runs(data, profile: str, seeds, *, runs_dir, retrain: bool = False,
                      workers: int = 1) -> dict[str, list[Run]]:
    """The confirmation's runs (:data:`~htnetlib.study.experiments.CONFIRM_VARIANTS` with each
    of ``seeds``), read back or trained, and the headline's inner fits on the first seed."""
    runs = {name: [load_run(run_loso(data, selection_config(name, profile), seed=s,
                                     runs_dir=runs_dir, profile=profile, retrain=retrain,
                                     workers=workers, progress=False)) for s in seeds]
            for name in CONFIRM_VARIANTS}
    nested.run_nested(data, selection_config(HEADLINE["variant"], profile), seed=list(seeds)[0],
                      runs_dir=runs_dir, profile=profile, workers=workers, retrain=retrain)
    return runs


def has_probabilities(runs: list[Run]) -> bool:
    return all("prob" in r.epochs for r in runs)


def confirmation_rows(confirm: dict[str, list[Run]]) -> list[dict]:
    """The pre-registered analysis's rows, unscored: ``{"role", "variant", "rule", "runs",
    "tables"}``; the primary row first, the plain baseline second."""
    head, plain = confirm[HEADLINE["variant"]], confirm["plain"]
    rows = [("primary (pre-registered)", HEADLINE["variant"], HEADLINE["rule"], head,
             [seed_rule_table(head, SEED_RULES[HEADLINE["rule"]])]),
            ("baseline (pre-registered)", "plain", "final epoch", plain,
             rule_tables(plain, RULES["final epoch"])),
            ("secondary", "plain", HEADLINE["rule"], plain,
             [seed_rule_table(plain, SEED_RULES[HEADLINE["rule"]])]),
            ("secondary", HEADLINE["variant"], "final epoch", head,
             rule_tables(head, RULES["final epoch"]))]
    for name, runs in ((HEADLINE["variant"], head), ("plain", plain)):
        if has_probabilities(runs):
            for rule, fn in SOFT_SEED_RULES.items():
                p = runs[0].predictions
                rows.append(("secondary", name, rule, runs, [p[metrics.KEY + ["label"]].assign(
                    pred=fn([r.epochs["prob"] for r in runs]))]))
    if has_probabilities(head + plain):  # across models: the regions and the whole map
        p = plain[0].predictions
        rows.append(("exploratory (not pre-registered)", f"plain + {HEADLINE['variant']}",
                     "soft vote of seeds x last 25% of epochs", plain + head,
                     [p[metrics.KEY + ["label"]].assign(pred=SOFT_SEED_RULES[
                         "soft vote of seeds x last 25% of epochs"](
                         [r.epochs["prob"] for r in plain + head]))]))
    return [dict(zip(("role", "variant", "rule", "runs", "tables"), r)) for r in rows]


def confirmation_table(confirm: dict[str, list[Run]], *, n_boot: int = 1000) -> pd.DataFrame:
    """Every row of :func:`confirmation_rows` scored by
    :func:`htnetlib.study.tables.score_row` against the plain baseline's final epoch on the same
    seeds (the pre-registered paired difference)."""
    base = rule_tables(confirm["plain"], honest_rule)
    return pd.DataFrame([{"role": r["role"], "variant": r["variant"], "rule": r["rule"],
                          "seeds": ",".join(dict.fromkeys(str(x.meta["seed"])
                                                          for x in r["runs"])),
                          **score_row(r["tables"], base, n_boot=n_boot)}
                         for r in confirmation_rows(confirm)])


def confirmation_bullets(conf: pd.DataFrame, chosen_on: pd.DataFrame, curse: pd.DataFrame,
                         goal: float) -> list[str]:
    """The confirmation as bullets, every number read from the tables: the primary estimate
    with its interval, the paired difference from plain, the shrinkage from the seeds that
    chose the row (``chosen_on``: the selection table of those seeds) against the winner's
    curse's prediction (:func:`shortfall_bullet`), and the goal."""
    primary = conf.iloc[0]
    base = conf.iloc[1]
    low = float(primary["difference 95% CI"].split(" to ")[0])
    return [
        f"**Confirmed on fresh seeds {primary['seeds']}** (pre-registered before they were "
        f"trained): **{primary['variant']}** with **{primary['rule']}** scores a composite UF1 "
        f"of **{primary['Full UF1']:.3f}** (95 % CI {primary['Full UF1 95% CI']}; UAR "
        f"{primary['Full UAR']:.3f}).",
        f"The plain model's final epoch on the same seeds: {base['Full UF1']:.3f}; paired "
        f"difference {primary['UF1 - plain honest']:+.3f} (95 % CI "
        f"{primary['difference 95% CI']}, one-sided p = {primary['p(difference <= 0)']:.3f}): "
        + ("better than plain by the pre-registered criterion (interval above 0)." if low > 0
           else "not shown better than plain by the pre-registered criterion (the interval "
                "reaches 0)."),
        shortfall_bullet(conf, chosen_on, curse),
        (f"It reaches the goal of {goal:.2f}." if primary["Full UF1"] >= goal else
         f"It stays {goal - primary['Full UF1']:.3f} below the goal of {goal:.2f}."),
    ]


def shortfall_bullet(conf: pd.DataFrame, chosen_on: pd.DataFrame, curse: pd.DataFrame) -> str:
    """The winner's curse against what happened: the shrinkage the bootstrap and split halves
    predicted for the chosen row, the drop observed from the choosing seeds to the fresh ones,
    and the plain baseline's drop over the same seeds, which no choice picked."""
    primary, base = conf.iloc[0], conf.iloc[1]
    corrected = curse.set_index("estimate")["composite UF1"]
    boot, split = corrected.iloc[0] - corrected.iloc[1], corrected.iloc[0] - corrected.iloc[3]
    before = chosen_on[(chosen_on["variant"] == primary["variant"])
                       & (chosen_on["rule"] == primary["rule"])]
    predicted = f"the bootstrap predicted {boot:.3f} of shrinkage, split halves {split:.3f}"
    if before.empty:  # the choosing seeds hold no such row (a single seed: no seed vote)
        return f"The choosing seeds have no row for this rule to compare with ({predicted})."
    b = before.iloc[0]
    plain = chosen_on[(chosen_on["variant"] == base["variant"])
                      & (chosen_on["rule"] == base["rule"])]
    observed = float(b["Full UF1"]) - float(primary["Full UF1"])
    text = (f"**Winner's curse, predicted and observed:** {predicted}; from seeds {b['seeds']} "
            f"to {primary['seeds']} the row fell **{observed:.3f}** ({b['Full UF1']:.3f} to "
            f"{primary['Full UF1']:.3f}).")
    if not plain.empty:
        drop = float(plain.iloc[0]["Full UF1"]) - float(base["Full UF1"])
        text += (f" The plain baseline, chosen by no one, fell {drop:.3f} over the same seeds: "
                 "the bootstrap resamples the subjects of fixed runs and cannot see how far new "
                 "seeds move a score, so it under-predicts the drop on fresh seeds.")
    return text


def confirmation_note(conf: pd.DataFrame, chosen_on: pd.DataFrame, curse: pd.DataFrame,
                      goal: float) -> str:
    """:func:`confirmation_bullets` as Markdown."""
    return bullets(confirmation_bullets(conf, chosen_on, curse, goal))


def seed_vote_note(runs: list[Run], fraction: float = 0.25) -> str:
    """What *vote of seeds x last 25% of epochs* counts for ``runs`` (one variant's seeds):
    one vote per run and per epoch of its last quarter, the majority class wins."""
    from ..evaluation.selection import fraction_of_epochs

    epochs = len(runs[0].epochs["pred"])
    k = fraction_of_epochs(epochs, fraction)
    return (f"*vote of seeds x last 25% of epochs*: the \"x\" pairs every seed's run with every "
            f"epoch of its last quarter; each pair casts one vote (its predicted class) and the "
            f"majority wins (ties: more votes at the latest epoch). Here {len(runs)} seeds x "
            f"{k} epochs (of {epochs}) = **{len(runs) * k} votes** per sample: a hard majority "
            "vote, not a mean of probabilities.")


# --------------------------------------------------------------------------- calibration


def temperatures(run: Run) -> dict | None:
    """Per held-out subject, the temperature fitted on its fold's inner fits
    (:func:`htnetlib.evaluation.calibration.fold_temperatures`), or None where the run has no
    inner store with probabilities."""
    if not nested.nested_complete(run.path):
        return None
    inner = nested.load_inner(run.path)
    if "prob_final" not in inner:
        return None
    return calibration.fold_temperatures(inner["prob_final"], inner["label"],
                                         [str(s) for s in inner["subjects"]])


def calibration_table(confirm: dict[str, list[Run]]) -> pd.DataFrame:
    """Per confirmation run with probabilities: the final epoch's ECE, negative log-likelihood
    and accuracy, and where its inner fits stored probabilities, the same after each held-out
    subject's fold temperature."""
    rows = []
    for name, runs in confirm.items():
        for r in runs:
            if "prob" not in r.epochs:
                continue
            p = r.predictions
            y, prob = p["label"].to_numpy(), r.epochs["prob"][-1].astype(np.float64)
            row = {"variant": name, "seed": r.meta["seed"],
                   "accuracy": float((prob.argmax(1) == y).mean()),
                   "ECE": calibration.ece(prob, y), "NLL": calibration.nll(prob, y),
                   "temperatures (median, range)": "-", "ECE, tempered": float("nan"),
                   "NLL, tempered": float("nan")}
            temps = temperatures(r)
            if temps is not None:
                tempered = calibration.calibrated_final_epoch(prob, p["subject"].to_numpy(),
                                                              temps)
                t = np.array(list(temps.values()))
                row.update({"temperatures (median, range)":
                            f"{np.median(t):.2f} ({t.min():.2f}-{t.max():.2f})",
                            "ECE, tempered": calibration.ece(tempered, y),
                            "NLL, tempered": calibration.nll(tempered, y)})
            rows.append(row)
    return pd.DataFrame(rows)


def calibration_note(calib: pd.DataFrame) -> str:
    """:func:`calibration_bullets` as Markdown."""
    return bullets(calibration_bullets(calib))


def calibration_bullets(calib: pd.DataFrame) -> list[str]:
    """The calibration table as bullets: the final epoch's ECE per run (its range), and where
    fold temperatures exist, the ECE and NLL after them."""
    return [f"Final-epoch probabilities are overconfident: ECE {calib['ECE'].min():.3f} to "
            f"{calib['ECE'].max():.3f} over the {len(calib)} confirmation runs."] + [
        f"With each held-out subject's temperature fitted on its own fold's inner fits "
        f"({r['temperatures (median, range)']}), {r['variant']} seed {r['seed']} goes from ECE "
        f"{r['ECE']:.3f} to {r['ECE, tempered']:.3f} and NLL {r['NLL']:.3f} to "
        f"{r['NLL, tempered']:.3f}, never reading that subject's labels."
        for _, r in calib[calib["ECE, tempered"].notna()].iterrows()]


def reliability_figure(confirm: dict[str, list[Run]], profile: str):
    """Reliability diagrams of the final epoch: per variant, the confirmation seeds pooled; and
    the runs with inner temperatures after tempering."""
    import matplotlib.pyplot as plt

    curves = []
    for name, runs in confirm.items():
        runs = [r for r in runs if "prob" in r.epochs]
        if runs:
            prob = np.concatenate([r.epochs["prob"][-1].astype(np.float64) for r in runs])
            y = np.concatenate([r.predictions["label"].to_numpy() for r in runs])
            curves.append((f"{name}, seeds {','.join(str(r.meta['seed']) for r in runs)}",
                           prob, y, "-"))
        for r in runs:
            temps = temperatures(r)
            if temps is not None:
                p = r.predictions
                prob = calibration.calibrated_final_epoch(
                    r.epochs["prob"][-1].astype(np.float64), p["subject"].to_numpy(), temps)
                curves.append((f"{name}, seed {r.meta['seed']}, fold temperatures", prob,
                               p["label"].to_numpy(), "--"))
    fig, ax = plt.subplots(figsize=(5.5, 5))
    ax.plot([0, 1], [0, 1], color="0.6", lw=1, label="perfect calibration")
    for label, prob, y, ls in curves:
        rel = calibration.reliability(prob, y)
        ax.plot(rel["confidence"], rel["accuracy"], ls, marker="o", ms=4,
                label=f"{label} (ECE {calibration.ece(prob, y):.3f})")
    ax.set(xlabel="confidence (top-class probability)", ylabel="accuracy",
           xlim=(0.3, 1.01), ylim=(0, 1.01),
           title=f"Final-epoch reliability, {profile} profile")
    ax.legend(fontsize=7, loc="upper left")
    fig.tight_layout()
    return fig
