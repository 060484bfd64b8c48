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

from ..io import ROOT, write_text

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
