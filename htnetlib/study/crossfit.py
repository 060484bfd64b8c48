"""Notebook 16 (beyond the paper): a choice that never reads the confirming subjects' labels.

Notebook 15 chose its row on the labels of the same 442 samples it was confirmed on (fresh
seeds, same subjects). Here the choice is *cross-fitted over subjects*:

* :func:`subject_halves` splits the 68 subjects into two halves A and B, balanced by dataset:
  matched pairs of subjects of one dataset with similar numbers of samples, one of each pair
  to each half by a generator seeded with :data:`SPLIT_SEED`. :data:`SPLIT_FILE` holds the
  split, committed before any run that takes part in the choice existed.
* On the choosing seeds the candidate with the largest composite UF1 on half A's samples is
  chosen, and scored on half B with fresh seeds; and the reverse. The number reported is the
  composite UF1 of all samples pooled, each half predicted by the candidate chosen on the other.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from ..evaluation import metrics
from ..evaluation.selection import seed_epochs_vote
from ..io import ROOT, write_text
from ..training.loso import run_loso
from ..training.store import Run, load_run
from .experiments import CROSSFIT_GROUPS as GROUPS
from .experiments import CROSSFIT_HTNET as HTNET_GROUPS
from .experiments import CROSSFIT_MODELS as MODELS
from .experiments import (SHALLOW_MODELS, chosen_note, group_config, group_seeds,
                          matched_members, needed_groups, runs_used)
from .readouts import READOUTS, RULES, ci_bounds
from .tables import common_samples, score_row

SPLIT_SEED = 16  # the generator seed of the subject split (notebook 16)
PREREGISTRATION = (ROOT / "results" / "preregistration"
                   / "crossfit_seeds_9-11_cpu_preregistration.md")
GOAL = 0.76
# RCN (Xia et al., IEEE TIP 2020), its composite UF1 and UAR on the same benchmark, obtained
# without test labels (a fixed schedule)
RCN_PUBLISHED = {"uf1": 0.7432, "uar": 0.7190}
HALVES = ("A", "B")
SPLIT_FILE = ROOT / "results" / "preregistration" / "crossfit_subject_halves.csv"


def subject_halves(table: pd.DataFrame, seed: int = SPLIT_SEED) -> pd.DataFrame:
    """One row per subject: ``dataset``, ``subject``, ``half`` (A or B), ``samples``.

    Matched pairs, so that the halves have about as many samples as subjects of each
    dataset: within each dataset (in the order smic, casme2, samm, then any other) the subjects
    are sorted by their number of samples (then by id) and taken in consecutive pairs; one
    generator seeded with ``seed`` sends one subject of each pair to A and the other to B. A
    dataset's odd subject out (the one with most samples) goes to the half with fewer samples
    so far (to A on a tie)."""
    rng = np.random.default_rng(seed)
    order = ["smic", "casme2", "samm"]
    datasets = order + sorted(set(table["dataset"]) - set(order))
    rows, samples = [], {"A": 0, "B": 0}
    for ds in datasets:
        counts = table.loc[table["dataset"] == ds, "subject"].astype(str).value_counts()
        ranked = sorted(counts.index, key=lambda s: (counts[s], s))
        for i in range(0, len(ranked), 2):
            pair = ranked[i:i + 2]
            if len(pair) == 2:
                first = "A" if rng.random() < 0.5 else "B"
                halves = [first, "B" if first == "A" else "A"]
            else:
                halves = ["A" if samples["A"] <= samples["B"] else "B"]
            for s, half in zip(pair, halves):
                samples[half] += int(counts[s])
                rows.append({"dataset": ds, "subject": s, "half": half,
                             "samples": int(counts[s])})
    out = pd.DataFrame(rows).sort_values(["dataset", "subject"], kind="stable")
    return out.reset_index(drop=True)


def split_text(halves: pd.DataFrame) -> str:
    """The split as the CSV text of :data:`SPLIT_FILE`."""
    return halves.to_csv(index=False, lineterminator="\n")


def write_split(table: pd.DataFrame, path=SPLIT_FILE) -> None:
    """Write :func:`subject_halves` of ``table`` to ``path`` (atomic)."""
    write_text(path, split_text(subject_halves(table)))


def read_split(path=SPLIT_FILE) -> pd.DataFrame:
    """The committed split (subject ids read as text: SAMM's ``006`` keeps its zeros)."""
    return pd.read_csv(path, dtype={"subject": str, "dataset": str, "half": str})


def half_of(halves: pd.DataFrame) -> dict[str, str]:
    """subject -> half."""
    return dict(zip(halves["subject"].astype(str), halves["half"]))


# --------------------------------------------------------------------------- the candidates

def group_runs(data, profile: str, seeds, *, runs_dir, groups=GROUPS, retrain: bool = False,
               workers: int = 1) -> dict[str, list[Run]]:
    """Per group of ``groups``, its runs with ``seeds`` (:func:`group_seeds`), read back or
    trained."""
    return {g: [load_run(run_loso(data, group_config(g, profile), seed=s, runs_dir=runs_dir,
                                  profile=profile, retrain=retrain, workers=workers,
                                  progress=False)) for s in group_seeds(g, seeds)]
            for g in groups}


def _epochs(a: np.ndarray, n: int) -> np.ndarray:
    """A run's per-epoch array with ``n`` epochs: a one-fit model (logistic regression) has the
    same prediction at every epoch, so each run weighs the same in a vote over epochs."""
    a = np.asarray(a)
    return np.repeat(a, n, axis=0) if len(a) == 1 and n > 1 else a


def members_of(runs: dict[str, list[Run]], model: str) -> list[Run]:
    """The runs a model pools (every run of each of its groups)."""
    return [r for g in MODELS[model] for r in runs[g]]


def predictions(members: list[Run], readout: str, rule: str) -> pd.DataFrame:
    """One predictions table (column ``pred``) of ``rule`` over the ``readout`` of ``members``,
    as :func:`htnetlib.study.readouts.row_tables` makes it: the runs' own stored classes for
    the model readout under a hard vote, else the readout's probabilities."""
    samples = common_samples(members)
    n = max(len(r.epochs["pred"]) for r in members)
    if readout == "model" and not rule.startswith("soft"):
        pred = seed_epochs_vote([_epochs(r.epochs["pred"], n) for r in members],
                                0.25 if "25%" in rule else None)
    else:
        pred = RULES[rule]([_epochs(READOUTS[readout](r.epochs), n) for r in members])
    return samples.assign(pred=pred)


def candidate_rows(runs: dict[str, list[Run]], models=None) -> list[dict]:
    """Every model x readout x rule whose groups ``runs`` holds, unscored, in the order of
    :data:`MODELS`, ``READOUTS`` and ``RULES``: ``{"variant", "model", "readout", "rule",
    "honest", "runs", "tables"}``."""
    rows = []
    for model in models or MODELS:
        if not all(runs.get(g) for g in MODELS[model]):
            continue
        members = members_of(runs, model)
        for readout in READOUTS:
            for rule in RULES:
                rows.append({"variant": f"{model}, {readout}", "model": model,
                             "readout": readout, "rule": rule, "honest": True, "runs": members,
                             "tables": [predictions(members, readout, rule)]})
    return rows


def spec(row) -> dict:
    return {k: row[k] for k in ("model", "readout", "rule")}


def same(row, spec_: dict | None) -> bool:
    return spec_ is not None and all(row[k] == spec_[k] for k in ("model", "readout", "rule"))


# --------------------------------------------------------------------------- the choice


def in_half(table: pd.DataFrame, split: pd.DataFrame, half: str) -> pd.DataFrame:
    """The rows of a predictions table whose subject is in ``half`` of ``split``."""
    halves = half_of(split)
    return table[table["subject"].astype(str).map(halves) == half]


def half_uf1(tables: list[pd.DataFrame], split: pd.DataFrame, half: str) -> float:
    """Composite UF1 (eq. 8) of ``half``'s samples, the mean over ``tables``."""
    return float(np.mean([metrics.uf1(t["label"], t["pred"]) for t in
                          (in_half(t, split, half) for t in tables)]))


def half_table(rows: list[dict], split: pd.DataFrame) -> pd.DataFrame:
    """Every candidate's composite UF1 on half A, on half B and on all samples, in the order of
    ``rows`` (each row one predictions table of the same samples, as
    :func:`candidate_rows` makes them; a half without samples scores NaN)."""
    first = rows[0]["tables"][0]
    y = first["label"].to_numpy()
    preds = np.stack([r["tables"][0]["pred"].to_numpy() for r in rows])
    halves = first["subject"].astype(str).map(half_of(split)).to_numpy()
    out = pd.DataFrame([spec(r) for r in rows])
    for h in HALVES:
        m = halves == h
        out[f"UF1 on {h}"] = metrics.uf1_rows(y[m], preds[:, m]) if m.any() else np.nan
    out["UF1 on all"] = metrics.uf1_rows(y, preds)
    return out


def choose(scores: pd.DataFrame) -> dict[str, dict]:
    """The cross-fitted choice: per half, the candidate with the largest composite UF1 on that
    half's samples (the first in candidate order on a tie; the first candidate where the half
    has no samples). It predicts the *other* half."""
    return {h: spec(scores.iloc[int(np.argmax(np.nan_to_num(
        scores[f"UF1 on {h}"].to_numpy(), nan=-1.0)))]) for h in HALVES}


def registered_note(chosen: dict[str, dict], profile: str, split: pd.DataFrame) -> str:
    """:func:`htnetlib.study.experiments.chosen_note` for a choice made on ``split``."""
    committed = SPLIT_FILE.is_file() and split.reset_index(drop=True).equals(read_split())
    return chosen_note(chosen, profile, committed)


def other(half: str) -> str:
    return "B" if half == "A" else "A"


def crossfit_predictions(runs: dict[str, list[Run]], chosen: dict[str, dict],
                         split: pd.DataFrame) -> pd.DataFrame:
    """One predictions table of every sample: each half predicted by the candidate chosen on
    the other half (:func:`choose`), on ``runs`` (the fresh seeds), in the runs' sample order."""
    parts, order = [], None
    for h, c in chosen.items():
        table = predictions(members_of(runs, c["model"]), c["readout"], c["rule"])
        order = table.index if order is None else order
        parts.append(in_half(table, split, other(h)))
    return pd.concat(parts).loc[order]


def split_for(data) -> tuple[pd.DataFrame, str]:
    """The split for ``data`` and where it comes from: the committed :data:`SPLIT_FILE` where
    it lists exactly ``data``'s subjects (the release), else :func:`subject_halves` of
    ``data``'s own table with the same seed (the synthetic cohort, a test's data)."""
    committed = read_split() if SPLIT_FILE.is_file() else None
    subjects = set(data.table["subject"].astype(str))
    if committed is not None and set(committed["subject"]) == subjects:
        return committed, f"the committed split (`{SPLIT_FILE.relative_to(ROOT)}`)"
    return (subject_halves(data.table), f"a split of these data's {len(subjects)} subjects made "
            f"as the committed one was (seed {SPLIT_SEED}); the committed split lists the "
            "release's subjects")


def split_summary(split: pd.DataFrame) -> pd.DataFrame:
    """Subjects and samples per dataset and half."""
    from ..data.release import DATASET_NAMES

    g = split.groupby(["dataset", "half"]).agg(subjects=("subject", "size"),
                                                samples=("samples", "sum")).reset_index()
    g["dataset"] = g["dataset"].map(lambda d: DATASET_NAMES.get(d, d))
    return g.pivot(index="dataset", columns="half", values=["subjects", "samples"])


# --------------------------------------------------------------------------- costs


def cost_table(runs: dict[str, list[Run]], profile: str) -> pd.DataFrame:
    """Per group: its network's parameters, runs, seeds, and CPU-minutes of training (each
    run's folds' seconds summed) per run and in all, on which device."""
    from ..model import parameter_count

    out = []
    for g, rs in runs.items():
        config = group_config(g, profile)
        minutes = [r.meta.get("train_seconds", float("nan")) / 60 for r in rs]
        out.append({"group": g, "model": config.model,
                    "parameters": 0 if config.model == "logreg" else parameter_count(config),
                    "runs": len(rs), "seeds": ",".join(str(r.meta["seed"]) for r in rs),
                    "CPU-minutes a run": float(np.mean(minutes)),
                    "CPU-minutes": float(np.sum(minutes)),
                    "device": rs[0].meta.get("device") if rs else None})
    return pd.DataFrame(out)


# --------------------------------------------------------------------------- the choice, shown


def choice_table(scores: pd.DataFrame, chosen: dict[str, dict], top: int = 5) -> pd.DataFrame:
    """Per half, its ``top`` candidates by composite UF1 on that half, the chosen one first;
    with each one's score on the other half (the samples it will predict) beside."""
    out = []
    for h in HALVES:
        best = scores.sort_values(f"UF1 on {h}", ascending=False, kind="stable").head(top)
        for rank, (_, r) in enumerate(best.iterrows(), 1):
            out.append({"chosen on": h, "rank": rank, "model": r["model"],
                        "readout": r["readout"], "rule": r["rule"],
                        "UF1 on the choosing half": r[f"UF1 on {h}"],
                        "UF1 on the other half": r[f"UF1 on {other(h)}"],
                        "chosen": same(r, chosen[h])})
    return pd.DataFrame(out)


def new_model_table(scores: pd.DataFrame) -> pd.DataFrame:
    """Per model, its best row on all samples of the choosing seeds (for reading only: the
    choice is made per half), largest first."""
    idx = scores.groupby("model", sort=False)["UF1 on all"].idxmax()
    best = scores.loc[idx].sort_values("UF1 on all", ascending=False, kind="stable")
    return best[["model", "readout", "rule", "UF1 on all", "UF1 on A", "UF1 on B"]]


def matched_runs(data, profile: str, chosen: dict[str, dict], seeds, *, runs_dir,
                 retrain: bool = False, workers: int = 1) -> dict[tuple[str, int], Run]:
    """Every run of the compute-matched baseline (:func:`matched_members` of the larger
    chosen candidate's run count), read back or trained."""
    n = max(runs_used(c["model"], seeds) for c in chosen.values())
    return {(g, s): load_run(run_loso(data, group_config(g, profile), seed=s, runs_dir=runs_dir,
                                      profile=profile, retrain=retrain, workers=workers,
                                      progress=False))
            for g, s in matched_members(n, seeds)}


# --------------------------------------------------------------------------- the confirmation


def confirmation_rows(confirm: dict[str, list[Run]], matched: dict[tuple[str, int], Run],
                      chosen: dict[str, dict], split: pd.DataFrame, baseline: dict,
                      seeds) -> list[dict]:
    """The fresh seeds' rows, in the pre-registered order: the primary (cross-fitted, every
    sample), the current headline, the compute-matched headline; then each half scored by
    the candidate chosen on the other, with the headline on the same half. Each row:
    ``{"role", "model", "readout", "rule", "runs", "tables", "baseline"}``."""
    base = predictions(members_of(confirm, baseline["model"]), baseline["readout"],
                       baseline["rule"])
    parts = []
    for h, c in chosen.items():
        members = [matched[m] for m in matched_members(runs_used(c["model"], seeds), seeds)]
        parts.append(in_half(predictions(members, baseline["readout"], baseline["rule"]),
                             split, other(h)))
    matched_table = pd.concat(parts).loc[base.index]
    label = {k: " / ".join(dict.fromkeys(c[k] for c in chosen.values()))
             for k in ("model", "readout", "rule")}
    rows = [{"role": "primary: cross-fitted (pre-registered)", **label,
             "runs": sorted({r.path.name for c in chosen.values()
                             for r in members_of(confirm, c["model"])}),
             "tables": [crossfit_predictions(confirm, chosen, split)], "baseline": [base]},
            {"role": "current headline (pre-registered baseline)", **baseline,
             "runs": [r.path.name for r in members_of(confirm, baseline["model"])],
             "tables": [base], "baseline": [base]},
            {"role": "compute-matched headline", **baseline,
             "runs": sorted(r.path.name for r in matched.values()),
             "tables": [matched_table], "baseline": [base]}]
    for h, c in chosen.items():
        scored = other(h)
        rows.append({"role": f"half {scored}, by the candidate chosen on {h}", **c,
                     "runs": [r.path.name for r in members_of(confirm, c["model"])],
                     "tables": [in_half(predictions(members_of(confirm, c["model"]),
                                                    c["readout"], c["rule"]), split, scored)],
                     "baseline": [in_half(base, split, scored)]})
    return rows


def confirmation_table(rows: list[dict], *, n_boot: int = 1000) -> pd.DataFrame:
    """Every row of :func:`confirmation_rows` scored by
    :func:`htnetlib.study.tables.score_row` against the headline on the same samples."""
    out = []
    for r in rows:
        s = score_row(r["tables"], r["baseline"], n_boot=n_boot)
        out.append({"role": r["role"], "model": r["model"], "readout": r["readout"],
                    "rule": r["rule"], "runs": len(r["runs"]),
                    "samples": int(sum(len(t) for t in r["tables"])),
                    **{k.replace("plain honest", "headline"): v for k, v in s.items()}})
    return pd.DataFrame(out)


def paired(rows: list[dict], a: int, b: int, *, n_boot: int = 1000) -> dict:
    """Row ``a`` minus row ``b`` of :func:`confirmation_rows` (composite UF1, paired over
    subjects): ``{"diff", "ci", "p_le_zero"}``."""
    return metrics.paired_bootstrap(rows[a]["tables"], "pred", rows[b]["tables"], "pred",
                                    n_boot=n_boot)


# the columns a page shows of the confirmation table (the CSV keeps every column)
SHOWN = ["role", "model", "readout", "rule", "runs", "samples", "Full UF1", "Full UF1 95% CI",
         "Full UAR", "UF1 - headline", "difference 95% CI"]


def beats_headline(conf: pd.DataFrame) -> bool:
    """The pre-registered criterion: the primary's paired 95 % interval against the current
    headline lies above 0."""
    return ci_bounds(str(conf.iloc[0]["difference 95% CI"]))[0] > 0


# --------------------------------------------------------------------------- provenance


def preregistration_commit(path=None) -> str | None:
    """The commit that added the pre-registration (``git log --diff-filter=A``), None where
    this checkout cannot say (no git, a shallow clone that lacks it)."""
    from ..io import git

    path = PREREGISTRATION if path is None else path
    out = git("log", "--diff-filter=A", "--format=%H", "--", str(path.relative_to(ROOT)),
              repo=ROOT)
    return out.split()[-1] if out and out.split() else None


def stamp_check(runs: list[Run], ref: str | None) -> pd.DataFrame:
    """Per confirming run, read from its fold stamps (``folds.json``): how many folds carry a
    commit and a time, and how many were trained after ``ref`` (the pre-registration's
    commit; :func:`htnetlib.training.stamps.folds_trained_after`)."""
    from ..training.stamps import folds_trained_after

    out = []
    for r in runs:
        folds = folds_trained_after(r.path, ref) if ref else []
        stamped = sum(bool(f["commit"]) and bool(f["trained_at"]) for f in folds)
        after = sum(f["after"] is True for f in folds)
        times = sorted(f["trained_at"] for f in folds if f["trained_at"])
        out.append({"run": r.path.name, "seed": r.meta["seed"], "folds": len(folds),
                    "stamped": stamped, "trained after the pre-registration": after,
                    "first fold trained": times[0][:16] if times else None,
                    "how": folds[0]["how"] if folds else "no pre-registration commit here"})
    return pd.DataFrame(out)


# --------------------------------------------------------------------------- the search, corrected


def rows_since_12(data, profile: str, seeds, rows: list[dict], *, runs_dir,
                  retrain: bool = False, workers: int = 1) -> list[dict]:
    """Every row tried on ``seeds`` since notebook 12: notebook 12's rows
    (:func:`htnetlib.study.tables.selection_rows`; its runs read back or trained) and
    ``rows``, this notebook's candidates (notebook 15's 48 among them)."""
    from .selection_report import selection_runs
    from .tables import selection_rows

    runs, _ = selection_runs(data, profile, seeds, runs_dir=runs_dir, retrain=retrain,
                             workers=workers)
    return selection_rows(runs) + rows


# --------------------------------------------------------------------------- findings


def _row(conf: pd.DataFrame, role: str) -> pd.Series:
    return conf[conf["role"].str.startswith(role)].iloc[0]


def choice_bullets(chosen: dict[str, dict], scores: pd.DataFrame, costs: pd.DataFrame,
                   split_note: str, seeds) -> list[str]:
    """The split, what the new groups cost, and the cross-fitted choice, as bullets."""
    cost = "; ".join(f"{r['group']} {r['CPU-minutes a run']:.1f}"
                     for _, r in costs.iterrows() if r["group"] in SHALLOW_MODELS)
    out = [f"**The split**: {split_note}; {len(scores)} label-free candidates scored on each "
           f"half with seeds {','.join(map(str, seeds))}.",
           f"**Cost**, CPU-minutes a run (the folds' seconds summed): {cost}."]
    for h, c in chosen.items():
        r = scores[[same(x, c) for _, x in scores.iterrows()]].iloc[0]
        out.append(f"**Chosen on half {h}**: *{c['model']}, {c['readout']}* with *{c['rule']}*, "
                   f"UF1 {r[f'UF1 on {h}']:.3f} on half {h}; on half {other(h)}, which it "
                   f"predicts, it scored {r[f'UF1 on {other(h)}']:.3f} with the same seeds.")
    return out


def confirmation_bullets(conf: pd.DataFrame, seeds, goal: float = GOAL) -> list[str]:
    """The cross-fitted confirmation as bullets, every number read from ``conf``
    (:func:`confirmation_table`): the primary, the criterion against the headline, the
    compute-matched headline, and the goal."""
    p = _row(conf, "primary")
    h = _row(conf, "current headline")
    m = _row(conf, "compute-matched")
    better = beats_headline(conf)
    verdict = ("above 0: by the pre-registered criterion it **replaces the headline**."
               if better else "not above 0: by the pre-registered criterion the headline "
               "**stays**.")
    mlo = ci_bounds(str(m["difference 95% CI"]))
    best = float(p["Full UF1"])
    goal_text = (f"reaches the goal of {goal:.2f}" if best >= goal else
                 f"stays {goal - best:.3f} below the goal of {goal:.2f}")
    rcn = RCN_PUBLISHED["uf1"]
    return [
        f"**Cross-fitted, fresh seeds {','.join(map(str, seeds))}** (pre-registered before "
        f"they were trained): composite UF1 **{best:.3f}** (95 % CI {p['Full UF1 95% CI']}), "
        f"UAR {float(p['Full UAR']):.3f} (95 % CI {p['Full UAR 95% CI']}), every one of the "
        f"{int(p['samples'])} samples predicted by the candidate chosen on the other half.",
        f"Against the current headline on the same runs ({float(h['Full UF1']):.3f}, 95 % CI "
        f"{h['Full UF1 95% CI']}): **{float(p['UF1 - headline']):+.3f}** (paired 95 % CI "
        f"{p['difference 95% CI']}, one-sided p = {float(p['p(difference <= 0)']):.3f}), "
        f"{verdict}",
        f"The compute-matched headline ({int(m['runs'])} HTNet runs) scores "
        f"{float(m['Full UF1']):.3f}, {float(m['UF1 - headline']):+.3f} against the headline "
        f"(paired 95 % CI {mlo[0]:+.3f} to {mlo[1]:+.3f}): what more runs alone give.",
        f"The cross-fitted score {goal_text}; RCN's published composite UF1 {rcn:.3f} (Xia et "
        f"al. 2020) is {'below' if best > rcn else 'above'} it by {abs(best - rcn):.3f}.",
    ]


def curse_bullet(curse: pd.DataFrame, n12: int, n: int) -> str:
    """The winner's-curse corrections over every row tried since notebook 12: ``n`` honest
    rows, the first ``n12`` of them notebook 12's."""
    c = curse.set_index("estimate")["composite UF1"]
    return (f"**Every row tried since notebook 12** ({n} on the choosing seeds: notebook 12's "
            f"{n12}, then {n - n12} here, notebook 15's 48 among them): the largest scores "
            f"{c.iloc[0]:.3f}; corrected for choosing it, {c.iloc[1]:.3f} by the bootstrap and "
            f"{c.iloc[3]:.3f} by split halves.")


def stamp_bullet(stamps: pd.DataFrame, ref: str | None) -> str:
    """The fold stamps of the confirming runs against the pre-registration's commit."""
    if ref is None or stamps.empty:
        return "This checkout cannot name the pre-registration's commit (no git history)."
    folds, after = int(stamps["folds"].sum()), int(stamps["trained after the pre-registration"].sum())
    return (f"**Provenance**: {int(stamps['stamped'].sum())} of the {folds} folds of the "
            f"{len(stamps)} confirming runs carry a commit and a training time; {after} were "
            f"trained after the pre-registration's commit {ref[:10]} (git ancestry, fold by "
            "fold).")


# --------------------------------------------------------------------------- the figure

FAMILIES = {"HTNet": "tab:blue", "shallow networks": "tab:orange", "HTNet + shallow": "tab:green"}


def family(model: str) -> str:
    """HTNet (notebook 15's models), shallow networks only, or both pooled."""
    groups = set(MODELS[model])
    htnet = groups & set(HTNET_GROUPS)
    return ("HTNet" if htnet == groups else "shallow networks" if not htnet else
            "HTNet + shallow")


def halves_figure(scores: pd.DataFrame, chosen: dict[str, dict], title: str):
    """Every candidate's composite UF1 on half A against half B (choosing seeds), coloured by
    family; the two chosen candidates ringed and labelled. Values drawn quantized to 0.001."""
    import matplotlib.pyplot as plt

    from .figures import quantized

    a, b = quantized(scores["UF1 on A"], 0.001), quantized(scores["UF1 on B"], 0.001)
    fig, ax = plt.subplots(figsize=(5.6, 5))
    fam = scores["model"].map(family)
    for name, colour in FAMILIES.items():
        m = (fam == name).to_numpy()
        ax.scatter(a[m], b[m], s=14, c=colour, alpha=0.7, label=f"{name} ({m.sum()})")
    for h, c in chosen.items():
        i = next(k for k, (_, r) in enumerate(scores.iterrows()) if same(r, c))
        ax.scatter(a[i], b[i], s=120, facecolors="none", edgecolors="tab:red", lw=1.5)
        ax.annotate(f"chosen on {h}", (a[i], b[i]), textcoords="offset points",
                    xytext=(6, -12 if h == "A" else 6), fontsize=8, color="tab:red")
    lo = float(min(a.min(), b.min())) - 0.01
    hi = float(max(a.max(), b.max())) + 0.01
    ax.plot([lo, hi], [lo, hi], color="0.6", lw=0.8, ls=":")
    ax.set(xlim=(lo, hi), ylim=(lo, hi), xlabel="composite UF1 on half A",
           ylabel="composite UF1 on half B", title=title)
    ax.legend(fontsize=8, loc="lower right")
    fig.tight_layout(rect=(0, 0.03, 1, 1))
    return fig


# --------------------------------------------------------------------------- the leak test


def relabelled(rows: list[dict], labels: pd.Series) -> list[dict]:
    """``rows`` with every table's labels replaced by ``labels`` (indexed like the tables)."""
    return [{**r, "tables": [t.assign(label=labels.loc[t.index].to_numpy()) for t in
                             r["tables"]]} for r in rows]


def choose_on_all(scores: pd.DataFrame) -> dict[str, dict]:
    """A leaky reference: both halves predicted by the candidate best on *all* samples, its
    own half's labels included."""
    best = spec(scores.iloc[int(np.argmax(scores["UF1 on all"].to_numpy()))])
    return {h: best for h in HALVES}


def leak_check(rows: list[dict], split: pd.DataFrame, *, perfect: int = 5) -> pd.DataFrame:
    """Does the choice that predicts half h move when only h's labels change? For each half h:
    h's labels shifted by one class and by two, and set to the predictions of each of the
    ``perfect`` candidates best on h (other than the one chosen), which makes that candidate
    perfect on h. The cross-fitted choice (:func:`choose`) must never move; the leaky
    reference (:func:`choose_on_all`) is shown moving, so the test can fail."""
    base = rows[0]["tables"][0]
    labels = base["label"].astype(np.int64)
    halves = base["subject"].astype(str).map(half_of(split))
    scores = half_table(rows, split)
    honest, leaky = choose(scores), choose_on_all(scores)
    out = []
    for h in HALVES:
        mask = (halves == h).to_numpy()
        if not mask.any():
            continue
        predictor = other(h)  # the half whose choice predicts h
        changes = [(f"labels shifted by {k}", labels.where(~mask, (labels + k) % 3))
                   for k in (1, 2)]
        ranked = scores.sort_values(f"UF1 on {h}", ascending=False, kind="stable")
        picks = [i for i in ranked.index if not same(scores.loc[i], honest[predictor])]
        for i in picks[:perfect]:
            pred = rows[i]["tables"][0]["pred"].astype(np.int64)
            changes.append((f"labels = {rows[i]['model']}, {rows[i]['readout']}, "
                            f"{rows[i]['rule']}", labels.where(~mask, pred)))
        for what, new in changes:
            again = half_table(relabelled(rows, new), split)
            out.append({"half relabelled": h, "change": what,
                        "cross-fitted choice moved": choose(again)[predictor] != honest[predictor],
                        "leaky reference moved": choose_on_all(again)[predictor]
                        != leaky[predictor]})
    return pd.DataFrame(out)


def leak_bullet(leaks: pd.DataFrame) -> str:
    """The leak test in one bullet."""
    n = len(leaks)
    return (f"**Leak test**: over {n} changes of one half's labels only (shifts, and labels "
            f"that make one of the other candidates perfect there), the candidate predicting "
            f"that half moved {int(leaks['cross-fitted choice moved'].sum())} times; the leaky "
            f"reference (chosen on all samples) moved {int(leaks['leaky reference moved'].sum())}"
            " times.")
