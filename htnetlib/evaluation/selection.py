"""Honest model selection (beyond the paper's section 4.2): rules that choose an epoch, or vote,
without the held-out subject's labels.

The official code reports, per held-out subject, the epoch that scores best on that subject's
test labels (the ``oracle`` of :mod:`htnetlib.evaluation.metrics`). A rule is a function
``rule(pred, y, subjects) -> (N,)`` of a run's per-epoch predictions ``pred`` (epochs, N), the
labels and the subjects, returning one prediction per sample, scored like ``honest`` and
``oracle`` (UF1 of eq. 8, UAR of eq. 9). The leak test (:mod:`htnetlib.evaluation.leak`) checks
that a rule never reads the held-out subject's labels.

* :func:`cross_subject_predictions`: for subject s, the epoch that scores best on the *other*
  subjects' held-out predictions of the same run. Those folds' models trained on s, so this
  rule is honest about s's labels but not confined to fold s's training data.
* :func:`last_epochs_vote` and :func:`vote`: majority votes over the last k epochs, over seeds,
  or both.
* :func:`nested_rule`: the reference rule. Inside each outer fold the number of epochs is
  chosen by an inner leave-subjects-out split of the training subjects only (the inner fits of
  :mod:`htnetlib.training.nested`).
"""

from __future__ import annotations

import numpy as np

from . import metrics


CLASSES = 3  # negative, positive, surprise


def confusion_by_epoch(pred: np.ndarray, y, groups) -> tuple[np.ndarray, np.ndarray]:
    """Group ids and confusion counts (epochs, groups, true, predicted) of ``pred`` (epochs, N).

    Entries of ``pred`` below 0 (no prediction) are left out."""
    pred, y, groups = np.asarray(pred), np.asarray(y, dtype=np.int64), np.asarray(groups)
    ids, gi = np.unique(groups, return_inverse=True)
    cm = np.zeros((pred.shape[0], len(ids), CLASSES * CLASSES))
    e, n = np.nonzero(pred >= 0)
    np.add.at(cm, (e, gi[n], y[n] * CLASSES + pred[e, n]), 1)
    return ids, cm.reshape(pred.shape[0], len(ids), CLASSES, CLASSES)


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


def cross_subject_epochs(pred: np.ndarray, y, subjects, metric: str = "uf1") -> dict:
    """Per subject s, the epoch index that scores best on every *other* subject's held-out
    predictions of the same run (``metric``: uf1 or accuracy); s's labels are never read."""
    ids, cm = confusion_by_epoch(pred, y, subjects)
    total = cm.sum(1)  # (epochs, true, predicted)
    return {s: best_epoch(scores_from_confusion(total - cm[:, i], metric))
            for i, s in enumerate(ids)}


def cross_subject_predictions(pred: np.ndarray, y, subjects, metric: str = "uf1") -> np.ndarray:
    """Each subject's predictions at its :func:`cross_subject_epochs` epoch."""
    return at_epochs(pred, subjects, cross_subject_epochs(pred, y, subjects, metric))


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
    """The official (oracle) protocol: each subject's best epoch by its own test labels."""
    return metrics.oracle_predictions(pred, y, subjects)


# The rules on one run's epochs, fixed before any variant was trained (notebook 12): name ->
# rule(pred, y, subjects). The nested rules need the inner store (:func:`nested_rule`).
RULES = {
    "final epoch": honest_rule,
    "cross-subject epoch (UF1)": lambda p, y, s: cross_subject_predictions(p, y, s, "uf1"),
    "cross-subject epoch (accuracy)":
        lambda p, y, s: cross_subject_predictions(p, y, s, "accuracy"),
    "vote of the last 10% of epochs":
        lambda p, y, s: last_epochs_vote(p, fraction_of_epochs(len(p), 0.10)),
    "vote of the last 25% of epochs":
        lambda p, y, s: last_epochs_vote(p, fraction_of_epochs(len(p), 0.25)),
}


# Rules over several seeds of one configuration: list of (epochs, N) arrays -> (N,).
SEED_RULES = {
    "vote of seeds, final epoch": lambda preds: seed_epochs_vote(preds),
    "vote of seeds x last 25% of epochs": lambda preds: seed_epochs_vote(preds, 0.25),
}


def nested_epochs(inner_pred: np.ndarray, y, fold_subjects, metric: str = "uf1") -> dict:
    """Per outer fold's subject, the epoch index whose pooled inner held-out predictions score
    best (``inner_pred`` (folds, epochs, N), -1 where a sample is not an inner test sample);
    only the training subjects' labels are read."""
    chosen = {}
    for k, s in enumerate(fold_subjects):
        _, cm = confusion_by_epoch(inner_pred[k], y, np.zeros(len(y), dtype=int))
        chosen[s] = best_epoch(scores_from_confusion(cm[:, 0], metric))
    return chosen


def nested_rule(inner: dict, row_order, labels, metric: str = "uf1"):
    """The nested rule as ``rule(pred, y, subjects)`` for a run whose predictions.csv rows are
    the release rows ``row_order`` (columns of ``inner["pred"]``).

    The inner fits are scored with the labels ``y`` handed to the rule for the run's own rows,
    and with ``labels`` (the release's, every row) for training-only subjects, which no fold of
    the run holds out (a run with ``max_folds``)."""
    row_order = np.asarray(row_order)
    folds = [str(s) for s in inner["subjects"]]

    def rule(pred, y, subjects):
        y_all = np.asarray(labels, dtype=np.int64).copy()
        y_all[row_order] = np.asarray(y)
        return at_epochs(pred, subjects, nested_epochs(inner["pred"], y_all, folds, metric))
    return rule

