"""Calibration (htnetlib/evaluation/calibration.py) and calibrated answers (htnetlib/predict.py).

Synthetic probabilities only: ECE is near 0 for calibrated and large for overconfident ones,
temperature scaling recovers a known temperature and never moves the argmax, the per-fold
temperatures never read the held-out subject's labels; ``htnet calibrate`` on a smoke model
writes calibration.json, answers then carry calibrated probabilities, and every bad run or
damaged file is a one-line error naming it.
"""

import argparse
import dataclasses
import json
import math
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from htnetlib import predict
from htnetlib.cli import predict as cli_predict
from htnetlib.config import PROFILES
from htnetlib.data import LABELS, DataError
from htnetlib.data import regions as regions_mod
from htnetlib.errors import RunError
from htnetlib.evaluation import calibration as cal
from htnetlib.predict import CALIBRATION, CARD, Model
from htnetlib.training.store import Run


def synthetic_logits(n: int = 20000, seed: int = 0, scale: float = 1.5):
    """Logits z and labels drawn from softmax(z): softmax(z) is calibrated by construction."""
    rng = np.random.default_rng(seed)
    z = rng.normal(0.0, scale, (n, 3))
    p = cal.softmax(z)
    y = (rng.random(n)[:, None] > np.cumsum(p, axis=1)).sum(axis=1)  # one draw per row
    return z, np.minimum(y, 2)


def one_line(exc: BaseException) -> str:
    text = str(exc)
    assert "\n" not in text, text
    return text


# --------------------------------------------------------------------------- the measures


def test_ece_is_near_zero_when_calibrated_and_large_when_overconfident():
    z, y = synthetic_logits()
    assert cal.ece(cal.softmax(z), y) < 0.02
    assert cal.ece(cal.softmax(4 * z), y) > 0.1  # overconfident: 4x the logits
    # a hand-made case: every answer 0.9 sure, half of them right -> ECE 0.4
    prob = np.tile([0.9, 0.05, 0.05], (10, 1))
    assert cal.ece(prob, np.array([0] * 5 + [1] * 5)) == pytest.approx(0.4)


def test_reliability_keeps_empty_bins():
    prob = np.array([[0.95, 0.03, 0.02], [0.55, 0.4, 0.05], [0.5, 0.3, 0.2]])
    table = cal.reliability(prob, np.array([0, 1, 0]))
    assert list(table.columns) == ["low", "high", "confidence", "accuracy", "samples"]
    assert len(table) == 10 and table["samples"].sum() == 3
    np.testing.assert_allclose(table["low"], np.arange(10) / 10, atol=1e-12)
    assert table["confidence"].isna().sum() == 7  # empty bins kept, NaN
    row = table.iloc[4]  # (0.4, 0.5]: the 0.5 row, right
    assert (row["samples"], row["accuracy"], row["confidence"]) == (1, 1.0, 0.5)
    assert table.iloc[5]["accuracy"] == 0.0 and table.iloc[9]["accuracy"] == 1.0


def test_rows_with_nan_are_a_one_line_error():
    prob = np.array([[0.5, 0.3, 0.2], [np.nan, np.nan, np.nan]])
    for fn in (cal.ece, cal.reliability, cal.fit_temperature):
        with pytest.raises(ValueError, match="NaN") as info:
            fn(prob, np.array([0, 1]))
        one_line(info.value)


@pytest.mark.parametrize("true_t", [3.0, 0.5])
def test_fit_temperature_recovers_a_known_temperature(true_t):
    """Labels from softmax(z), probabilities given as float16 softmax(T z) (T = 3:
    overconfident, T = 0.5: underconfident): the fitted temperature is T."""
    z, y = synthetic_logits()
    prob = cal.softmax(true_t * z).astype(np.float16)
    assert cal.fit_temperature(prob, y) == pytest.approx(true_t, rel=0.05)
    calibrated = cal.apply_temperature(prob, cal.fit_temperature(prob, y))
    assert cal.ece(calibrated, y) < 0.02 < cal.ece(prob, y)


def test_apply_temperature_keeps_the_argmax_and_sums_to_one():
    z, _ = synthetic_logits(2000, seed=3)
    prob = cal.softmax(z).astype(np.float16)
    for t in (0.05, 0.3, 1.0, 2.5, 20.0):
        out = cal.apply_temperature(prob, t)
        assert out.dtype == np.float64
        np.testing.assert_allclose(out.sum(axis=1), 1.0, atol=1e-12)
        np.testing.assert_array_equal(out.argmax(axis=1), prob.astype(np.float64).argmax(axis=1))
    assert cal.apply_temperature(prob, 3.0).max(axis=1).mean() < prob.max(axis=1).mean()
    with pytest.raises(ValueError, match="temperature"):
        cal.apply_temperature(prob, 0.0)


def inner_store(n_subjects: int = 6, per_subject: int = 60, seed: int = 1):
    """A fake inner store: prob_final (folds, N, 3) with the outer held-out subject's rows
    NaN, each fold's probabilities overconfident by its own factor."""
    rng = np.random.default_rng(seed)
    subjects = np.repeat([f"s{k}" for k in range(n_subjects)], per_subject)
    z = rng.normal(0, 1.5, (len(subjects), 3))
    y = np.array([rng.choice(3, p=p) for p in cal.softmax(z)])
    folds = [f"s{k}" for k in range(n_subjects)]
    prob = np.stack([cal.softmax(z * (1.5 + 0.5 * k)) for k in range(n_subjects)])
    for k, s in enumerate(folds):
        prob[k, subjects == s] = np.nan
    return prob.astype(np.float16), y, folds, subjects, z


def test_fold_temperatures_never_read_the_held_out_labels():
    prob, y, folds, subjects, _ = inner_store()
    temps = cal.fold_temperatures(prob, y, folds)
    assert list(temps) == folds
    for k, s in enumerate(folds):  # each fold fitted on its own rows, without s's
        keep = subjects != s
        assert temps[s] == pytest.approx(cal.fit_temperature(prob[k][keep], y[keep]))
    assert temps["s5"] > temps["s0"] > 1  # more overconfident folds: higher temperatures
    for s in folds:  # change s's labels: s's temperature does not move
        changed = y.copy()
        changed[subjects == s] = (changed[subjects == s] + 1) % 3
        assert cal.fold_temperatures(prob, changed, folds)[s] == temps[s]
    changed = y.copy()  # while a training subject's labels do move it
    changed[subjects == "s1"] = (changed[subjects == "s1"] + 1) % 3
    assert cal.fold_temperatures(prob, changed, folds)["s0"] != temps["s0"]


def test_out_of_sample_calibration_never_reads_a_group_s_own_labels():
    rng = np.random.default_rng(3)
    y = rng.integers(0, 3, 120)
    z = rng.normal(size=(120, 3)) + 2.0 * np.eye(3)[y]
    prob = cal.softmax(3.0 * z)  # overconfident
    groups = np.repeat(["a", "b", "c", "d"], 30)
    tempered, temps = cal.cross_fitted(prob, y, groups)
    for g, t in zip("abcd", temps):
        rows = groups == g
        assert t == pytest.approx(cal.fit_temperature(prob[~rows], y[~rows]))
        np.testing.assert_allclose(tempered[rows], cal.apply_temperature(prob[rows], t))
        changed = y.copy()  # a group's own labels do not move its tempered rows
        changed[rows] = (changed[rows] + 1) % 3
        np.testing.assert_array_equal(cal.cross_fitted(prob, changed, groups)[0][rows],
                                      tempered[rows])
    out = cal.out_of_sample(prob, y, groups, np.zeros(120))
    assert list(out) == ["by_subject"]  # one run: no figure by run
    assert out["by_subject"]["ece"] == pytest.approx(round(cal.ece(tempered, y), 6))
    assert out["by_subject"]["ece"] < cal.ece(prob, y)
    with pytest.raises(ValueError, match="at least two groups"):
        cal.cross_fitted(prob, y, np.zeros(120))


def test_calibrated_final_epoch_tempers_each_subject_by_its_fold():
    prob, y, folds, subjects, z = inner_store()
    temps = cal.fold_temperatures(prob, y, folds)
    final = cal.softmax(2 * z).astype(np.float16)
    out = cal.calibrated_final_epoch(final, subjects, temps)
    for s in folds:
        rows = subjects == s
        np.testing.assert_allclose(out[rows], cal.apply_temperature(final[rows], temps[s]))
    np.testing.assert_array_equal(out.argmax(axis=1), final.astype(float).argmax(axis=1))
    with pytest.raises(ValueError, match="no temperature for subject"):
        cal.calibrated_final_epoch(final, subjects, {s: 1.0 for s in folds[1:]})


# --------------------------------------------------------------------------- a model's calibration


@pytest.fixture(scope="module")
def smoke_dir(synthetic, tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("cal-models") / "smoke"
    predict.fitted_model(synthetic, "smoke", 0, model_dir=folder)
    return folder


def fake_run(name: str, meta: dict, n: int = 3000, seed: int = 0, config=None,
             with_prob: bool = True) -> Run:
    """A stored-run stand-in: predictions with labels drawn from softmax(z), epochs["prob"]
    (2 epochs) with the final epoch overconfident (softmax(2.5 z), float16)."""
    z, y = synthetic_logits(n, seed=seed)
    prob = np.stack([cal.softmax(z), cal.softmax(2.5 * z)]).astype(np.float16)
    config = config or PROFILES["smoke"]
    return Run(Path("/tmp/runs") / name, {"config": config.to_dict(),
                                          "data_fingerprint": meta["data_fingerprint"]},
               pd.DataFrame({"subject": [f"s{i % 7}" for i in range(n)], "label": y}),
               {"pred": prob.argmax(axis=2), **({"prob": prob} if with_prob else {})})


@pytest.fixture()
def calibrated_dir(smoke_dir, tmp_path) -> Path:
    folder = tmp_path / "m"
    shutil.copytree(smoke_dir, folder)
    meta = json.loads((folder / predict.META).read_text())
    predict.calibrate(folder, [fake_run("run-a", meta, seed=1), fake_run("run-b", meta, seed=2)])
    return folder


def test_calibrate_writes_calibration_json_and_answers_are_calibrated(calibrated_dir, synthetic,
                                                                     smoke_dir):
    record = json.loads((calibrated_dir / CALIBRATION).read_text())
    assert record["runs"] == ["run-a", "run-b"] and record["samples"] == 6000
    assert record["temperature"] == pytest.approx(2.5, rel=0.15)  # the runs' overconfidence
    assert record["ece_after"] < record["ece_before"] and record["nll_after"] < record["nll_before"]
    assert record["config"] == PROFILES["smoke"].to_dict() and record["method"] == cal.METHOD
    assert {"created", "git_commit", "data_fingerprint"} <= set(record)
    model, plain = Model.load(calibrated_dir), Model.load(smoke_dir)
    assert model.calibration == record and plain.calibration is None
    x = regions_mod.network_inputs(synthetic, model.config)[:8]
    for probs in predict.softmax(model.logits(x)):
        answer = predict.make_answer(model, probs, {}, flow_method=None, force=False, seconds=0)
        before = predict.make_answer(plain, probs, {}, flow_method=None, force=False, seconds=0)
        assert answer["calibrated"] is True and answer["temperature"] == record["temperature"]
        assert before["calibrated"] is False and before["temperature"] is None
        expected = cal.apply_temperature(probs[None], record["temperature"])[0]
        np.testing.assert_allclose(list(answer["probabilities"].values()), expected, atol=1e-6)
        assert answer["probabilities_uncalibrated"] == before["probabilities"]
        # the temperature never changes the label: the argmax of both
        assert answer["label"] == before["label"] == LABELS[int(np.argmax(probs))]
        assert answer["label"] == max(answer["probabilities"], key=answer["probabilities"].get)


def test_the_cli_answer_is_calibrated(calibrated_dir, synthetic, capsys):
    row = synthetic.table.iloc[2]
    parser = argparse.ArgumentParser(prog="htnet")
    cli_predict.add_predict_arguments(parser)
    args = parser.parse_args(["--model", str(calibrated_dir), "--json",
                              "--flow", str(synthetic.root / row.flow_path),
                              "--apex", str(synthetic.root / row.apex_path)])
    assert cli_predict.run_predict(args) == 0
    answer = json.loads(capsys.readouterr().out)
    assert answer["calibrated"] is True and answer["temperature"] > 1
    args.json = False
    assert cli_predict.run_predict(args) == 0
    out = capsys.readouterr().out
    assert "calibrated: softmax(logits / T)" in out and "not calibrated" not in out


def test_htnet_calibrate_prints_and_the_card_reads_the_file(smoke_dir, tmp_path, capsys,
                                                            monkeypatch):
    folder = tmp_path / "m"
    shutil.copytree(smoke_dir, folder)
    meta = json.loads((folder / predict.META).read_text())
    runs = {}
    for name, seed in (("run-a", 1), ("run-b", 2)):
        run = fake_run(name, meta, seed=seed)
        runs[str(tmp_path / name)] = dataclasses.replace(run, path=tmp_path / name)
    monkeypatch.setattr("htnetlib.training.store.load_run", lambda p: runs[str(p)])
    parser = argparse.ArgumentParser(prog="htnet")
    cli_predict.add_calibrate_arguments(parser)
    args = parser.parse_args(["--model", str(folder), "--runs", *runs])
    assert cli_predict.run_calibrate(args) == 0
    out = capsys.readouterr().out
    record = json.loads((folder / CALIBRATION).read_text())
    assert f"temperature {record['temperature']:.4f}" in out
    assert f"{record['ece_before']:.4f} -> {record['ece_after']:.4f}" in out
    card = (folder / CARD).read_text()
    assert f"T = {record['temperature']:.4f}" in card and "`run-a`, `run-b`" in card
    assert f"| {record['ece_before']} | {record['ece_after']} |" in card
    oos = record["out_of_sample"]  # by held-out subject and by run: the card's figure
    assert oos["by_run"]["groups"] == 2 and oos["by_subject"]["groups"] > 2
    assert (f"| {record['ece_before']} | {record['ece_after']} | {oos['by_subject']['ece']} | "
            f"{oos['by_run']['ece']} |") in card
    assert f"The card's figure is the out-of-sample one by held-out subject" in card
    assert f"**ECE {oos['by_subject']['ece']}**" in card
    record["temperature"] = 1.2345  # the card reads the file, it types no number
    (folder / CALIBRATION).write_text(json.dumps(record))
    from htnetlib.study.card import card_text

    assert "T = 1.2345" in card_text(Model.load(folder))
    assert "not calibrated" in card_text(Model.load(smoke_dir))


def test_a_run_that_does_not_fit_the_model_is_refused_by_name(smoke_dir, tmp_path):
    folder = tmp_path / "m"
    shutil.copytree(smoke_dir, folder)
    meta = json.loads((folder / predict.META).read_text())
    other = dataclasses.replace(PROFILES["smoke"], dim=16)
    cases = [([fake_run("run-other", meta, config=other)], r"run-other: .*configuration.*dim"),
             ([fake_run("run-old", meta, with_prob=False)], r"run-old: epochs\.npz holds no prob"),
             ([fake_run("run-data", {"data_fingerprint": "0000"})], r"run-data: data 0000"),
             ([fake_run("run-a", meta)] * 2, r"run-a: given twice"),
             ([], "no run to calibrate")]
    for runs, shown in cases:
        with pytest.raises(RunError, match=shown) as info:
            predict.calibrate(folder, runs)
        one_line(info.value)
    assert not (folder / CALIBRATION).exists()


@pytest.mark.parametrize("content, shown", [
    ("{not json", "not readable as JSON"),
    ("[1, 2]", "holds a JSON list"),
    ('{"temperature": "hot"}', "temperature 'hot' is not a number"),
    ('{"temperature": -1}', "temperature -1 is not a number"),
    ('{"temperature": 2.0, "config": {"dim": 1}}', "another configuration"),
], ids=["not-json", "list", "string", "negative", "other-config"])
def test_a_damaged_calibration_json_is_a_one_line_error(calibrated_dir, content, shown):
    (calibrated_dir / CALIBRATION).write_text(content)
    with pytest.raises(DataError, match=shown) as info:
        Model.load(calibrated_dir)
    assert f"{CALIBRATION}" in one_line(info.value)


def test_saving_another_model_removes_a_stale_calibration(calibrated_dir):
    model = Model.load(calibrated_dir)
    model.save(calibrated_dir)  # the same configuration: its calibration stays
    assert Model.load(calibrated_dir).calibration == model.calibration
    record = json.loads((calibrated_dir / CALIBRATION).read_text())
    record["config"] = {**record["config"], "dim": 16}
    (calibrated_dir / CALIBRATION).write_text(json.dumps(record))
    with pytest.warns(UserWarning, match="another configuration"):
        model.save(calibrated_dir)
    assert not (calibrated_dir / CALIBRATION).exists() and model.calibration is None
    assert math.isfinite(Model.load(calibrated_dir).logits(
        np.zeros((1, 3, 28, 28), np.float32)).sum())


def test_htnet_calibrate_is_a_subcommand_with_one_line_errors(smoke_dir, tmp_path, capsys):
    from htnetlib.cli import main

    assert main(["calibrate", "--model", str(smoke_dir), "--runs",
                 str(tmp_path / "no-such-run")]) == 3
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("htnet: error:") and "no-such-run" in err[0]
    assert not (smoke_dir / CALIBRATION).exists()
