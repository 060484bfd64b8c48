import numpy as np
import pandas as pd
import pytest

from htnetlib.evaluation import metrics


def test_uf1_uar_by_hand():
    y = np.array([0, 0, 0, 1, 1, 2])
    p = np.array([0, 0, 1, 1, 2, 2])
    # class 0: tp 2 fp 0 fn 1 -> f1 0.8, recall 2/3; class 1: tp1 fp1 fn1 -> 0.5, 0.5;
    # class 2: tp1 fp1 fn0 -> 2/3, 1
    assert metrics.uf1(y, p) == pytest.approx((0.8 + 0.5 + 2 / 3) / 3)
    assert metrics.uar(y, p) == pytest.approx((2 / 3 + 0.5 + 1) / 3)


def test_classes_absent_from_truth_are_not_averaged():
    y = np.array([0, 0, 1])
    p = np.array([0, 2, 1])
    assert metrics.uar(y, p) == pytest.approx((0.5 + 1) / 2)
    assert metrics.uf1(y, p) == pytest.approx((2 / 3 + 1) / 2)


def test_confusion_rows_are_truth():
    c = metrics.confusion([0, 0, 2], [0, 1, 2])
    assert c.tolist() == [[1, 1, 0], [0, 0, 0], [0, 0, 1]]
    assert metrics.confusion([0, 0, 2], [0, 1, 2], normalize="true")[0].tolist() == [0.5, 0.5, 0]


def test_protocols():
    pred = np.array([[0, 1, 1, 1],   # epoch 1: subject a 1/2, subject b 1/2
                     [1, 0, 1, 2],   # epoch 2: a 1/2 (ties with epoch 1 -> later), b 2/2
                     [1, 1, 0, 0]])  # epoch 3 (final): a 0/2, b 0/2
    y = np.array([0, 0, 1, 2])
    subjects = np.array(["a", "a", "b", "b"])
    assert metrics.honest_predictions(pred).tolist() == [1, 1, 0, 0]
    assert metrics.oracle_epochs(pred, y, subjects) == {"a": 1, "b": 1}
    assert metrics.oracle_predictions(pred, y, subjects).tolist() == [1, 0, 1, 2]


def test_oracle_is_never_below_honest_per_subject():
    rng = np.random.default_rng(0)
    pred = rng.integers(0, 3, (20, 40))
    y = rng.integers(0, 3, 40)
    subjects = np.repeat(np.arange(8), 5)
    o = metrics.oracle_predictions(pred, y, subjects)
    h = metrics.honest_predictions(pred)
    for s in range(8):
        idx = subjects == s
        assert (o[idx] == y[idx]).sum() >= (h[idx] == y[idx]).sum()


def table(n_sub=10, seed=0, acc=0.7):
    rng = np.random.default_rng(seed)
    rows = []
    for s in range(n_sub):
        for j in range(4):
            y = int(rng.integers(0, 3))
            rows.append({"dataset": ["smic", "casme2", "samm"][s % 3], "subject": f"s{s}",
                         "sample": f"x{j}", "label": y,
                         "pred": y if rng.random() < acc else int(rng.integers(0, 3))})
    return pd.DataFrame(rows)


def test_scores_per_group():
    t = table()
    s = metrics.scores(t, "pred")
    assert set(s) == {"full", "smic", "casme2", "samm"}
    assert s["full"]["n"] == 40
    assert s["smic"]["uf1"] == pytest.approx(metrics.uf1(t[t.dataset == "smic"].label,
                                                         t[t.dataset == "smic"].pred))


def test_bootstrap_interval_contains_estimate():
    t = table(30)
    ci = metrics.bootstrap_ci(t, "pred", n_boot=300)
    point = metrics.uf1(t.label, t.pred)
    assert ci["uf1"][0] < point < ci["uf1"][1]
    assert ci["uf1"][1] - ci["uf1"][0] < 0.5


def test_paired_bootstrap_sees_a_better_run():
    good, bad = table(30, acc=0.95), table(30, acc=0.95)
    bad["pred"] = (bad["label"] + 1) % 3
    res = metrics.paired_bootstrap(good, "pred", bad, "pred", n_boot=200)
    assert res["diff"] > 0.5 and res["ci"][0] > 0 and res["p_le_zero"] == 0


def test_bootstrap_over_seeds_and_paired_lists():
    a, b = table(20, seed=1), table(20, seed=1)
    b["pred"] = np.where(np.arange(len(b)) % 2 == 0, b["label"], (b["label"] + 1) % 3)
    ci1 = metrics.bootstrap_ci([a], "pred", n_boot=200)
    assert ci1 == metrics.bootstrap_ci(a, "pred", n_boot=200)
    ci2 = metrics.bootstrap_ci([a, b], "pred", n_boot=200)
    mean = (metrics.uf1(a.label, a.pred) + metrics.uf1(b.label, b.pred)) / 2
    assert ci2["uf1"][0] < mean < ci2["uf1"][1]
    res = metrics.paired_bootstrap([a, a], "pred", [b], "pred", n_boot=100)
    assert res["diff"] == pytest.approx(metrics.uf1(a.label, a.pred) - metrics.uf1(b.label, b.pred))
    with pytest.raises(ValueError, match="same samples"):
        metrics.paired_bootstrap(a, "pred", b.iloc[:-1], "pred", n_boot=10)


def test_vectorised_bootstrap_equals_resampling_with_sklearn():
    # few subjects and an unbalanced class, so some resamples lack a class entirely
    rng = np.random.default_rng(3)
    subjects = np.repeat([f"s{i}" for i in range(7)], [1, 2, 5, 1, 3, 2, 6])
    y = rng.choice(3, size=len(subjects), p=[0.6, 0.3, 0.1])
    pred = np.where(rng.random(len(y)) < 0.6, y, rng.choice(3, size=len(y)))
    ids, counts = metrics._resample_counts(subjects, 200, seed=5)
    fast = metrics._resampled_scores(y, pred, subjects, ids, counts)
    draws = np.random.default_rng(5)
    for b in range(200):
        picked = draws.choice(ids, size=len(ids), replace=True)
        idx = np.concatenate([np.flatnonzero(subjects == s) for s in picked])
        assert counts[b].sum() == len(ids)
        assert fast["uf1"][b] == pytest.approx(metrics.uf1(y[idx], pred[idx]), abs=1e-12)
        assert fast["uar"][b] == pytest.approx(metrics.uar(y[idx], pred[idx]), abs=1e-12)


def seeds_of_one_model():
    """Three predictions tables over the same samples and labels (seeds of one model)."""
    a = table(12, seed=4)
    rng = np.random.default_rng(9)
    b = a.assign(pred=np.where(rng.random(len(a)) < 0.5, a["label"], rng.integers(0, 3, len(a))))
    c = a.assign(pred=np.where(rng.random(len(a)) < 0.3, a["label"], rng.integers(0, 3, len(a))))
    return a, b, c


def test_bootstrap_numbers_of_aligned_tables_are_unchanged():
    # the values the functions returned before they aligned tables by sample
    a, b, c = seeds_of_one_model()
    assert metrics.bootstrap_ci([a, b], "pred", n_boot=200, seed=1) == {
        "uf1": (0.5556300407559039, 0.7408573393590996),
        "uar": (0.5868581697986732, 0.761030425328026)}
    assert metrics.bootstrap_ci(c, "pred", n_boot=200, seed=1) == {
        "uf1": (0.2054548755841859, 0.41845428088075154),
        "uar": (0.21189542483660131, 0.42599192109060535)}
    assert metrics.paired_bootstrap([a, b], "pred", c, "pred", n_boot=200, seed=2) == {
        "diff": 0.33858722976370037, "ci": (0.21973677208207804, 0.46335129613226217),
        "p_le_zero": 0.0}
    assert metrics.paired_bootstrap(a, "pred", c, "pred", metric="uar", n_boot=200, seed=2) == {
        "diff": 0.46388888888888885, "ci": (0.31422602262133154, 0.6453290343915343),
        "p_le_zero": 0.0}


def test_bootstrap_aligns_a_shuffled_seed_by_sample():
    a, b, c = seeds_of_one_model()
    shuffled = b.sample(frac=1, random_state=0)
    assert not (shuffled["pred"].to_numpy() == b["pred"].to_numpy()).all()  # rows did move
    assert (metrics.bootstrap_ci([a, shuffled, c], "pred", n_boot=200)
            == metrics.bootstrap_ci([a, b, c], "pred", n_boot=200))
    assert (metrics.paired_bootstrap([a, shuffled], "pred", c.iloc[::-1], "pred", n_boot=200)
            == metrics.paired_bootstrap([a, b], "pred", c, "pred", n_boot=200))
    # the first table fixes the order: any index it carries is irrelevant
    assert (metrics.bootstrap_ci([a.set_index(a.index + 100), b], "pred", n_boot=50)
            == metrics.bootstrap_ci([a, b], "pred", n_boot=50))


@pytest.mark.parametrize("change, message", [
    (lambda t: t.iloc[1:], r"table 1 lacks sample \('smic', 's0', 'x0'\)"),
    (lambda t: t.iloc[:-1].assign(sample=lambda d: d["sample"].replace({"x0": "y0"})),
     r"table 1 lacks sample \('smic', 's0', 'x0'\)"),
    (lambda t: pd.concat([t, t.iloc[:1].assign(sample="new")]),
     r"table 1 has sample \('smic', 's0', 'new'\), which table 0 lacks"),
    (lambda t: pd.concat([t.iloc[:-1], t.iloc[:1]]),
     r"table 1 holds sample \('smic', 's0', 'x0'\) twice"),
    (lambda t: t.assign(label=np.where(np.arange(len(t)) == 5, (t["label"] + 1) % 3, t["label"])),
     r"table 1 labels sample \('casme2', 's1', 'x1'\) differently"),
])
def test_tables_of_other_samples_are_an_error_naming_the_sample(change, message):
    a, b, _ = seeds_of_one_model()
    with pytest.raises(ValueError, match=message):
        metrics.bootstrap_ci([a, change(b)], "pred", n_boot=10)
    with pytest.raises(ValueError, match=message):
        metrics.paired_bootstrap(a, "pred", change(b), "pred", n_boot=10)
