"""Honest selection rules, the leak test, nested and leave-one-dataset-out stores, and the new
training choices (class weights, mirror, cosine schedule) of :mod:`htnetlib.training.nested`, :mod:`htnetlib.evaluation.selection`."""

import dataclasses
import json

import numpy as np
import pytest

from htnetlib.training import jobs as jobs_mod
from htnetlib.evaluation import metrics
from htnetlib import config as config_mod
from htnetlib.training import fold as fold_mod
from htnetlib.evaluation import leak as leak_mod
from htnetlib.training import lodo
from htnetlib.training import loso
from htnetlib.training import nested as nested_mod
from htnetlib.data import regions as regions_mod
from htnetlib.evaluation import selection as selection_mod
from htnetlib.training import store as store_mod
from htnetlib.config import LATER_FIELDS, Config, ConfigError, apply_overrides, profile_config

TINY = Config(dim=8, heads=1, block_repeats=(1, 1, 1), epochs=3, lr=1e-3)


# --------------------------------------------------------------------------- the leak test


def fake_run(seed: int = 0, epochs: int = 30, n_subjects: int = 12):
    """Per-epoch predictions that drift towards the labels, as training does: (pred, y, subjects)."""
    rng = np.random.default_rng(seed)
    sizes = rng.integers(1, 6, n_subjects)
    subjects = np.repeat([f"s{i:02d}" for i in range(n_subjects)], sizes)
    y = rng.integers(0, 3, len(subjects))
    right = rng.random((epochs, len(y))) < np.linspace(0.3, 0.7, epochs)[:, None]
    pred = np.where(right, y, rng.integers(0, 3, (epochs, len(y)))).astype(np.int8)
    return pred, y, subjects


def fake_inner(pred, y, subjects, seed: int = 0):
    """An inner store for :func:`fake_run`: per outer fold, noisy predictions of every training
    sample after each epoch, -1 for the held-out subject's samples."""
    rng = np.random.default_rng(seed + 1)
    folds = list(dict.fromkeys(subjects))
    inner = np.empty((len(folds),) + pred.shape, dtype=np.int8)
    for k, s in enumerate(folds):
        noisy = np.where(rng.random(pred.shape) < 0.8, pred, rng.integers(0, 3, pred.shape))
        inner[k] = np.where(subjects == s, -1, noisy)
    return {"pred": inner, "subjects": np.array(folds)}


def leak_protocols(inner, n):
    """Every protocol under test, as ``f(pred, y, subjects)``: the rules of selection_mod.RULES,
    the seed rules (one run standing for three seeds), and the nested rules."""
    out = dict(selection_mod.RULES)
    for name, rule in selection_mod.SEED_RULES.items():
        out[name] = lambda p, y, s, rule=rule: rule([p, np.roll(p, 1, axis=0), p[::-1]])
    for metric in ("uf1", "accuracy"):
        out[f"nested ({metric})"] = selection_mod.nested_rule(inner, np.arange(n), np.zeros(n), metric)
    return out


def moved_subjects(protocol, pred, y, subjects) -> list:
    """Subjects whose own predictions change when their labels are replaced (each in turn),
    amplified."""
    return leak_mod.leak_test(protocol, pred, y, subjects)


def test_the_leak_test_replaces_one_subjects_labels_at_a_time():
    pred, y, subjects = fake_run(4)
    seen = []

    def spy(p, labels, s):
        seen.append(np.flatnonzero(labels != y))
        return p[-1]
    assert leak_mod.leaked_subjects(spy, pred, y, subjects) == []
    changed = [set(subjects[i]) for i in seen if len(i)]
    assert all(len(c) == 1 for c in changed)  # one subject's labels, all of them
    assert [c.pop() for c in changed[::2]] == list(dict.fromkeys(subjects))


@pytest.mark.parametrize("name", list(leak_protocols(fake_inner(*fake_run()), 1)))
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_every_protocol_passes_the_leak_test(name, seed):
    pred, y, subjects = fake_run(seed)
    protocol = leak_protocols(fake_inner(pred, y, subjects, seed), len(y))[name]
    assert moved_subjects(protocol, pred, y, subjects) == [], name


def test_the_oracle_fails_the_leak_test():
    """The test can fail: the oracle's predictions follow the held-out labels."""
    for seed in range(3):
        pred, y, subjects = fake_run(seed)
        moved = moved_subjects(selection_mod.oracle_rule, pred, y, subjects)
        assert len(moved) >= len(set(subjects)) // 2, moved


def test_rules_match_slow_definitions():
    pred, y, subjects = fake_run(3)
    for metric, fn in (("uf1", metrics.uf1), ("accuracy", lambda a, b: float((a == b).mean()))):
        chosen = selection_mod.cross_subject_epochs(pred, y, subjects, metric)
        for s in set(subjects):
            other = subjects != s
            slow = [fn(y[other], pred[e, other]) for e in range(len(pred))]
            assert chosen[s] == selection_mod.best_epoch(slow), (metric, s)
    np.testing.assert_array_equal(selection_mod.oracle_rule(pred, y, subjects),
                                  metrics.oracle_predictions(pred, y, subjects))
    np.testing.assert_array_equal(selection_mod.RULES["final epoch"](pred, y, subjects), pred[-1])
    cm = selection_mod.confusion_by_epoch(pred, y, np.zeros(len(y)))[1][:, 0]
    np.testing.assert_allclose(selection_mod.scores_from_confusion(cm, "uf1"),
                               [metrics.uf1(y, p) for p in pred])
    np.testing.assert_allclose(selection_mod.scores_from_confusion(cm, "uar"),
                               [metrics.uar(y, p) for p in pred])


def test_vote_breaks_ties_by_the_latest_member():
    stack = np.array([[0, 1, 2, 0], [1, 1, 0, 2], [2, 0, 0, 1]], dtype=np.int8)
    np.testing.assert_array_equal(selection_mod.vote(stack), [2, 1, 0, 1])
    np.testing.assert_array_equal(selection_mod.last_epochs_vote(stack, 1), stack[-1])
    with pytest.raises(ValueError, match="k=4"):
        selection_mod.last_epochs_vote(stack, 4)
    assert selection_mod.fraction_of_epochs(100, 0.1) == 10
    assert selection_mod.fraction_of_epochs(3, 0.1) == 1


def test_vote_ties_do_not_depend_on_the_order_of_the_seeds():
    rng = np.random.default_rng(0)
    runs = [rng.integers(0, 3, (8, 200)).astype(np.int8) for _ in range(4)]
    for rule in selection_mod.SEED_RULES.values():
        first = rule(runs)
        for order in ([3, 2, 1, 0], [1, 3, 0, 2], [2, 0, 3, 1]):
            np.testing.assert_array_equal(rule([runs[i] for i in order]), first)
    # two seeds' final epochs disagree: the tie goes to the lowest class, in either order
    a, b = np.array([[2, 1]], np.int8), np.array([[1, 2]], np.int8)
    np.testing.assert_array_equal(selection_mod.seed_epochs_vote([a, b]), [1, 1])
    np.testing.assert_array_equal(selection_mod.seed_epochs_vote([b, a]), [1, 1])
    # a tie in the count goes to the class with more votes at the latest epoch
    a, b = np.array([[0], [2]], np.int8), np.array([[2], [0]], np.int8)
    c = np.array([[1], [2]], np.int8)
    np.testing.assert_array_equal(selection_mod.seed_epochs_vote([a, b, c], 1.0), [2])
    # the old rule (the last seed listed wins) would answer differently in one order
    old = lambda runs: selection_mod.vote(np.stack([r[-1] for r in runs]))  # noqa: E731
    assert not all(np.array_equal(old(runs), old(runs[::-1])) for _ in [0])


def test_soft_vote_averages_probabilities_in_any_order():
    rng = np.random.default_rng(1)
    probs = [rng.dirichlet(np.ones(3), (5, 40)) for _ in range(3)]
    soft = selection_mod.SOFT_SEED_RULES["soft vote of seeds x last 25% of epochs"]
    k = selection_mod.fraction_of_epochs(5, 0.25)
    expect = np.concatenate([p[-k:] for p in probs]).mean(0).argmax(1)
    np.testing.assert_array_equal(soft(probs), expect)
    np.testing.assert_array_equal(soft(probs[::-1]), expect)
    np.testing.assert_array_equal(
        selection_mod.SOFT_SEED_RULES["soft vote of seeds, final epoch"](probs),
        np.mean([p[-1] for p in probs], 0).argmax(1))


def test_a_fold_rule_never_sees_the_held_out_labels():
    pred, y, subjects = fake_run(5)
    seen = {}

    def choose(p, labels, subj, s):
        seen[s] = labels.copy()
        return p[-1, subj == s]
    rule = selection_mod.FoldRule(choose)
    np.testing.assert_array_equal(rule(pred, y, subjects), pred[-1])
    for s, labels in seen.items():
        assert (labels[subjects == s] == selection_mod.MASKED).all()
        np.testing.assert_array_equal(labels[subjects != s], y[subjects != s])
    assert all(isinstance(r, selection_mod.FoldRule) for r in selection_mod.RULES.values())


def test_htnetlib_leak_test_is_the_amplified_test():
    import htnetlib

    pred, y, subjects = fake_run(2)
    assert htnetlib.leak_test is leak_mod.leak_test
    assert htnetlib.leak_test(selection_mod.RULES["final epoch"], pred, y, subjects) == []


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_pooled_leaks_pass_the_label_shift_but_fail_the_amplified_test(seed):
    """A single epoch chosen by the pooled test score can hide from the label shift (one subject
    rarely tips the pooled choice); the amplified test catches it, and every other leaky
    reference, while every honest rule passes."""
    pred, y, subjects = fake_run(seed, epochs=40, n_subjects=68)
    dataset_of = {s: f"d{i % 3}" for i, s in enumerate(dict.fromkeys(subjects))}
    controls = leak_mod.leaky_rules(dataset_of)
    shift_only = leak_mod.leaked_subjects(controls["global oracle (one epoch, pooled test UF1)"],
                                          pred, y, subjects)
    assert len(shift_only) < len(set(subjects)) // 2
    for name, rule in controls.items():
        assert leak_mod.leak_test(rule, pred, y, subjects) != [], name
    stack = np.stack([pred[-1], pred[-5], pred[-9], pred[-13]])  # four "variants"
    assert leak_mod.leak_test(leak_mod.global_oracle, stack, y, subjects) != []
    for name, rule in selection_mod.RULES.items():
        assert leak_mod.leak_test(rule, pred, y, subjects) == [], name


# --------------------------------------------------------------------------- nested store


def count_fits(monkeypatch, fail_after=None) -> list:
    calls, real = [], fold_mod.train_fold

    def fit(*a, **k):
        if fail_after is not None and len(calls) >= fail_after:
            raise KeyboardInterrupt("killed")
        calls.append(1)
        return real(*a, **k)
    monkeypatch.setattr(jobs_mod, "train_fold", fit)
    return calls


def test_nested_store_is_honest_resumable_and_reused(synthetic, tmp_path, monkeypatch):
    n_subjects = synthetic.table["subject"].nunique()
    splits = nested_mod.inner_splits(synthetic, TINY)
    fits = sum(int(s["groups"].max()) + 1 for s in splits)
    assert fits == n_subjects * min(5, n_subjects - 1)
    for k, s in enumerate(splits):  # every training sample is tested once, the subject never
        own = (synthetic.table["subject"] == s["subject"]).to_numpy()
        assert (s["groups"][own] == -1).all() and (s["groups"][~own] >= 0).all()
        for g in range(s["groups"].max() + 1):  # groups split by subject
            in_g = set(synthetic.table["subject"][s["groups"] == g])
            assert not in_g & set(synthetic.table["subject"][(s["groups"] != g) & ~own])

    ref = nested_mod.run_nested(synthetic, TINY, runs_dir=tmp_path / "ref", profile="smoke")
    inner = nested_mod.load_inner(ref)
    assert inner["pred"].shape == (n_subjects, TINY.epochs, len(synthetic.table))
    assert sorted(p.name for p in (ref / "inner").iterdir()) == ["config.json", "epochs.npz"]

    # killed after 4 inner fits, then resumed: only the rest is trained, same predictions
    with monkeypatch.context() as m:
        count_fits(m, fail_after=4 + n_subjects)  # the outer run's folds come first
        with pytest.raises(KeyboardInterrupt):
            nested_mod.run_nested(synthetic, TINY, runs_dir=tmp_path / "two", profile="smoke",
                                  trainer="loop")  # the outer folds one by one, counted
    calls = count_fits(monkeypatch)
    again = nested_mod.run_nested(synthetic, TINY, runs_dir=tmp_path / "two", profile="smoke")
    assert len(calls) == fits - 4
    np.testing.assert_array_equal(nested_mod.load_inner(again)["pred"], inner["pred"])
    nested_mod.run_nested(synthetic, TINY, runs_dir=tmp_path / "two", profile="smoke")
    assert len(calls) == fits - 4  # reused

    run = store_mod.load_run(ref)
    nested = nested_mod.nested_predictions(run)
    p = run.predictions
    chosen = selection_mod.nested_epochs(inner["pred"], synthetic.table["label"].to_numpy(),
                                     [str(s) for s in inner["subjects"]])
    np.testing.assert_array_equal(nested, selection_mod.at_epochs(run.epochs["pred"],
                                                              p["subject"], chosen))
    assert chosen == nested_mod.nested_chosen_epochs(run)
    rule = selection_mod.nested_rule(inner, nested_mod.table_rows(synthetic.table, p),
                                 synthetic.table["label"])
    assert moved_subjects(rule, run.epochs["pred"], p["label"].to_numpy(),
                          p["subject"].to_numpy()) == []


def test_nested_obeys_the_training_switch(synthetic, tmp_path, monkeypatch):
    loso.run_loso(synthetic, TINY, runs_dir=tmp_path, profile="smoke", progress=False)
    monkeypatch.setenv("HTNET_TRAIN_PROFILES", "custom")
    with pytest.raises(config_mod.TrainingError, match="no finished inner store"):
        nested_mod.run_nested(synthetic, TINY, runs_dir=tmp_path, profile="smoke")


# --------------------------------------------------------------------------- leave one dataset out


def test_lodo_store_recomputes_and_is_reused(synthetic, tmp_path, monkeypatch):
    out = lodo.run_lodo(synthetic, TINY, seed=1, store_dir=tmp_path, profile="smoke")
    assert out.name == lodo.lodo_id(TINY, 1, store_mod.data_fingerprint(synthetic), "smoke")
    res = lodo.load_lodo(out)
    p, pred = res["predictions"], res["epochs"]["pred"]
    assert sorted(p.name for p in out.iterdir()) == sorted(lodo.LODO_FILES)
    assert res["meta"]["held_out"] == ["smic", "casme2", "samm"] == list(p["dataset"].unique())
    assert pred.shape == (TINY.epochs, len(synthetic.table))
    np.testing.assert_array_equal(p["honest"], pred[-1])
    for d, part in p.groupby("dataset"):
        assert res["metrics"]["honest"][d]["uf1"] == metrics.uf1(part["label"], part["honest"])
    assert Config.from_dict(res["meta"]["config"]) == TINY and res["meta"]["seed"] == 1
    calls = count_fits(monkeypatch)
    assert lodo.run_lodo(synthetic, TINY, seed=1, store_dir=tmp_path, profile="smoke") == out
    assert calls == []
    monkeypatch.setenv("HTNET_TRAIN_PROFILES", "custom")
    with pytest.raises(config_mod.TrainingError, match="not stored"):
        lodo.run_lodo(synthetic, TINY, seed=2, store_dir=tmp_path, profile="smoke")


# --------------------------------------------------------------------------- training choices


def test_new_fields_leave_run_ids_and_commands_unchanged():
    for field in LATER_FIELDS:
        assert field not in Config().to_dict()
    cfg = apply_overrides(profile_config("cpu"), ["mirror=true", "class_weights=balanced",
                                                  "lr_schedule=cosine"])
    d = cfg.to_dict()
    assert (d["mirror"], d["class_weights"], d["lr_schedule"]) == (True, "balanced", "cosine")
    assert Config.from_dict(json.loads(json.dumps(d))) == cfg
    assert Config.from_dict(profile_config("cpu").to_dict()) == profile_config("cpu")
    command = store_mod.train_command(cfg, 0, "cpu")
    assert command.endswith("--set class_weights=balanced --set mirror=true "
                            "--set lr_schedule=cosine")
    assert store_mod.run_id(cfg, 0, "x", "cpu") != store_mod.run_id(profile_config("cpu"), 0, "x", "cpu")
    with pytest.raises(ConfigError, match="class_weights='equal' is not one of none, balanced"):
        apply_overrides(profile_config("cpu"), ["class_weights=equal"])
    with pytest.raises(ConfigError, match="lr_schedule='step' is not one of constant, cosine"):
        apply_overrides(profile_config("cpu"), ["lr_schedule=step"])


def test_balanced_class_weights_give_every_class_the_same_total():
    y = np.array([0] * 6 + [1] * 3 + [2] * 1)
    w = fold_mod.class_weights(dataclasses.replace(TINY, class_weights="balanced"), y)
    counts = np.bincount(y)
    np.testing.assert_allclose(w * counts, len(y) / 3)
    assert fold_mod.class_weights(TINY, y) is None


@pytest.mark.parametrize("mode", ["whole", "corrected"])
def test_mirror_is_the_flipped_mosaic_where_the_crops_allow(synthetic, mode):
    """Whole map: the mirror is the flipped map with u negated (255 - u). Corrected regions: the
    mosaic of the mirrored face is the flipped mosaic (left and right crops swap), except where
    rounding a landmark moves a crop by a pixel or MTCNN found no face."""
    cfg = dataclasses.replace(TINY, regions=mode, mirror=True)
    x = regions_mod.network_inputs(synthetic, cfg)
    xm = regions_mod.network_inputs(synthetic, cfg, mirror=True)
    flipped = x[:, :, :, ::-1].copy()
    flipped[:, 2] = 255 - flipped[:, 2]  # channels (strain, v, u)
    same = (flipped == xm).all(axis=(1, 2, 3))
    if mode == "whole":
        assert same.all()
    else:
        assert same.mean() >= 0.5, f"{same.sum()} of {len(same)}"


def test_training_choices_change_training_and_keep_the_default(synthetic):
    x = regions_mod.network_inputs(synthetic, TINY)
    y = synthetic.table["label"].to_numpy().copy()
    args = (x[4:], y[4:], x[:4], y[:4])
    fit = lambda cfg, **kw: fold_mod.train_fold(cfg, *args, seed=0, device="cpu", **kw)  # noqa: E731
    base = fit(TINY)
    again = fit(dataclasses.replace(TINY, class_weights="none", lr_schedule="constant"))
    np.testing.assert_array_equal(base.logits, again.logits)
    xm = regions_mod.network_inputs(synthetic, TINY, mirror=True)
    for change, kw in ((dict(class_weights="balanced"), {}), (dict(lr_schedule="cosine"), {}),
                       (dict(mirror=True), dict(x_train_mirror=xm[4:]))):
        other = fit(dataclasses.replace(TINY, **change), **kw)
        assert not np.allclose(other.logits, base.logits), change
    with pytest.raises(ValueError, match="mirror=true needs x_train_mirror"):
        fit(dataclasses.replace(TINY, mirror=True))
