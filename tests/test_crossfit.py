"""The cross-fitting split of notebook 16 (htnetlib.study.crossfit)."""

import pandas as pd

from htnetlib.study import crossfit


def table_of(split: pd.DataFrame) -> pd.DataFrame:
    """A sample table with the subjects and sample counts of ``split``."""
    return pd.DataFrame([{"dataset": r.dataset, "subject": r.subject}
                         for r in split.itertuples() for _ in range(r.samples)])


def test_the_committed_split_is_what_its_seed_gives():
    committed = crossfit.read_split()
    assert len(committed) == 68 and committed["subject"].is_unique
    again = crossfit.subject_halves(table_of(committed))
    pd.testing.assert_frame_equal(again, committed)
    assert crossfit.SPLIT_FILE.read_text() == crossfit.split_text(again)


def test_halves_are_balanced_by_dataset_and_samples():
    split = crossfit.read_split()
    per = split.groupby(["dataset", "half"])["subject"].size().unstack()
    assert (per["A"] == per["B"]).all()  # 8 + 12 + 14 subjects in each half
    samples = split.groupby("half")["samples"].sum()
    assert samples.sum() == 442 and abs(samples["A"] - samples["B"]) <= 20


def test_another_seed_gives_another_split_and_an_odd_subject_is_placed():
    split = crossfit.read_split()
    other = crossfit.subject_halves(table_of(split), seed=crossfit.SPLIT_SEED + 1)
    assert not other["half"].equals(split["half"])
    odd = pd.DataFrame({"dataset": ["x"] * 6, "subject": ["a", "b", "b", "c", "c", "c"]})
    halves = crossfit.subject_halves(odd)
    assert sorted(halves["subject"]) == ["a", "b", "c"]
    assert set(halves["half"]) == {"A", "B"}
