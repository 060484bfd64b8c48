"""Bring your own model: ``--model package.module:factory`` through LOSO, every selection rule,
the leak test, leave one dataset out and ``htnet train`` (factories in tests/user_models.py)."""

from __future__ import annotations

import dataclasses
import sys
from pathlib import Path

import numpy as np
import pytest
from torch import nn

from htnetlib.cli import main
from htnetlib.config import PROFILES, Config, ConfigError, is_user_model, profile_config
from htnetlib.evaluation.leak import leaked_subjects
from htnetlib.evaluation.selection import RULES, oracle_rule
from htnetlib.model import build_model, check_user_model

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:  # tests.user_models importable however pytest was started
    sys.path.insert(0, str(ROOT))

TINY = "tests.user_models:tiny"


@pytest.fixture(scope="module")
def tiny_config() -> Config:
    return dataclasses.replace(profile_config("smoke", TINY), max_folds=3, epochs=2)


@pytest.fixture(scope="module")
def tiny_run(synthetic, tiny_config, tmp_path_factory):
    from htnetlib.training.loso import run_loso
    from htnetlib.training.store import load_run

    run_dir = run_loso(synthetic, tiny_config, seed=0,
                       runs_dir=tmp_path_factory.mktemp("runs"), profile="smoke",
                       device="cpu", progress=False)
    return load_run(run_dir)


def test_model_strings():
    assert is_user_model(TINY) and is_user_model("a.b:c") and is_user_model("m:f")
    for bad in ("htnet", "a.b", "a.b:", ":f", "a..b:c", "a.b:c.d", "a b:c", "1a:f", "a:b:c"):
        assert not is_user_model(bad), bad
    assert Config(model=TINY).problems() == []
    assert Config(model="a.b").problems() == [
        "model='a.b' is not one of htnet, ststnet, logreg, rcn, twostream, nor a factory package.module:callable"]


def test_profile_config_is_the_profiles_htnet_schedule_with_the_model_replaced():
    for profile, htnet in PROFILES.items():
        assert profile_config(profile, TINY) == dataclasses.replace(htnet, model=TINY)
    with pytest.raises(ConfigError, match="unknown model 'nosuch'"):
        profile_config("smoke", "nosuch")


def test_build_model_calls_the_factory_with_the_config_or_nothing():
    net = build_model(dataclasses.replace(PROFILES["smoke"], model=TINY))
    assert isinstance(net, nn.Sequential) and net[1].in_features == 3 * 28 * 28
    net = build_model(Config(model="tests.user_models:tiny_without_config"))
    assert isinstance(net, nn.Sequential)


@pytest.mark.parametrize("model, reason", [
    ("nosuch.module:f", "module 'nosuch.module' not found"),
    ("tests.user_models:nosuch", "module tests.user_models has no attribute 'nosuch'"),
    ("tests.user_models:NOT_CALLABLE", "NOT_CALLABLE is not callable (an object of type int)"),
    ("os:getcwd", "the factory returned a str, not a torch nn.Module"),
])
def test_a_bad_factory_is_one_line_naming_the_string_and_the_reason(model, reason):
    with pytest.raises(ConfigError) as info:
        build_model(Config(model=model))
    message = str(info.value)
    assert "\n" not in message and f"model={model!r}" in message and reason in message


def test_check_user_model_tries_the_network_on_one_input():
    check_user_model(Config(model=TINY))
    with pytest.raises(ConfigError, match=r"to \(2, 5\), not \(2, 3\) logits"):
        check_user_model(Config(model="tests.user_models:wrong_shape"))


def test_loso_trains_a_user_model_and_its_run_id_hashes_the_factory(tiny_run, tiny_config,
                                                                     synthetic):
    assert tiny_run.config == tiny_config
    assert tiny_run.meta["config"]["model"] == TINY
    pred = tiny_run.epochs["pred"]
    assert pred.shape == (2, len(tiny_run.predictions))
    assert set(np.unique(pred)) <= {0, 1, 2}
    assert tiny_run.predictions["subject"].nunique() == 3
    # the id names the callable, and hashes the whole factory string
    from htnetlib.training.store import data_fingerprint, run_id

    rid = run_id(tiny_config, 0, data_fingerprint(synthetic), "smoke")
    assert tiny_run.path.name == rid and rid.startswith("user-tiny-smoke-s0-")
    other = dataclasses.replace(tiny_config, model="tests.other_models:tiny")
    assert run_id(other, 0, data_fingerprint(synthetic), "smoke") != rid


def test_every_selection_rule_and_the_leak_test_on_a_user_model(tiny_run):
    p = tiny_run.predictions
    pred, y, subjects = tiny_run.epochs["pred"], p["label"].to_numpy(), p["subject"].to_numpy()
    for name, rule in RULES.items():
        chosen = rule(pred, y, subjects)
        assert chosen.shape == y.shape and set(np.unique(chosen)) <= {0, 1, 2}, name
    assert leaked_subjects(RULES["final epoch"], pred, y, subjects) == []
    assert leaked_subjects(oracle_rule, pred, y, subjects) != []


def test_leave_one_dataset_out_trains_a_user_model(synthetic, tiny_config, tmp_path):
    from htnetlib.training.lodo import load_lodo, run_lodo

    result = load_lodo(run_lodo(synthetic, tiny_config, seed=0, store_dir=tmp_path,
                                profile="smoke"))
    assert result["meta"]["config"]["model"] == TINY
    assert result["epochs"]["pred"].shape[0] == tiny_config.epochs
    assert result["metrics"]["honest"]


def test_htnet_train_with_a_user_model(synthetic_root, tmp_path, capsys):
    code = main(["train", "--model", TINY, "--profile", "smoke", "--data", str(synthetic_root),
                 "--out", str(tmp_path)])
    out = capsys.readouterr()
    assert code == 0, out.err
    assert len([d for d in tmp_path.iterdir() if d.is_dir()]) == 1


@pytest.mark.parametrize("model, reason", [
    ("nosuch.module:f", "module 'nosuch.module' not found"),
    ("os:getcwd", "the factory returned a str, not a torch nn.Module"),
    ("tests.user_models:wrong_shape", "not (2, 3) logits"),
    ("tests.user_models:no_parameters", "the network has no trainable parameters"),
    ("tests.user_models:integer_logits", "returns torch.int64 logits; cross-entropy needs "
                                         "floating-point ones"),
    ("tests.user_models:detached", "the backward pass through the network fails: "
                                   "RuntimeError: element 0 of tensors does not require grad"),
    ("nosuch", "is not one of htnet, ststnet, logreg, rcn, twostream, nor a factory package.module:callable"),
])
def test_htnet_train_with_a_bad_model_is_one_line_and_exit_2(model, reason, synthetic_root,
                                                            tmp_path, capsys):
    out = tmp_path / "runs"
    code = main(["train", "--model", model, "--profile", "smoke", "--data", str(synthetic_root),
                 "--out", str(out)])
    err = capsys.readouterr().err
    assert code == 2
    assert err.count("\n") == 1 and err.startswith("htnet: error: ") and reason in err
    assert not out.exists()


def test_htnet_train_refuses_the_grouped_trainer_for_a_user_model(synthetic_root, tmp_path,
                                                                   capsys):
    code = main(["train", "--model", TINY, "--trainer", "grouped", "--profile", "smoke",
                 "--data", str(synthetic_root), "--out", str(tmp_path / "runs")])
    err = capsys.readouterr().err
    assert code == 2 and err.count("\n") == 1 and "--trainer grouped batches HTNet" in err
    assert not (tmp_path / "runs").exists()


def test_a_user_model_failing_mid_training_names_the_factory_and_fold_and_exits_1(
        synthetic_root, tmp_path, capsys):
    """A shape bug the up-front check cannot see (right for a batch of two only): exit 1, the
    user's traceback, one line naming the factory and the fold, never htnet's bug line."""
    model = "tests.user_models:batch_of_two"
    code = main(["train", "--model", model, "--profile", "smoke", "--data", str(synthetic_root),
                 "--out", str(tmp_path / "runs"), "--set", "max_folds=2", "--set", "epochs=1"])
    err = capsys.readouterr().err
    assert code == 1, err
    assert "Traceback (most recent call last)" in err and "in forward" in err
    last = err.strip().splitlines()[-1]
    assert last.startswith(f"htnet: error: model {model} failed in fold 1/2 (subject ")
    assert "the error is in that network's code" in last
    assert "please report it" not in err and "unexpected" not in err
