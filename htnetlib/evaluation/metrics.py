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
KEY = ["dataset", "subject", "sample"]  # identifies a sample in every predictions table


def uf1(y_true, y_pred) -> float:
    """Unweighted (macro) F1 over the classes present in ``y_true`` (eq. 8)."""
    labels = np.unique(y_true)
    return float(f1_score(y_true, y_pred, labels=labels, average="macro", zero_division=0))


def uf1_rows(y_true, preds) -> np.ndarray:
    """:func:`uf1` of each row of ``preds`` (R, N) against ``y_true`` (N,) at once: per class
    present in ``y_true``, F1 = 2 TP / (2 TP + FP + FN) (0 where that is 0 / 0), their mean."""
    y, p = np.asarray(y_true), np.asarray(preds)
    f1 = []
    for c in np.unique(y):
        hit, truth = p == c, y == c
        tp = (hit & truth).sum(1)
        denom = hit.sum(1) + truth.sum()  # 2 TP + FP + FN
        f1.append(np.divide(2 * tp, denom, out=np.zeros(len(p)), where=denom > 0))
    return np.mean(f1, axis=0)


def uar(y_true, y_pred) -> float:
    """Unweighted average recall over the classes present in ``y_true`` (eq. 9)."""
    labels = np.unique(y_true)
    return float(recall_score(y_true, y_pred, labels=labels, average="macro", zero_division=0))


def confusion(y_true, y_pred, labels=(0, 1, 2), normalize: str | None = None) -> np.ndarray:
    """Confusion matrix, rows = true class; ``normalize="true"`` gives row fractions."""
    return confusion_matrix(y_true, y_pred, labels=list(labels), normalize=normalize)


def worked_example(y_true, y_pred, labels=(0, 1, 2)) -> pd.DataFrame:
    """Equations 8 and 9 by hand on a small example: per class the true positives, false
    positives and false negatives from the confusion matrix, F1_c = 2 TP / (2 TP + FP + FN) and
    recall_c = TP / N_c; UF1 and UAR are their unweighted means over the classes (last row)."""
    cm = confusion(y_true, y_pred, labels)
    rows = []
    for i, c in enumerate(labels):
        tp = int(cm[i, i])
        fp, fn = int(cm[:, i].sum()) - tp, int(cm[i, :].sum()) - tp
        rows.append({"class": c, "N_c (true)": tp + fn, "TP": tp, "FP": fp, "FN": fn,
                     "F1_c (eq. 8)": 2 * tp / (2 * tp + fp + fn) if tp + fp + fn else 0.0,
                     "recall_c (eq. 9)": tp / (tp + fn) if tp + fn else 0.0})
    df = pd.DataFrame(rows)
    mean = {"class": "mean", "F1_c (eq. 8)": df["F1_c (eq. 8)"].mean(),
            "recall_c (eq. 9)": df["recall_c (eq. 9)"].mean()}
    return pd.concat([df, pd.DataFrame([mean])], ignore_index=True)


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


def _as_list(tables) -> list[pd.DataFrame]:
    return [tables] if isinstance(tables, pd.DataFrame) else list(tables)


def align(tables: list[pd.DataFrame], columns: list[str]):
    """The first table's samples, and ``columns[i]`` of ``tables[i]`` in the first table's order.

    Rows are matched on :data:`KEY` (dataset, subject, sample), so tables of several runs may
    list their samples in any order; the first table's order is kept (it fixes the order of
    subjects, hence the bootstrap's draws). Returns the first table's key and label columns
    (index reset) and one array per table. A table that holds a sample twice, misses one, has
    one the first lacks, or labels one differently is a ``ValueError`` naming that sample.
    """
    base = tables[0][KEY + ["label"]].reset_index(drop=True)
    index = pd.MultiIndex.from_frame(base[KEY])
    out = []
    for i, (t, col) in enumerate(zip(tables, columns)):
        t = t.set_index(KEY)
        if t.index.has_duplicates:
            raise ValueError(f"table {i} holds sample {t.index[t.index.duplicated()][0]} twice")
        missing = index.difference(t.index, sort=False)
        extra = t.index.difference(index, sort=False)
        if len(missing) or len(extra):
            where = (f"table {i} lacks sample {missing[0]}" if len(missing)
                     else f"table {i} has sample {extra[0]}, which table 0 lacks")
            raise ValueError(f"the runs compared do not hold the same samples: {where}")
        t = t.reindex(index)
        differ = t["label"].to_numpy() != base["label"].to_numpy()
        if differ.any():
            raise ValueError(f"table {i} labels sample {index[differ.argmax()]} differently "
                             f"from table 0")
        out.append(t[col].to_numpy())
    return base, out


def _resample_counts(subjects, n_boot: int, seed: int):
    """Subject ids, and how often each is drawn in each of ``n_boot`` resamples (n_boot, S).

    The draws are those of ``rng.choice(ids, len(ids))`` once per resample."""
    ids = pd.unique(np.asarray(subjects))
    rng = np.random.default_rng(seed)
    draws = np.stack([rng.choice(len(ids), size=len(ids), replace=True) for _ in range(n_boot)])
    counts = np.zeros((n_boot, len(ids)))
    np.add.at(counts, (np.arange(n_boot)[:, None], draws), 1)
    return ids, counts


def _resampled_scores(y, pred, subjects, ids, counts) -> dict:
    """UF1 and UAR of every resample at once, from per-subject confusion counts.

    A resample's confusion matrix is the sum of its subjects' (with multiplicity), and both
    metrics follow from it exactly as :func:`uf1` and :func:`uar` compute them (macro average
    over the classes present in the resample's labels)."""
    y, pred = np.asarray(y).astype(np.int64), np.asarray(pred).astype(np.int64)
    subjects = np.asarray(subjects)
    k = int(max(y.max(), pred.max())) + 1
    index = {s: i for i, s in enumerate(ids)}
    per_subject = np.zeros((len(ids), k * k))
    np.add.at(per_subject, (np.array([index[s] for s in subjects]), y * k + pred), 1)
    cm = (counts @ per_subject).reshape(-1, k, k)  # (n_boot, true, predicted)
    tp = np.diagonal(cm, axis1=1, axis2=2)
    support, predicted = cm.sum(2), cm.sum(1)
    present = support > 0
    with np.errstate(invalid="ignore", divide="ignore"):
        f1 = np.where(present, 2 * tp / (support + predicted), 0.0)
        recall = np.where(present, tp / np.where(present, support, 1), 0.0)
    n = present.sum(1)
    return {"uf1": f1.sum(1) / n, "uar": recall.sum(1) / n}


def subject_ids(tables) -> np.ndarray:
    """The subjects of the first table of ``tables``, in the order the bootstrap draws them."""
    return pd.unique(_as_list(tables)[0]["subject"].to_numpy())


def weighted_scores(tables, column: str, weights: np.ndarray) -> dict:
    """UF1 and UAR (mean over the runs of ``tables``) with each subject's samples counted
    ``weights[r, i]`` times, for every row r of ``weights`` (R, subjects in
    :func:`subject_ids` order): a bootstrap resample, or 0/1 weights for a subset of subjects
    (a split half). Returns ``{"uf1": (R,), "uar": (R,)}``."""
    tables = _as_list(tables)
    base, preds = align(tables, [column] * len(tables))
    subjects, y = base["subject"].to_numpy(), base["label"].to_numpy()
    ids = subject_ids(tables)
    per_run = [_resampled_scores(y, p, subjects, ids, np.asarray(weights, float)) for p in preds]
    return {m: np.mean([r[m] for r in per_run], axis=0) for m in ("uf1", "uar")}


def bootstrap_weights(tables, n_boot: int = 1000, seed: int = 0) -> np.ndarray:
    """(n_boot, subjects): how often each subject is drawn in each resample, the draws
    :func:`bootstrap_ci` and :func:`paired_bootstrap` make with the same ``seed``."""
    return _resample_counts(_as_list(tables)[0]["subject"].to_numpy(), n_boot, seed)[1]


def bootstrap_ci(tables, column: str, *, n_boot: int = 1000, seed: int = 0,
                 level: float = 0.95) -> dict:
    """Percentile intervals of UF1 and UAR, resampling subjects with replacement.

    ``tables`` is one predictions table or a list of them over the same samples (runs with
    different seeds), in any row order (see :func:`align`); with several, each resample's metric
    is the mean over the runs, so the interval is that of the seed-averaged score.
    """
    stats = weighted_scores(tables, column, bootstrap_weights(tables, n_boot, seed))
    out = {}
    for m in ("uf1", "uar"):
        lo, hi = np.quantile(stats[m], [(1 - level) / 2, (1 + level) / 2])
        out[m] = (float(lo), float(hi))
    return out


def protocol_curve(pred: np.ndarray, y_true, subjects, epochs) -> pd.DataFrame:
    """UF1 and UAR of both protocols had training stopped after each of ``epochs`` epochs.

    Honest: the predictions after epoch E. Oracle: each subject's best epoch among 1..E.
    """
    rows = []
    for e in epochs:
        part = np.asarray(pred)[:e]
        h = honest_predictions(part)
        o = oracle_predictions(part, y_true, subjects)
        rows.append({"epochs": e, "honest_uf1": uf1(y_true, h), "oracle_uf1": uf1(y_true, o),
                     "honest_uar": uar(y_true, h), "oracle_uar": uar(y_true, o)})
    return pd.DataFrame(rows)


def subject_accuracy(table: pd.DataFrame, column: str) -> pd.DataFrame:
    """Per subject: number of test samples and the fraction ``column`` gets right."""
    ok = (table[column] == table["label"]).rename("correct")
    return (table.assign(correct=ok).groupby("subject")
            .agg(dataset=("dataset", "first"), samples=("label", "size"),
                 accuracy=("correct", "mean")).reset_index())


def paired_bootstrap(tables_a, col_a: str, tables_b, col_b: str, *, metric: str = "uf1",
                     n_boot: int = 1000, seed: int = 0) -> dict:
    """Difference a - b of a metric between two models on the same samples, subject-resampled.

    ``tables_a`` and ``tables_b`` are predictions tables or lists of them (seeds; the metric is
    averaged over each list), aligned by sample with :func:`align` (its errors number the
    tables of ``tables_a``, then those of ``tables_b``). Returns the observed difference, its
    95 % interval and the fraction of resamples where the difference is <= 0 (a one-sided
    bootstrap p-value for "a is better").
    """
    tables_a, tables_b = _as_list(tables_a), _as_list(tables_b)
    base, aligned = align(tables_a + tables_b, [col_a] * len(tables_a) + [col_b] * len(tables_b))
    pa, pb = aligned[:len(tables_a)], aligned[len(tables_a):]
    fn = {"uf1": uf1, "uar": uar}[metric]
    y = base["label"].to_numpy()
    subjects = base["subject"].to_numpy()
    ids, counts = _resample_counts(subjects, n_boot, seed)

    def boot(preds):
        return np.mean([_resampled_scores(y, p, subjects, ids, counts)[metric] for p in preds],
                       axis=0)

    score = lambda preds, idx: np.mean([fn(y[idx], p[idx]) for p in preds])  # noqa: E731
    diffs = boot(pa) - boot(pb)
    every = np.arange(len(y))
    lo, hi = np.quantile(diffs, [0.025, 0.975])
    return {"diff": float(score(pa, every) - score(pb, every)), "ci": (float(lo), float(hi)),
            "p_le_zero": float((diffs <= 0).mean())}
