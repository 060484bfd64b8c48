"""Notebook 12's winner's-curse correction, the pre-registered confirmation's rows, the leak
test over stored runs and the probabilities new runs store (:mod:`htnetlib.study.confirmation`,
:mod:`htnetlib.study.leak_report`)."""

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from htnetlib.config import Config
from htnetlib.evaluation import leak, selection
from htnetlib.study import confirmation, experiments, leak_report
from htnetlib.training import lodo, loso, nested
from htnetlib.training.store import Run, load_run

RUNS = Path(__file__).resolve().parents[1] / "results" / "runs"
TINY = Config(dim=8, heads=1, block_repeats=(1, 1, 1), epochs=3, lr=1e-3)


def sample_table(n_subjects=40, per=4, seed=0):
    rng = np.random.default_rng(seed)
    subjects = np.repeat([f"s{i:02d}" for i in range(n_subjects)], per)
    return pd.DataFrame({"dataset": "casme2", "subject": subjects,
                         "sample": [f"x{i}" for i in range(len(subjects))],
                         "label": rng.integers(0, 3, len(subjects))})


def noise_rows(base: pd.DataFrame, k: int, accuracy: float, seed: int) -> list[dict]:
    """``k`` honest rows of equal true accuracy: only luck tells them apart."""
    rng = np.random.default_rng(seed)
    rows = []
    for i in range(k):
        right = rng.random(len(base)) < accuracy
        pred = np.where(right, base["label"], rng.integers(0, 3, len(base)))
        rows.append({"variant": f"v{i}", "rule": "r", "honest": True,
                     "tables": [base.assign(pred=pred)]})
    return rows


def test_the_winners_curse_shrinks_a_maximum_of_equals_and_spares_a_single_row():
    base = sample_table()
    many = confirmation.winners_curse(noise_rows(base, 30, 0.6, 1), n_boot=300, n_splits=50)
    raw, boot, half, split = many["composite UF1"]
    assert boot < raw and split < raw and half < raw  # choosing among equals is optimistic
    one = confirmation.winners_curse(noise_rows(base, 1, 0.6, 2), n_boot=300, n_splits=50)
    assert one["composite UF1"].iloc[1] == pytest.approx(one["composite UF1"].iloc[0])
    assert one["composite UF1"].iloc[3] == pytest.approx(one["composite UF1"].iloc[0])


def fake_run(table: pd.DataFrame, seed: int, probs: bool = True, epochs: int = 8) -> Run:
    rng = np.random.default_rng(seed)
    prob = rng.dirichlet(np.ones(3), (epochs, len(table))).astype(np.float16)
    ep = {"pred": prob.argmax(-1).astype(np.int8), "epoch": np.arange(1, epochs + 1)}
    if probs:
        ep["prob"] = prob
    return Run(Path(f"/nonexistent/run-{seed}"), {"seed": seed}, table, ep)


def test_the_confirmation_rows_follow_the_preregistration():
    base = sample_table(12, 3)
    confirm = {"plain": [fake_run(base, s) for s in (3, 4, 5)],
               experiments.HEADLINE["variant"]: [fake_run(base, 10 + s) for s in (3, 4, 5)]}
    rows = confirmation.confirmation_rows(confirm)
    assert [r["role"] for r in rows[:2]] == ["primary (pre-registered)", "baseline (pre-registered)"]
    assert (rows[0]["variant"], rows[0]["rule"]) == (experiments.HEADLINE["variant"],
                                                     experiments.HEADLINE["rule"])
    head = confirm[experiments.HEADLINE["variant"]]
    np.testing.assert_array_equal(rows[0]["tables"][0]["pred"], selection.seed_epochs_vote(
        [r.epochs["pred"] for r in head], 0.25))
    assert sum("soft vote" in r["rule"] for r in rows) == 5  # 4 pre-registered, 1 exploratory
    assert rows[-1]["role"].startswith("exploratory") and len(rows[-1]["runs"]) == 6
    table = confirmation.confirmation_table(confirm, n_boot=50)
    assert table.loc[1, "UF1 - plain honest"] == 0  # the baseline against itself
    # runs without probabilities: no soft rows
    confirm["plain"] = [fake_run(base, s, probs=False) for s in (3, 4, 5)]
    assert sum("soft vote" in r["rule"] for r in confirmation.confirmation_rows(confirm)) == 2


def test_the_preregistration_is_committed_and_names_the_analysis():
    text = confirmation.PREREGISTRATION.read_text()
    for needed in (experiments.HEADLINE["variant"], experiments.HEADLINE["rule"],
                   "seeds", "3, 4, 5", "paired", "composite UF1", "Tie rule"):
        assert needed in text, needed


@pytest.mark.parametrize("name", ["htnet-cpu-s0-7c78b81d95", "htnet-cpu-s2-c6a1e2d7ba",
                                  "ststnet-cpu-s1-1e844d67b7"])
def test_stored_runs_honest_rules_pass_and_leaky_references_fail(name):
    run = load_run(RUNS / name)
    rows = leak_report.run_leaks([run])
    honest, leaky = rows[rows["kind"] == "honest"], rows[rows["kind"] != "honest"]
    assert (honest["moved"] == 0).all(), honest
    assert (leaky["moved"] > 0).all(), leaky
    assert len(leaky) == 4
    summary = leak_report.leak_summary(rows)
    assert (summary["as required"] == "yes").all()
    # the global oracle hides from the label shift alone on this run, not from the amplified test
    p = run.predictions
    args = (run.epochs["pred"], p["label"].to_numpy(), p["subject"].to_numpy())
    assert len(leak.leaked_subjects(leak.global_oracle, *args)) < len(leak.leak_test(
        leak.global_oracle, *args))


def test_new_runs_store_probabilities(synthetic, tmp_path):
    run = load_run(loso.run_loso(synthetic, TINY, runs_dir=tmp_path, profile="smoke",
                                 progress=False))
    prob, pred = run.epochs["prob"], run.epochs["pred"]
    assert prob.dtype == np.float16 and prob.shape == pred.shape + (3,)
    np.testing.assert_allclose(prob.astype(float).sum(-1), 1, atol=5e-3)
    clear = np.sort(prob.astype(float), -1)[..., -1] - np.sort(prob.astype(float), -1)[..., -2]
    assert (prob.argmax(-1) == pred)[clear > 1e-2].all()
    inner = nested.load_inner(nested.run_nested(synthetic, TINY, runs_dir=tmp_path,
                                                profile="smoke"))
    final = inner["prob_final"].astype(float)
    for k, s in enumerate(inner["subjects"]):
        held = inner["subject"] == s
        assert np.isnan(final[k][held]).all() and not np.isnan(final[k][~held]).any()
    res = lodo.load_lodo(lodo.run_lodo(synthetic, TINY, store_dir=tmp_path / "lodo",
                                       profile="smoke"))
    assert res["epochs"]["prob"].shape == res["epochs"]["pred"].shape + (3,)


def test_the_shortfall_of_the_winners_curse_is_discussed_with_the_plain_baseline():
    conf = pd.DataFrame([{"variant": "all three, whole map", "rule": "vote", "seeds": "3,4,5",
                          "Full UF1": 0.716},
                         {"variant": "plain", "rule": "final epoch", "seeds": "3,4,5",
                          "Full UF1": 0.663}])
    chosen_on = pd.DataFrame([{"variant": "all three, whole map", "rule": "vote",
                               "seeds": "0,1,2", "Full UF1": 0.735},
                              {"variant": "plain", "rule": "final epoch", "seeds": "0,1,2",
                               "Full UF1": 0.675}])
    curse = pd.DataFrame({"estimate": ["raw", "boot", "split", "split corrected"],
                          "composite UF1": [0.735, 0.731, 0.712, 0.712]})
    text = confirmation.shortfall_bullet(conf, chosen_on, curse)
    assert "the bootstrap predicted 0.004 of shrinkage, split halves 0.023" in text
    assert "the row fell **0.019** (0.735 to 0.716)" in text
    assert "The plain baseline, chosen by no one, fell 0.012" in text
    assert "choosing seeds have no row" in confirmation.shortfall_bullet(
        conf, chosen_on.iloc[1:], curse)


def test_the_seed_vote_is_counted():
    runs = [Run(Path(f"/x/{s}"), {"seed": s}, None, {"pred": np.zeros((100, 5), np.int8)})
            for s in range(3)]
    note = confirmation.seed_vote_note(runs)
    assert "3 seeds x 25 epochs (of 100) = **75 votes**" in note and "hard majority" in note
