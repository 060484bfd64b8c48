"""Honest model selection (beyond the paper's section 4.2): rules that choose an epoch, or vote,
without the held-out subject's labels.

The official code reports, per held-out subject, the epoch that scores best on that subject's
test labels (the ``oracle`` of :mod:`htnetlib.evaluation.metrics`). A rule is a function
``rule(pred, y, subjects) -> (N,)`` of a run's per-epoch predictions ``pred`` (epochs, N), the
labels and the subjects, returning one prediction per sample, scored like ``honest`` and
``oracle`` (UF1 of eq. 8, UAR of eq. 9).

**Honest by construction.** Every honest rule here is a :class:`FoldRule`: for held-out subject
s it is handed the labels with s's own replaced by -1 (:data:`MASKED`), so it cannot read them,
whatever its code does. The leak test (:func:`htnetlib.evaluation.leak.leak_test`) checks rules
that are not built this way. The oracles that read the held-out labels exist only as labelled
leaky references (:func:`htnetlib.evaluation.leak.leaky_rules`).

* :func:`nested_rule`: **the reference honest rule**. Inside each outer fold the number of
  epochs is chosen by an inner leave-subjects-out split of the fold's own training subjects
  (the inner fits of :mod:`htnetlib.training.nested`): only what fold s may see.
* :func:`cross_subject_predictions`: for subject s, the epoch that scores best on the *other*
  subjects' held-out predictions of the same run. It never reads s's labels, but it is not
  confined to fold s's training data: the other folds' models were trained on s (labels
  included), so their held-out scores carry s's labels indirectly. Where it picks the same epoch
  for nearly everyone it lands close to the *global oracle* (one epoch for all, chosen by the
  pooled test score), a leaky reference. It is a cheap approximation, not the reference.
* :func:`last_epochs_vote`, :func:`seed_epochs_vote`, :func:`vote`: majority votes over the
  last epochs, over seeds, or both; they read no label at all. Ties are broken without regard
  to the order in which seeds are listed (:func:`vote`).
* :data:`SOFT_SEED_RULES`: soft votes, the mean class probability over seeds and epochs, for
  runs that store probabilities.
"""

from __future__ import annotations

import numpy as np

from . import metrics


CLASSES = 3  # negative, positive, surprise

MASKED = -1  # the label a FoldRule sees for every sample of the held-out subject


class FoldRule:
    """A selection rule that is honest by construction: for each held-out subject s it calls
    ``choose(pred, y_masked, subjects, s)`` with s's labels replaced by :data:`MASKED`, and keeps
    the returned predictions for s's samples (n_s,). Called as ``rule(pred, y, subjects)`` it
    does this for every subject; :meth:`for_subject` does it for one."""

    def __init__(self, choose, doc: str = ""):
        self.choose = choose
        self.__doc__ = doc or choose.__doc__

    def for_subject(self, pred, y, subjects, s) -> np.ndarray:
        """The rule's predictions for subject ``s``'s samples, chosen with s's labels masked."""
        pred, subjects = np.asarray(pred), np.asarray(subjects)
        idx = subjects == s
        masked = np.where(idx, MASKED, np.asarray(y, dtype=np.int64))
        out = np.asarray(self.choose(pred, masked, subjects, s))
        if out.shape != (int(idx.sum()),):
            raise ValueError(f"selection rule returned shape {out.shape} for subject {s}'s "
                             f"{int(idx.sum())} samples")
        return out

    def __call__(self, pred, y, subjects) -> np.ndarray:
        pred, subjects = np.asarray(pred), np.asarray(subjects)
        out = np.empty(pred.shape[1], dtype=pred.dtype)
        for s in dict.fromkeys(subjects):
            out[subjects == s] = self.for_subject(pred, y, subjects, s)
        return out


def confusion_by_epoch(pred: np.ndarray, y, groups) -> tuple[np.ndarray, np.ndarray]:
    """Group ids and confusion counts (epochs, groups, true, predicted) of ``pred`` (epochs, N).

    Entries of ``pred`` below 0 (no prediction) and samples whose label is below 0 (masked,
    :data:`MASKED`) are left out."""
    pred, y, groups = np.asarray(pred), np.asarray(y, dtype=np.int64), np.asarray(groups)
    ids, gi = np.unique(groups, return_inverse=True)
    epochs, g, k = pred.shape[0], len(ids), CLASSES * CLASSES
    e, n = np.nonzero((pred >= 0) & (y >= 0)[None, :])
    flat = (e * g + gi[n]) * k + y[n] * CLASSES + pred[e, n]
    cm = np.bincount(flat, minlength=epochs * g * k).astype(float)
    return ids, cm.reshape(epochs, g, CLASSES, CLASSES)


def scores_from_confusion(cm: np.ndarray, metric: str = "uf1") -> np.ndarray:
    """UF1 (eq. 8), UAR (eq. 9) or accuracy of confusion matrices (..., true, predicted), macro
    over the classes present in the true labels, as :func:`htnetlib.evaluation.metrics.uf1` computes."""
    tp = np.diagonal(cm, axis1=-2, axis2=-1)
    support, predicted = cm.sum(-1), cm.sum(-2)
    present = support > 0
    if metric == "accuracy":
        return tp.sum(-1) / np.maximum(support.sum(-1), 1)
    with np.errstate(invalid="ignore", divide="ignore"):
        per_class = (2 * tp / (support + predicted) if metric == "uf1"
                     else tp / np.where(present, support, 1))
    per_class = np.where(present, per_class, 0.0)
    return per_class.sum(-1) / np.maximum(present.sum(-1), 1)


def best_epoch(scores: np.ndarray) -> int:
    """Index of the best score; ties go to the later epoch (as the oracle breaks them)."""
    scores = np.asarray(scores)
    return int(len(scores) - 1 - np.argmax(scores[::-1]))


def at_epochs(pred: np.ndarray, subjects, chosen: dict) -> np.ndarray:
    """Each subject's predictions at its chosen epoch index ``chosen[subject]``."""
    pred, subjects = np.asarray(pred), np.asarray(subjects)
    out = np.empty(pred.shape[1], dtype=pred.dtype)
    for s, e in chosen.items():
        idx = subjects == s
        out[idx] = pred[e, idx]
    return out


def pooled_confusion(pred: np.ndarray, y) -> np.ndarray:
    """Confusion counts (epochs, true, predicted) of every epoch over all samples, leaving out
    masked labels and missing predictions (below 0): :func:`confusion_by_epoch` with one group,
    faster."""
    pred, y = np.asarray(pred), np.asarray(y, dtype=np.int64)
    keep = y >= 0
    p, epochs, k = pred[:, keep].astype(np.int64), len(pred), CLASSES * CLASSES
    flat = np.arange(epochs)[:, None] * k + y[keep][None, :] * CLASSES + p
    flat = np.where(p >= 0, flat, epochs * k)  # missing predictions land in a dropped bin
    counts = np.bincount(flat.ravel(), minlength=epochs * k + 1)[:-1]
    return counts.reshape(epochs, CLASSES, CLASSES).astype(float)


def pooled_best_epoch(pred: np.ndarray, y, metric: str = "uf1") -> int:
    """The epoch index whose predictions score best on every sample with a label (masked
    samples left out), ties to the later epoch."""
    return best_epoch(scores_from_confusion(pooled_confusion(pred, y), metric))


def cross_subject_epochs(pred: np.ndarray, y, subjects, metric: str = "uf1") -> dict:
    """Per subject s, the epoch index that scores best on every *other* subject's held-out
    predictions of the same run (``metric``: uf1 or accuracy); s's labels are masked."""
    subjects = np.asarray(subjects)
    y = np.asarray(y, dtype=np.int64)
    return {s: pooled_best_epoch(pred, np.where(subjects == s, MASKED, y), metric)
            for s in dict.fromkeys(subjects)}


def cross_subject_rule(metric: str = "uf1") -> FoldRule:
    """The cross-subject rule as a :class:`FoldRule` (see the module docstring for what it is
    and is not)."""
    def choose(pred, y_masked, subjects, s):
        return np.asarray(pred)[pooled_best_epoch(pred, y_masked, metric), subjects == s]
    return FoldRule(choose, f"cross-subject epoch by {metric}: the epoch best on the other "
                            "subjects' held-out predictions")


def cross_subject_predictions(pred: np.ndarray, y, subjects, metric: str = "uf1") -> np.ndarray:
    """Each subject's predictions at its :func:`cross_subject_epochs` epoch."""
    return cross_subject_rule(metric)(pred, y, subjects)


def vote(stack: np.ndarray, rank=None) -> np.ndarray:
    """Majority class per column of ``stack`` (members, N), ties broken without regard to the
    order in which members are listed.

    ``rank`` (members,) says how late each member is (default: its position, so the last
    member listed is the latest); members of equal rank are exchangeable, as the same epoch of
    different seeds is. A tie goes to the tied class with more votes among the latest rank,
    then the next latest, and so on; a tie left after every rank goes to the lowest class index
    (negative, the most frequent class of the release). Reordering members of equal rank never
    changes the result."""
    stack = np.asarray(stack)
    rank = np.arange(len(stack)) if rank is None else np.asarray(rank)
    if rank.shape != (len(stack),):
        raise ValueError(f"rank of shape {rank.shape} for {len(stack)} members")
    onehot = stack[..., None] == np.arange(CLASSES)  # (members, N, classes)
    counts = onehot.sum(0)
    alive = counts == counts.max(1, keepdims=True)
    for r in np.unique(rank)[::-1]:
        if (alive.sum(1) <= 1).all():
            break
        at_r = np.where(alive, onehot[rank == r].sum(0), -1)
        alive &= at_r == at_r.max(1, keepdims=True)
    return np.argmax(alive, axis=1).astype(stack.dtype)


def seed_epochs_vote(preds: list, fraction: float | None = None) -> np.ndarray:
    """Majority vote over seeds (list of (epochs, N) runs) of their final epoch
    (``fraction`` None) or of their last ``fraction`` of epochs; members of the same epoch are
    exchangeable, so the order of the seeds never matters (:func:`vote`)."""
    members, rank = [], []
    for p in preds:
        k = 1 if fraction is None else fraction_of_epochs(len(p), fraction)
        members.append(np.asarray(p)[-k:])
        rank.append(np.arange(len(p) - k, len(p)))
    return vote(np.concatenate(members), np.concatenate(rank))


def last_epochs_vote(pred: np.ndarray, k: int) -> np.ndarray:
    """Majority vote of the predictions after the last ``k`` epochs (ties: the later epoch)."""
    pred = np.asarray(pred)
    if not 1 <= k <= len(pred):
        raise ValueError(f"k={k} must lie between 1 and the {len(pred)} epochs")
    return vote(pred[-k:])


def fraction_of_epochs(epochs: int, fraction: float) -> int:
    """How many final epochs a vote over ``fraction`` of them takes (at least 1)."""
    return max(1, int(round(epochs * fraction)))


def honest_rule(pred, y, subjects) -> np.ndarray:
    """The plain honest protocol: the final epoch."""
    return metrics.honest_predictions(pred)


def oracle_rule(pred, y, subjects) -> np.ndarray:
    """The official (oracle) protocol, a leaky reference: each subject's best epoch by its own
    test labels."""
    return metrics.oracle_predictions(pred, y, subjects)


def _label_free(fn, doc: str) -> FoldRule:
    """A rule computed column by column from the predictions alone (``fn``: (epochs, n) ->
    (n,)), applied to the held-out subject's columns."""
    return FoldRule(lambda p, y, subj, s: np.asarray(fn(np.asarray(p)[:, np.asarray(subj) == s])),
                    doc)


# The rules on one run's epochs, fixed before any variant was trained (notebook 12): name ->
# rule(pred, y, subjects), every one a FoldRule. The nested rules need the inner store
# (:func:`nested_rule`).
RULES = {
    "final epoch": _label_free(lambda p: p[-1], "the final epoch"),
    "cross-subject epoch (UF1)": cross_subject_rule("uf1"),
    "cross-subject epoch (accuracy)": cross_subject_rule("accuracy"),
    "vote of the last 10% of epochs": _label_free(
        lambda p: last_epochs_vote(p, fraction_of_epochs(len(p), 0.10)),
        "majority vote of the last 10% of epochs"),
    "vote of the last 25% of epochs": _label_free(
        lambda p: last_epochs_vote(p, fraction_of_epochs(len(p), 0.25)),
        "majority vote of the last 25% of epochs"),
}


# Rules over several seeds of one configuration: list of (epochs, N) arrays -> (N,). They read
# no label.
SEED_RULES = {
    "vote of seeds, final epoch": lambda preds: seed_epochs_vote(preds),
    "vote of seeds x last 25% of epochs": lambda preds: seed_epochs_vote(preds, 0.25),
}


def soft_vote(probs: list, fraction: float | None = None) -> np.ndarray:
    """The class of the mean probability over runs (list of (epochs, N, classes)) and their
    final epoch (``fraction`` None) or last ``fraction`` of epochs; ties (equal means) go to the
    lowest class index. The mean does not depend on the order of the runs."""
    members = [np.asarray(p, dtype=np.float64)[-(1 if fraction is None else
                                                  fraction_of_epochs(len(p), fraction)):]
               for p in probs]
    return np.argmax(np.concatenate(members).mean(0), axis=1).astype(np.int8)


# Soft votes over runs that store probabilities: list of (epochs, N, classes) -> (N,).
SOFT_SEED_RULES = {
    "soft vote of seeds, final epoch": lambda probs: soft_vote(probs),
    "soft vote of seeds x last 25% of epochs": lambda probs: soft_vote(probs, 0.25),
}


def nested_epochs(inner_pred: np.ndarray, y, fold_subjects, metric: str = "uf1") -> dict:
    """Per outer fold's subject, the epoch index whose pooled inner held-out predictions score
    best (``inner_pred`` (folds, epochs, N), -1 where a sample is not an inner test sample);
    only the training subjects' labels are read."""
    return {s: pooled_best_epoch(inner_pred[k], y, metric) for k, s in enumerate(fold_subjects)}


def nested_rule(inner: dict, row_order, labels, metric: str = "uf1") -> FoldRule:
    """The nested rule as a :class:`FoldRule` for a run whose predictions.csv rows are the
    release rows ``row_order`` (columns of ``inner["pred"]``).

    For held-out subject s only outer fold s's inner fits are read, scored with the labels the
    rule is handed for the run's own rows (s's masked; the inner fits of fold s never predict
    s anyway) and with ``labels`` (the release's, every row) for training-only subjects, which no
    fold of the run holds out (a run with ``max_folds``). Columns beyond the run's rows (copies
    the leak test appends) take their subject's epoch."""
    row_order = np.asarray(row_order)
    folds = {str(s): k for k, s in enumerate(inner["subjects"])}

    def choose(pred, y_masked, subjects, s):
        y_all = np.asarray(labels, dtype=np.int64).copy()
        y_all[row_order] = np.asarray(y_masked)[:len(row_order)]
        k = folds[str(s)]
        e = nested_epochs(inner["pred"][k:k + 1], y_all, [str(s)], metric)[str(s)]
        return np.asarray(pred)[e, np.asarray(subjects) == s]
    return FoldRule(choose, f"nested epoch by {metric}: chosen by the inner fits of the held-out "
                            "subject's own training subjects")
