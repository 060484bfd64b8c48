"""Metrics and protocols (paper section 4.2, equations 8 and 9).

UF1 (eq. 8) and UAR (eq. 9) are computed on predictions pooled over all LOSO folds and averaged
over the classes present in ``y_true``. Two protocols read one run's per-epoch predictions:

``honest``
    the final epoch's predictions; no test label is used for any choice.
``oracle``
    per held-out subject, the epoch with the most correct test predictions, ties to the later
    epoch: what the official ``main_HTNet.py`` reports. It chooses with the test labels.

Bootstrap confidence intervals resample *subjects*, the unit of LOSO.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
from sklearn.metrics import confusion_matrix, f1_score, recall_score

PROTOCOLS = ("honest", "oracle")
GROUPS = ("full", "smic", "casme2", "samm")


def uf1(y_true, y_pred) -> float:
    """Unweighted (macro) F1 over the classes present in ``y_true`` (eq. 8)."""
    labels = np.unique(y_true)
    return float(f1_score(y_true, y_pred, labels=labels, average="macro", zero_division=0))


def uar(y_true, y_pred) -> float:
    """Unweighted average recall over the classes present in ``y_true`` (eq. 9)."""
    labels = np.unique(y_true)
    return float(recall_score(y_true, y_pred, labels=labels, average="macro", zero_division=0))


def confusion(y_true, y_pred, labels=(0, 1, 2), normalize: str | None = None) -> np.ndarray:
    """Confusion matrix, rows = true class; ``normalize="true"`` gives row fractions."""
    return confusion_matrix(y_true, y_pred, labels=list(labels), normalize=normalize)


def honest_predictions(pred: np.ndarray) -> np.ndarray:
    """The final epoch's predictions: ``pred`` is (epochs, N)."""
    return np.asarray(pred)[-1].copy()


def oracle_epochs(pred: np.ndarray, y_true, subjects) -> dict:
    """Per subject, the index of the epoch with the most correct predictions (ties: later)."""
    pred, y_true, subjects = np.asarray(pred), np.asarray(y_true), np.asarray(subjects)
    chosen = {}
    for s in pd.unique(subjects):
        idx = subjects == s
        correct = (pred[:, idx] == y_true[idx]).sum(axis=1)  # (epochs,)
        chosen[s] = int(len(correct) - 1 - np.argmax(correct[::-1]))
    return chosen


def oracle_predictions(pred: np.ndarray, y_true, subjects) -> np.ndarray:
    """Each subject's predictions at its oracle epoch (see :func:`oracle_epochs`)."""
    pred, subjects = np.asarray(pred), np.asarray(subjects)
    out = np.empty(pred.shape[1], dtype=pred.dtype)
    for s, e in oracle_epochs(pred, y_true, subjects).items():
        idx = subjects == s
        out[idx] = pred[e, idx]
    return out


def scores(table: pd.DataFrame, column: str) -> dict:
    """``{group: {"uf1": .., "uar": .., "n": ..}}`` for the composite and each dataset present."""
    out = {}
    for group in GROUPS:
        part = table if group == "full" else table[table["dataset"] == group]
        if len(part):
            out[group] = {"uf1": uf1(part["label"], part[column]),
                          "uar": uar(part["label"], part[column]), "n": int(len(part))}
    return out


def bootstrap_ci(table: pd.DataFrame, column: str, *, n_boot: int = 1000, seed: int = 0,
                 level: float = 0.95) -> dict:
    """Percentile intervals of UF1 and UAR, resampling subjects with replacement."""
    rng = np.random.default_rng(seed)
    subjects = table["subject"].to_numpy()
    ids = pd.unique(subjects)
    rows = {s: np.flatnonzero(subjects == s) for s in ids}
    y, p = table["label"].to_numpy(), table[column].to_numpy()
    stats = np.empty((n_boot, 2))
    for b in range(n_boot):
        idx = np.concatenate([rows[s] for s in rng.choice(ids, size=len(ids), replace=True)])
        stats[b] = uf1(y[idx], p[idx]), uar(y[idx], p[idx])
    lo, hi = np.quantile(stats, [(1 - level) / 2, (1 + level) / 2], axis=0)
    return {"uf1": (float(lo[0]), float(hi[0])), "uar": (float(lo[1]), float(hi[1]))}


def paired_bootstrap(table_a: pd.DataFrame, col_a: str, table_b: pd.DataFrame, col_b: str, *,
                     metric: str = "uf1", n_boot: int = 1000, seed: int = 0) -> dict:
    """Difference a - b of a metric between two runs on the same samples, subject-resampled.

    Returns the observed difference, its 95 % interval and the fraction of resamples where the
    difference is <= 0 (a one-sided bootstrap p-value for "a is better").
    """
    key = ["dataset", "subject", "sample"]
    merged = table_a[key + ["label", col_a]].merge(
        table_b[key + [col_b]].rename(columns={col_b: "_b"}), on=key, validate="one_to_one")
    if len(merged) != len(table_a):
        raise ValueError("the two runs do not hold the same samples")
    fn = {"uf1": uf1, "uar": uar}[metric]
    subjects = merged["subject"].to_numpy()
    ids = pd.unique(subjects)
    rows = {s: np.flatnonzero(subjects == s) for s in ids}
    y, a, b = merged["label"].to_numpy(), merged[col_a].to_numpy(), merged["_b"].to_numpy()
    rng = np.random.default_rng(seed)
    diffs = np.empty(n_boot)
    for i in range(n_boot):
        idx = np.concatenate([rows[s] for s in rng.choice(ids, size=len(ids), replace=True)])
        diffs[i] = fn(y[idx], a[idx]) - fn(y[idx], b[idx])
    lo, hi = np.quantile(diffs, [0.025, 0.975])
    return {"diff": fn(y, a) - fn(y, b), "ci": (float(lo), float(hi)),
            "p_le_zero": float((diffs <= 0).mean())}
