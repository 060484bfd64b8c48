"""Config.readouts: test-time mirror and weight-average readouts of one training
(:func:`htnetlib.training.fold.train_fold`), stored beside the run's own predictions."""

import dataclasses
import subprocess
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from htnetlib.config import SWA_FRACTION, Config, ConfigError
from htnetlib.data.regions import network_inputs
from htnetlib.evaluation import selection
from htnetlib.evaluation.selection import fraction_of_epochs
from htnetlib.study import readme, readouts
from htnetlib.training import fold, loso
from htnetlib.training.store import Run, data_fingerprint, load_run, run_id

TINY = Config(dim=8, heads=1, block_repeats=(1, 1, 1), epochs=8, lr=1e-3, max_folds=2,
              regions="whole")


def test_readouts_keep_old_run_ids_and_are_for_built_in_models_only():
    assert "readouts" not in TINY.to_dict()  # the default leaves every stored id unchanged
    assert dataclasses.replace(TINY, readouts=True).to_dict()["readouts"] is True
    Config(model="ststnet", regions="whole", readouts=True).check()
    with pytest.raises(ConfigError, match="readouts=true is for the built-in models only"):
        Config(model="mypkg.nets:build", regions="whole", readouts=True).check()


def test_the_readouts_are_the_mirror_and_the_weight_average_of_the_same_training(synthetic):
    config = dataclasses.replace(TINY, readouts=True)
    x = network_inputs(synthetic, config)
    xm = network_inputs(synthetic, config, mirror=True)
    y = synthetic.table["label"].to_numpy()
    test = (synthetic.table["subject"] == synthetic.table["subject"].iloc[0]).to_numpy()
    kw = dict(seed=7, device=torch.device("cpu"))
    res = fold.train_fold(config, x[~test], y[~test], x[test], y[test], x_test_mirror=xm[test],
                          **kw)
    plain = fold.train_fold(TINY, x[~test], y[~test], x[test], y[test], **kw)
    # training is untouched: the run's own readout is that of the run without readouts
    np.testing.assert_array_equal(res.pred, plain.pred)
    np.testing.assert_array_equal(res.prob, plain.prob)

    # the weight average by hand: the mean of the weights after each of the last quarter's epochs
    start = config.epochs - fraction_of_epochs(config.epochs, SWA_FRACTION)
    kept = []
    model, _ = fold.train_network(TINY, x[~test], y[~test], after_epoch=lambda e, m: kept.append(
        {k: v.detach().clone() for k, v in m.state_dict().items()}) if e >= start else None, **kw)
    model.load_state_dict({k: torch.stack([w[k] for w in kept]).mean(0) for k in kept[0]})
    with torch.no_grad():
        for xs, key in ((x[test], "prob_swa"), (xm[test], "prob_swa_mirror")):
            want = torch.softmax(model.eval()(torch.from_numpy(xs)), 1).numpy()
            np.testing.assert_allclose(getattr(res, key)[-1].astype(np.float32), want, atol=2e-3)
    model, _ = fold.train_network(TINY, x[~test], y[~test], **kw)
    with torch.no_grad():
        want = torch.softmax(model(torch.from_numpy(xm[test])), 1).numpy()
    np.testing.assert_allclose(res.prob_mirror[-1].astype(np.float32), want, atol=2e-3)
    assert not np.allclose(res.prob_mirror[-1], res.prob[-1])  # the mirror is another input
    # before the last quarter the average is the model itself
    np.testing.assert_array_equal(res.prob_swa[:start], res.prob[:start])
    np.testing.assert_array_equal(res.prob_swa_mirror[:start], res.prob_mirror[:start])
    assert len(kept) == 2 and not np.array_equal(res.prob_swa[-1], res.prob[-1])


def test_a_run_with_readouts_stores_them_in_prediction_order(synthetic, tmp_path):
    config = dataclasses.replace(TINY, readouts=True)
    run = load_run(loso.run_loso(synthetic, config, seed=1, runs_dir=tmp_path, progress=False,
                                 trainer="loop"))
    base = load_run(loso.run_loso(synthetic, TINY, seed=1, runs_dir=tmp_path, progress=False,
                                  trainer="loop"))
    assert run.path.name == run_id(config, 1, data_fingerprint(synthetic), None)
    np.testing.assert_array_equal(run.epochs["pred"], base.epochs["pred"])
    for key in ("prob_mirror", "prob_swa", "prob_swa_mirror"):
        assert run.epochs[key].shape == run.epochs["prob"].shape
        assert not np.isnan(run.epochs[key].astype(np.float32)).any()
        assert key not in base.epochs


# --------------------------------------------------------------------------- notebook 15's study


def fake_runs(seeds=(0, 1, 2), n_subjects=12, per=4, epochs=8) -> dict:
    rng = np.random.default_rng(0)
    subjects = np.repeat([f"s{i:02d}" for i in range(n_subjects)], per)
    table = pd.DataFrame({"dataset": "casme2", "subject": subjects,
                          "sample": [f"x{i}" for i in range(len(subjects))],
                          "label": rng.integers(0, 3, len(subjects))})
    out = {}
    for k, variant in enumerate(readouts.READOUT_VARIANTS):
        out[variant] = []
        for s in seeds:
            ep = {key: rng.dirichlet(np.ones(3), (epochs, len(table))).astype(np.float16)
                  for key in ("prob", "prob_mirror", "prob_swa", "prob_swa_mirror")}
            ep["pred"] = ep["prob"].argmax(-1).astype(np.int8)
            out[variant].append(Run(Path(f"/nonexistent/{k}-{s}"),
                                    {"seed": s, "train_seconds": 60.0}, table, ep))
    return out


def test_the_candidates_are_every_model_readout_and_rule_and_read_no_label():
    runs = fake_runs()
    rows = readouts.candidate_rows(runs)
    assert len(rows) == len(readouts.MODELS) * len(readouts.READOUTS) * len(readouts.RULES)
    whole = runs["all three, whole map"]
    head = next(r for r in rows if readouts.is_row(r, readouts.BASELINE))
    np.testing.assert_array_equal(head["tables"][0]["pred"], selection.SEED_RULES[
        "vote of seeds x last 25% of epochs"]([r.epochs["pred"] for r in whole]))
    tta = next(r for r in rows if r["model"] == "whole map" and r["readout"] == "mirror (TTA)"
               and r["rule"] == "soft vote of seeds, final epoch")
    mean = [(r.epochs["prob"].astype(np.float32) + r.epochs["prob_mirror"]) / 2 for r in whole]
    np.testing.assert_array_equal(tta["tables"][0]["pred"], selection.soft_vote(mean))
    both = next(r for r in rows if r["model"] == "whole map + regions")
    assert len(both["runs"]) == 6
    # change every label: no candidate's predictions move (the rules are given none)
    flipped = {v: [dataclasses.replace(r, predictions=r.predictions.assign(
        label=(r.predictions["label"] + 1) % 3)) for r in rs] for v, rs in runs.items()}
    for a, b in zip(rows, readouts.candidate_rows(flipped)):
        np.testing.assert_array_equal(a["tables"][0]["pred"], b["tables"][0]["pred"])


def test_the_candidate_table_is_against_the_headline_and_the_confirmation_in_preregistered_order(
        monkeypatch):
    runs = fake_runs()
    table = readouts.candidate_table(readouts.candidate_rows(runs), n_boot=50)
    assert table["Full UF1"].is_monotonic_decreasing
    base = table[table["role"] == "current headline"].iloc[0]
    assert base["UF1 - headline"] == 0 and "UF1 - plain honest" not in table
    spec = {"model": "regions", "readout": "SWA + mirror",
            "rule": "soft vote of seeds, final epoch"}
    monkeypatch.setattr(readouts, "PRIMARY", spec)
    conf = readouts.confirmation_table(runs, n_boot=50)
    assert {k: conf.iloc[0][k] for k in spec} == spec
    assert {k: conf.iloc[1][k] for k in spec} == readouts.BASELINE
    assert list(conf["role"][:2]) == ["primary (pre-registered)",
                                      "current headline (pre-registered baseline)"]
    assert readouts.beats_headline(conf) == (float(conf.iloc[0]["difference 95% CI"]
                                                   .split(" to ")[0]) > 0)


@pytest.mark.skipif(not (readouts.ROOT / ".git").exists(), reason="needs the git checkout")
def test_the_preregistration_check_reads_the_order_from_git(monkeypatch):
    first = readouts.ROOT / "results" / "preregistration" / \
        "confirmation_seeds_3-5_cpu_preregistration.md"
    added = subprocess.run(["git", "log", "--diff-filter=A", "--format=%H", "--", str(first)],
                           cwd=readouts.ROOT, capture_output=True, text=True).stdout.split()
    if not added:
        pytest.skip("a shallow clone without the pre-registration's commit")
    before = subprocess.run(["git", "rev-parse", f"{added[-1]}~1"], cwd=readouts.ROOT,
                            capture_output=True, text=True).stdout.strip()
    head = subprocess.run(["git", "rev-parse", "HEAD"], cwd=readouts.ROOT, capture_output=True,
                          text=True).stdout.strip()
    monkeypatch.setattr(readouts, "PREREGISTRATION", first)
    runs = [Run(Path(f"/nonexistent/{c}"), {"seed": 6, "git_commit": c}, None, {})
            for c in (head + "+dirty", before, "unknown")]
    verdicts = list(readouts.preregistration_check(runs)["pre-registration committed before"])
    assert verdicts == ["yes", "no", "the run records no commit"]
    monkeypatch.setattr(readouts, "PREREGISTRATION", readouts.ROOT / "no-such-file.md")
    assert set(readouts.preregistration_check(runs)["pre-registration committed before"]) == \
        {"no committed pre-registration"}


@pytest.mark.parametrize("low", ["+0.010", "-0.020"])
def test_the_readme_headline_is_the_better_confirmed_row(tmp_path, low, first_confirmation):
    tables = first_confirmation(tmp_path)
    assert "15_toward_076" not in readme.headline_block(tmp_path, "cpu")  # not made yet
    second = {"model": "whole map", "readout": "mirror (TTA)", "rule": "soft vote",
              "seeds": "6,7,8", "Full UF1": 0.741, "Full UF1 95% CI": "0.690-0.790",
              "UF1 - headline": 0.03, "difference 95% CI": f"{low} to +0.060"}
    pd.DataFrame([second, dict(second, readout="model", **{"Full UF1": 0.711})]).to_csv(
        tables / "confirmation2_cpu.csv", index=False)
    block = readme.headline_block(tmp_path, "cpu")
    if low.startswith("+"):  # the new row is better by the criterion: it leads
        assert block.index("15_toward_076") < block.index("12_honest_selection")
        assert "**Headline honest result" in block and "**0.741** (95 % CI 0.690-0.790)" in block
        assert "stays 0.019 below the goal" in block and "**0.716**" not in block
    else:
        assert block.index("12_honest_selection") < block.index("15_toward_076")
        assert "**0.716**" in block and "so this headline stays" in block
        assert "stays 0.044 below the goal" in block


def test_the_vote_is_counted_and_defined_in_numbers_of_the_runs():
    runs = fake_runs(epochs=100)
    one = readouts.vote_count(runs, "whole map", "vote of seeds x last 25% of epochs")
    both = readouts.vote_count(runs, "whole map + regions", "vote of seeds x last 25% of epochs")
    assert (one["runs"], one["epochs"], one["votes"]) == (3, 25, 75)
    assert (both["runs"], both["models"], both["votes"]) == (6, 2, 150)
    assert readouts.vote_count(runs, "regions", "vote of seeds, final epoch")["votes"] == 3
    note = readouts.definitions_note(runs)
    assert "**75 votes**" in note and "**150 votes**" in note and "from epoch 76 of 100" in note


def test_the_forest_rows_are_every_candidate_sorted_with_the_chosen_one_marked():
    table = readouts.candidate_table(readouts.candidate_rows(fake_runs()), n_boot=50)
    rows = readouts.forest_rows(table.sample(frac=1, random_state=0))
    assert len(rows) == len(table) and rows["UF1"].is_monotonic_decreasing
    assert rows["chosen"].sum() == 1 and rows["headline"].sum() == 1
    chosen = rows[rows["chosen"]].iloc[0]
    assert chosen["candidate"] == " | ".join(readouts.PRIMARY[k] for k in ("model", "readout",
                                                                             "rule"))
    assert (rows["low"] <= rows["UF1"] + 5e-4).all() and (rows["UF1"] <= rows["high"] + 5e-4).all()
    assert readouts.ci_bounds("-0.001 to +0.045") == (-0.001, 0.045)
    assert readouts.ci_bounds("0.702-0.807") == (0.702, 0.807)
    assert table[table["role"] == readouts.CHOSEN_ROLE].shape[0] == 1
    assert "pre-registered primary" not in set(table["role"])  # the choosing seeds' own label


def test_the_cpu_mismatch_and_the_shortfall_are_read_from_the_tables():
    runs = fake_runs()
    pairing = pd.DataFrame({"final predictions that differ": [24, 12, 21]})
    m = readouts.mismatch(pairing, runs)
    assert (m["low"], m["high"], m["of"]) == (12, 24, 48)
    assert "**12 to 24 of its 48**" in readouts.mismatch_note(pairing, runs)
    spec = {k: readouts.PRIMARY[k] for k in ("model", "readout", "rule")}
    chosen_on = pd.DataFrame([dict(spec, **{"seeds": "0,1,2", "Full UF1": 0.757,
                                            "UF1 - headline": 0.023}),
                              dict(readouts.BASELINE, **{"seeds": "0,1,2", "Full UF1": 0.734,
                                                         "UF1 - headline": 0.0})])
    conf = pd.DataFrame([dict(spec, **{"seeds": "6,7,8", "Full UF1": 0.733,
                                       "UF1 - headline": 0.034}),
                         dict(readouts.BASELINE, **{"seeds": "6,7,8", "Full UF1": 0.698,
                                                    "UF1 - headline": 0.0})])
    curse = pd.DataFrame({"estimate": ["raw", "boot", "split", "split corrected"],
                          "composite UF1": [0.757, 0.753, 0.740, 0.737]})
    first = {"uf1": 0.716, "seeds": "3,4,5", "chosen": 0.735, "chosen seeds": "0,1,2"}
    text = readouts.shortfall_bullet(conf, chosen_on, curse, first)
    assert "predicted 0.004 of shrinkage (split halves 0.020)" in text
    assert "fell **0.024**" in text and "notebook 12's headline row: 0.019" in text
    assert "fell 0.036 on the same seeds" in text and "from +0.023 to +0.034" in text
    assert "more than to the choice" in text
