"""The cross-fitting split of notebook 16 (htnetlib.study.crossfit)."""

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from htnetlib.evaluation import metrics
from htnetlib.study import crossfit, readme, readouts
from htnetlib.training.store import Run


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


# --------------------------------------------------------------------------- the analysis


def fake_groups(seeds=(0, 1, 2), n_subjects=12, per=4, epochs=8, seed=0):
    """Runs of every group of :data:`crossfit.GROUPS` on made-up samples (logistic
    regression: one run of one epoch), and the split of their subjects."""
    rng = np.random.default_rng(seed)
    subjects = np.repeat([f"s{i:02d}" for i in range(n_subjects)], per)
    table = pd.DataFrame({"dataset": "casme2", "subject": subjects,
                          "sample": [f"x{i}" for i in range(len(subjects))],
                          "label": rng.integers(0, 3, len(subjects))})
    runs = {}
    for k, g in enumerate(crossfit.GROUPS):
        logreg = g == "logistic regression"
        runs[g] = []
        for s in (list(seeds)[:1] if logreg else seeds):
            n = 1 if logreg else epochs
            ep = {key: rng.dirichlet(np.ones(3), (n, len(table))).astype(np.float16)
                  for key in ("prob", "prob_mirror", "prob_swa", "prob_swa_mirror")}
            ep["pred"] = ep["prob"].argmax(-1).astype(np.int8)
            runs[g].append(Run(Path(f"/nonexistent/{k}-{s}"),
                               {"seed": s, "train_seconds": 60.0}, table, ep))
    return runs, crossfit.subject_halves(table)


def test_the_candidates_pool_groups_and_weigh_every_run_the_same():
    runs, _ = fake_groups()
    rows = crossfit.candidate_rows(runs)
    assert len(rows) == 192 == len(crossfit.MODELS) * 16
    # notebook 15's 48 rows are made as notebook 15 makes them
    old = readouts.candidate_rows({v: runs[g] for g, v in crossfit.HTNET_GROUPS.items()})
    for a, b in zip(rows[:48], old):
        assert crossfit.spec(a) == crossfit.spec(b)
        np.testing.assert_array_equal(a["tables"][0]["pred"], b["tables"][0]["pred"])
    # logistic regression's one fit counts at every epoch: a soft vote of the last quarter
    # over every model is the mean of the runs' own means
    row = next(r for r in rows if r["model"] == "every model" and r["readout"] == "model"
               and r["rule"] == "soft vote of seeds x last 25% of epochs")
    members = crossfit.members_of(runs, "every model")
    assert len(members) == 3 * 5 + 1
    means = [np.asarray(r.epochs["prob"], np.float64)[-2:].mean(0) for r in members]
    np.testing.assert_array_equal(row["tables"][0]["pred"],
                                  np.argmax(np.mean(means, 0), 1).astype(np.int8))


def test_each_half_is_chosen_on_its_own_samples_and_predicts_the_other():
    runs, split = fake_groups()
    rows = crossfit.candidate_rows(runs)
    scores = crossfit.half_table(rows, split)
    chosen = crossfit.choose(scores)
    for h in crossfit.HALVES:
        assert scores[f"UF1 on {h}"].max() == scores[[crossfit.same(r, chosen[h]) for _, r in
                                                       scores.iterrows()]][f"UF1 on {h}"].iloc[0]
    fresh, _ = fake_groups(seeds=(9, 10, 11), seed=1)
    pooled = crossfit.crossfit_predictions(fresh, chosen, split)
    assert list(pooled.index) == list(fresh["whole map"][0].predictions.index)
    half = crossfit.half_of(split)
    for h, c in chosen.items():
        own = crossfit.predictions(crossfit.members_of(fresh, c["model"]), c["readout"],
                                   c["rule"])
        other = pooled["subject"].map(half) != h  # the samples c predicts
        np.testing.assert_array_equal(pooled["pred"][other], own["pred"][other])


def test_the_choice_never_reads_the_labels_of_the_half_it_predicts():
    runs, split = fake_groups()
    scores = crossfit.half_table(crossfit.candidate_rows(runs), split)
    chosen = crossfit.choose(scores)
    half = crossfit.half_of(split)
    flipped = {}
    for g, rs in runs.items():  # new labels for half B's samples only
        flipped[g] = []
        for r in rs:
            p = r.predictions.copy()
            in_b = p["subject"].map(half) == "B"
            p.loc[in_b, "label"] = (p.loc[in_b, "label"] + 1) % 3
            flipped[g].append(Run(r.path, r.meta, p, r.epochs))
    again = crossfit.choose(crossfit.half_table(crossfit.candidate_rows(flipped), split))
    assert again["A"] == chosen["A"]  # chosen on A: B's labels never read


def test_the_compute_matched_baseline_takes_htnet_runs_in_order():
    assert crossfit.matched_members(5, (9, 10, 11)) == [
        ("whole map", 9), ("regions", 9), ("whole map", 10), ("regions", 10), ("whole map", 11)]
    assert crossfit.runs_used("every model", (9, 10, 11)) == 16
    assert crossfit.runs_used("whole map + regions", (9, 10, 11)) == 6
    chosen = {"A": {"model": "RCN", "readout": "model", "rule": "x"},
              "B": {"model": "regions", "readout": "model", "rule": "x"}}
    assert crossfit.needed_groups(chosen, readouts.PRIMARY) == ("whole map", "regions", "RCN")


def test_the_confirmation_table_pairs_each_row_with_the_headline_on_the_same_samples():
    runs, split = fake_groups()
    chosen = crossfit.choose(crossfit.half_table(crossfit.candidate_rows(runs), split))
    fresh, _ = fake_groups(seeds=(9, 10, 11, 12, 13, 14, 15, 16), seed=2)
    confirm = {g: [r for r in rs if r.meta["seed"] in (9, 10, 11)] for g, rs in fresh.items()}
    by = {(g, r.meta["seed"]): r for g in crossfit.HTNET_GROUPS for r in fresh[g]}
    n = max(crossfit.runs_used(c["model"], (9, 10, 11)) for c in chosen.values())
    matched = {m: by[m] for m in crossfit.matched_members(n, (9, 10, 11))}
    rows = crossfit.confirmation_rows(confirm, matched, chosen, split, readouts.PRIMARY,
                                      (9, 10, 11))
    conf = crossfit.confirmation_table(rows, n_boot=50)
    assert list(conf["role"].str.split(":").str[0])[:3] == [
        "primary", "current headline (pre-registered baseline)", "compute-matched headline"]
    assert conf.loc[1, "UF1 - headline"] == 0 and list(conf["samples"][:3]) == [48] * 3
    primary = rows[0]["tables"][0]
    assert conf.loc[0, "Full UF1"] == metrics.uf1(primary["label"], primary["pred"])
    assert set(conf.loc[3:, "samples"]) <= {int((split["half"] == h).sum()) * 4
                                            for h in "AB"}
    bullets = " ".join(crossfit.confirmation_bullets(conf, (9, 10, 11)))
    assert "headline **stays**" in bullets or "replaces the headline" in bullets
    assert crossfit.beats_headline(conf) == (float(conf.loc[0, "difference 95% CI"]
                                                   .split(" to ")[0]) > 0)


@pytest.mark.parametrize("low", ["+0.010", "-0.020"])
def test_the_readme_headline_follows_the_third_confirmation(tmp_path, low,
                                                            first_confirmation):
    tables = first_confirmation(tmp_path)
    second = {"model": "whole map", "readout": "mirror (TTA)", "rule": "soft vote",
              "seeds": "6,7,8", "Full UF1": 0.733, "Full UF1 95% CI": "0.670-0.792",
              "UF1 - headline": 0.03, "difference 95% CI": "+0.008 to +0.060"}
    pd.DataFrame([second, dict(second, **{"Full UF1": 0.698})]).to_csv(
        tables / "confirmation2_cpu.csv", index=False)
    assert "16_crossfit" not in readme.headline_block(tmp_path, "cpu")  # not made yet
    third = {"role": "primary", "model": "a / b", "readout": "model", "rule": "vote",
             "Full UF1": 0.771, "Full UF1 95% CI": "0.720-0.815", "Full UAR": 0.76,
             "UF1 - headline": 0.03, "difference 95% CI": f"{low} to +0.060"}
    pd.DataFrame([third, dict(third, role="headline", **{"Full UF1": 0.741})]).to_csv(
        tables / "confirmation3_cpu.csv", index=False)
    block = readme.headline_block(tmp_path, "cpu")
    if low.startswith("+"):
        assert block.index("16_crossfit") < block.index("15_toward_076")
        assert "**0.771** (95 % CI 0.720-0.815" in block and "reaches 0.76" in block
    else:
        assert block.index("15_toward_076") < block.index("16_crossfit")
        assert "so the headline stays; the headline honest score, 0.733, stays 0.027" in block


def test_the_leak_test_passes_the_cross_fitted_choice_and_fails_a_leaky_one():
    runs, split = fake_groups()
    rows = crossfit.candidate_rows(runs)
    leaks = crossfit.leak_check(rows, split, perfect=3)
    assert len(leaks) == 2 * (2 + 3)
    assert not leaks["cross-fitted choice moved"].any()
    assert leaks["leaky reference moved"].any()
    assert "moved 0 times" in crossfit.leak_bullet(leaks)


def test_many_uf1_at_once_is_uf1_of_each():
    rng = np.random.default_rng(3)
    y = rng.integers(0, 3, 60)
    y[y == 2] = 1  # a class absent from the labels is left out, as in metrics.uf1
    preds = rng.integers(0, 3, (7, 60))
    preds[0] = 0  # a row that never predicts class 1
    np.testing.assert_allclose(metrics.uf1_rows(y, preds), [metrics.uf1(y, p) for p in preds])


def test_the_registry_names_the_same_groups_and_headline_as_notebook_15():
    from htnetlib.study import experiments

    assert tuple(experiments.CROSSFIT_HTNET.values()) == experiments.READOUT_VARIANTS
    assert experiments.CROSSFIT_HEADLINE == readouts.PRIMARY["model"]
    for model, groups in readouts.MODELS.items():  # notebook 15's models, by group
        assert tuple(experiments.CROSSFIT_HTNET[g] for g in crossfit.MODELS[model]) == groups


def test_the_registered_choice_is_named_and_a_different_one_is_flagged():
    from htnetlib.study import experiments

    registered = experiments.CROSSFIT_CHOSEN
    assert registered is not None and set(registered) == set(crossfit.HALVES)
    split = crossfit.read_split()
    assert "is the one registered" in crossfit.registered_note(registered, "cpu", split)
    other = {**registered, "A": {**registered["A"], "rule": "soft vote of seeds, final epoch"}}
    assert "differs from the registered one" in crossfit.registered_note(other, "cpu", split)
    swapped = split.assign(half=split["half"].map({"A": "B", "B": "A"}))
    for profile, halves in (("smoke", split), ("cpu", swapped)):
        assert "No choice is registered" in crossfit.registered_note(registered, profile,
                                                                       halves)
