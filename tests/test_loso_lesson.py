"""Episode 04's helpers (htnetlib.study.walkthrough): the fold strip and what a fold's model
answered its held-out subject, the sentence that motivates UF1."""

import matplotlib
import numpy as np

from htnetlib.config import PROFILES
from htnetlib.data import load_composite
from htnetlib.evaluation import metrics
from htnetlib.study import lab, walkthrough
from htnetlib.training import loso

matplotlib.use("Agg")


def test_one_class_at_every_epoch_is_named_with_its_counts():
    truth = np.array([0] * 9 + [2] * 2)
    answers = walkthrough.fold_answers("006", truth, [np.zeros(11, dtype=int)] * 3)
    assert answers["one class"] == "negative" and answers["correct"] == [9, 9, 9]
    assert answers["clips"] == {"negative": 9, "surprise": 2}
    note = walkthrough.fold_answers_note(answers)
    assert "9 negative and 2 surprise" in note and "9 of 11 correct (82%)" in note
    assert "no surprise clip" in note
    # the scores the episode computes by hand for it: accuracy flatters, UF1 and UAR do not
    assert metrics.uf1(truth, np.zeros(11, dtype=int)) == 0.45
    assert metrics.uar(truth, np.zeros(11, dtype=int)) == 0.5


def test_varying_answers_are_listed_by_epoch():
    truth = np.array([0, 1, 2])
    answers = walkthrough.fold_answers("101", truth, [np.array([0, 0, 0]), np.array([0, 1, 0])])
    assert answers["one class"] is None
    assert "1, 2 of 3" in walkthrough.fold_answers_note(answers)


def test_the_fold_strip_has_a_row_and_a_column_per_fold(synthetic_root):
    data = load_composite(synthetic_root)
    subjects = loso.fold_subjects(data, PROFILES["cpu"])
    fig = walkthrough.loso_folds_figure(data, subjects)
    image = fig.axes[1].images[0].get_array()
    assert image.shape == (len(subjects), len(subjects))
    assert (np.asarray(image) == np.eye(len(subjects))).all()  # one held-out subject per fold


def test_the_random_guess_oracle_beats_the_honest_protocol():
    """Exercise 4.3's expected answer: choosing each subject's epoch by its labels lifts random
    guesses far above chance, the final epoch does not."""
    rng = np.random.default_rng(0)
    labels, subjects = rng.integers(0, 3, 400), np.repeat(np.arange(40), 10)
    got = lab.expected("4.3", labels=labels, subjects=subjects, epochs=50, seed=0)
    assert got["honest"] < 0.45 < 0.55 < got["oracle"]
