"""The leak test: does a selection rule read the held-out subject's labels?

A rule ``rule(pred, y, subjects) -> (N,)`` (:mod:`htnetlib.evaluation.selection`) is honest when
its predictions for subject s do not depend on s's labels. The test holds every epoch's
predictions fixed, changes only s's labels, and watches s's own predictions under the rule;
other subjects' predictions may move (for them s is training data).

Changing s's labels a little catches a rule that chooses per subject (the oracle) but not one
that pools: a single epoch for everyone chosen by the pooled test score moves only when s can
tip the pooled choice, and one subject of 68 rarely can. :func:`leak_test` therefore also
*amplifies*:

1. **label shift**: s's labels shifted by one class, then by two;
2. **perfect epoch, amplified**: s's samples are repeated until they weigh as much as every
   other sample together, and s's labels are set to s's own predictions at one epoch
   (for each of s's distinct prediction patterns over the epochs that differ from the rule's
   answer): any rule that reads s's labels, pooled or not, is pulled toward that epoch.

The copies are appended as extra columns with s's subject id; the rule's answer on s's original
columns is compared with its answer on the same amplified input before the labels change, so
only the labels differ between the two calls.

:func:`leaky_rules` gives the negative controls, each reading the held-out labels in another
way; every one must fail the test on every stored run with more than one epoch (notebook 12).
"""

from __future__ import annotations

import numpy as np

from .selection import (CLASSES, FoldRule, best_epoch, confusion_by_epoch, oracle_rule,
                        pooled_best_epoch, scores_from_confusion)


MAX_PATTERNS = 6  # distinct prediction patterns of s tried by the perfect-epoch amplification


def leaked_subjects(rule, pred, y, subjects) -> list:
    """The label-shift test alone: subjects whose *own* predictions under ``rule`` change when
    their labels are shifted by one class, then by two. Catches per-subject leaks (the oracle);
    :func:`leak_test` adds the amplification that catches pooled ones."""
    return leak_test(rule, pred, y, subjects, amplify=False)


def leak_test(rule, pred, y, subjects, *, amplify: bool = True) -> list:
    """Subjects whose own predictions under ``rule`` move when only their labels change: the
    label shift, and with ``amplify`` the amplified perfect-epoch change of the module
    docstring. ``rule`` is any ``rule(pred, y, subjects) -> (N,)``; an honest rule gives [].

    A :class:`~htnetlib.evaluation.selection.FoldRule` is evaluated for the tested subject
    alone (the same answer, faster)."""
    pred, y, subjects = np.asarray(pred), np.asarray(y, dtype=np.int64), np.asarray(subjects)

    def answer(p, labels, subj, s):
        if isinstance(rule, FoldRule):
            return rule.for_subject(p, labels, subj, s)[:int((subjects == s).sum())]
        return np.asarray(rule(p, labels, subj))[subj == s][:int((subjects == s).sum())]

    moved = []
    for s in dict.fromkeys(subjects):
        idx = subjects == s
        base = answer(pred, y, subjects, s)
        if any(not np.array_equal(answer(pred, np.where(idx, (y + shift) % CLASSES, y),
                                         subjects, s), base) for shift in (1, 2)):
            moved.append(s)
            continue
        if amplify and _amplified_moves(answer, pred, y, subjects, s):
            moved.append(s)
    return moved


def _amplified_moves(answer, pred, y, subjects, s) -> bool:
    """Whether s's answer moves when s, repeated to the weight of all other samples, is given
    labels that make one of its epochs perfect."""
    idx = np.flatnonzero(subjects == s)
    copies = max(1, int(np.ceil((len(y) - len(idx)) / len(idx))))
    cols = np.concatenate([np.arange(len(y)), np.tile(idx, copies)])
    p2, y2, s2 = pred[:, cols], y[cols], subjects[cols]
    base = answer(p2, y2, s2, s)
    patterns = {}
    for e in range(len(pred) - 1, -1, -1):  # later epochs first
        key = pred[e, idx].tobytes()
        if key not in patterns and not np.array_equal(pred[e, idx], base):
            patterns[key] = pred[e, idx]
    ranked = sorted(patterns.values(), key=lambda q: -int((q != base).sum()))[:MAX_PATTERNS]
    for target in ranked:
        y_new = y2.copy()
        y_new[s2 == s] = np.tile(target, copies + 1)  # s's columns: the originals, then copies
        if not np.array_equal(answer(p2, y_new, s2, s), base):
            return True
    return False


# --------------------------------------------------------------------------- negative controls


def global_oracle(pred, y, subjects, epochs=None) -> np.ndarray:
    """Leaky reference: one epoch for every subject, the one whose pooled test UF1 is best
    (among ``epochs``, 0-based indices, if given; ties to the later epoch)."""
    pred = np.asarray(pred)
    pick = np.arange(len(pred)) if epochs is None else np.asarray(epochs)
    return pred[pick[pooled_best_epoch(pred[pick], y)]].copy()


def dataset_oracle(dataset_of: dict):
    """Leaky reference: per dataset, one epoch chosen by that dataset's pooled test UF1.
    ``dataset_of`` maps each subject to its dataset (so the rule works on any columns)."""
    def rule(pred, y, subjects):
        pred, y, subjects = np.asarray(pred), np.asarray(y), np.asarray(subjects)
        datasets = np.array([dataset_of[s] for s in subjects])
        ids, cm = confusion_by_epoch(pred, y, datasets)
        out = np.empty(pred.shape[1], dtype=pred.dtype)
        for i, d in enumerate(ids):
            out[datasets == d] = pred[best_epoch(scores_from_confusion(cm[:, i])), datasets == d]
        return out
    return rule


def every_tenth_from_half(n_epochs: int) -> np.ndarray:
    """Epoch indices of epochs n/2, n/2 + n/10, ..., n (50, 60, ..., 100 of 100)."""
    step = max(1, n_epochs // 10)
    return np.arange(n_epochs - 1, n_epochs // 2 - 2, -step)[::-1]


def leaky_rules(dataset_of: dict | None = None) -> dict:
    """The negative controls by name; the per-dataset oracle needs ``dataset_of``. "Best of N
    variants" is the global oracle over a stack of N runs' final epochs (notebook 12)."""
    out = {
        "oracle (per subject, test labels)": oracle_rule,
        "global oracle (one epoch, pooled test UF1)": global_oracle,
        "global oracle among epochs 50, 60, ..., 100":
            lambda p, y, s: global_oracle(p, y, s, every_tenth_from_half(len(p))),
    }
    if dataset_of is not None:
        out["per-dataset oracle"] = dataset_oracle(dataset_of)
    return out

