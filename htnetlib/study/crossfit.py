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
from ..config import Config
from ..training.loso import run_loso
from ..training.store import Run, load_run
from .experiments import (READOUT_VARIANTS, SHALLOW_MODELS, readout_config, shallow_config,
                          shallow_seeds)
from .readouts import MODELS as READOUT_MODELS
from .readouts import READOUTS, RULES
from .tables import common_samples

SPLIT_SEED = 16  # the generator seed of the subject split (notebook 16)
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

# the run groups: name -> the configuration of its runs (htnetlib.study.experiments)
GROUPS = ("whole map", "regions", *SHALLOW_MODELS)
HTNET_GROUPS = dict(zip(("whole map", "regions"), READOUT_VARIANTS))

# the models: notebook 15's three (htnetlib.study.readouts.MODELS, by group), each shallow
# network alone, and ensembles across architectures (the runs of their groups pooled in one
# vote on the same folds)
MODELS = {
    "whole map": ("whole map",), "regions": ("regions",),
    "whole map + regions": ("whole map", "regions"),
    "RCN": ("RCN",), "two-stream": ("two-stream",), "STSTNet": ("STSTNet",),
    "logistic regression": ("logistic regression",),
    "whole map + regions + RCN": ("whole map", "regions", "RCN"),
    "whole map + regions + two-stream": ("whole map", "regions", "two-stream"),
    "whole map + regions + STSTNet": ("whole map", "regions", "STSTNet"),
    "RCN + two-stream + STSTNet": ("RCN", "two-stream", "STSTNet"),
    "every model": GROUPS,
}
NEW_MODELS = tuple(m for m in MODELS if m not in READOUT_MODELS)


def group_config(group: str, profile: str) -> Config:
    """The configuration of the runs of ``group``."""
    if group in HTNET_GROUPS:
        return readout_config(HTNET_GROUPS[group], profile)
    return shallow_config(group, profile)


def group_seeds(group: str, seeds) -> list[int]:
    """The seeds of ``group``'s runs: every seed, the first alone for logistic regression."""
    return shallow_seeds(group, seeds) if group in SHALLOW_MODELS else list(seeds)


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
    ``rows``."""
    out = []
    for r in rows:
        out.append({**spec(r), "UF1 on A": half_uf1(r["tables"], split, "A"),
                    "UF1 on B": half_uf1(r["tables"], split, "B"),
                    "UF1 on all": float(np.mean([metrics.uf1(t["label"], t["pred"])
                                                 for t in r["tables"]]))})
    return pd.DataFrame(out)


def choose(scores: pd.DataFrame) -> dict[str, dict]:
    """The cross-fitted choice: per half, the candidate with the largest composite UF1 on that
    half's samples (the first in candidate order on a tie). It predicts the *other* half."""
    return {h: spec(scores.iloc[int(np.argmax(scores[f"UF1 on {h}"].to_numpy()))])
            for h in HALVES}


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
