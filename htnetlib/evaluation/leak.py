"""The leak test: does a selection rule read the held-out subject's labels?"""

from __future__ import annotations

import numpy as np

from .selection import CLASSES


def leaked_subjects(rule, pred, y, subjects) -> list:
    """The leak test: subjects whose *own* predictions under ``rule`` change when their labels
    are replaced (each subject in turn; labels shifted by one class, then by two), the
    predictions of every epoch staying as they are. An honest rule gives []; the oracle does not.

    Other subjects' predictions may move: for them this subject is training data, and a rule
    may read its labels when it chooses for them.
    """
    pred, y, subjects = np.asarray(pred), np.asarray(y), np.asarray(subjects)
    base = rule(pred, y, subjects)
    moved = []
    for s in dict.fromkeys(subjects):
        idx = subjects == s
        for shift in (1, 2):
            y2 = np.where(idx, (y + shift) % CLASSES, y)
            if not np.array_equal(rule(pred, y2, subjects)[idx], base[idx]):
                moved.append(s)
                break
    return moved

