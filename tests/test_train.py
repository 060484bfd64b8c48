import dataclasses
import json
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pandas as pd
import pytest

from htnetlib.evaluation import metrics
from htnetlib import config as config_mod
from htnetlib.training import store
from htnetlib.config import Config, TrainingError
from htnetlib.training.store import load_run
from htnetlib.training.loso import run_loso

TINY = Config(dim=8, heads=1, block_repeats=(1, 1, 1), epochs=4, lr=1e-3, max_folds=3)


def test_smoke_run_layout(synthetic, tmp_path):
    run_dir = run_loso(synthetic, TINY, seed=0, runs_dir=tmp_path, profile="smoke",
                       progress=False)
    assert sorted(p.name for p in run_dir.iterdir()) == [
        "config.json", "epochs.npz", "folds.json", "metrics.json", "predictions.csv"]
    run = load_run(run_dir)
    meta = run.meta
    for key in ("config", "seed", "git_commit", "device", "versions", "train_seconds",
                "data_fingerprint", "profile"):
        assert key in meta
    p = run.predictions
    assert list(p.columns) == ["dataset", "subject", "sample", "label", "honest", "oracle"]
    assert p.subject.nunique() == 3 and len(p) == 12
    pred = run.epochs["pred"]
    assert pred.shape == (4, 12) and run.epochs["epoch"].tolist() == [1, 2, 3, 4]
    assert run.epochs["train_loss"].shape == (3, 4)
    np.testing.assert_array_equal(p.honest, pred[-1])
    np.testing.assert_array_equal(p.oracle, metrics.oracle_predictions(pred, p.label, p.subject))
    assert run.metrics["honest"]["full"]["uf1"] == pytest.approx(metrics.uf1(p.label, p.honest))
    # a second call finds the stored run and does not train again
    mtime = (run_dir / "metrics.json").stat().st_mtime_ns
    assert run_loso(synthetic, TINY, seed=0, runs_dir=tmp_path, profile="smoke",
                    progress=False) == run_dir
    assert (run_dir / "metrics.json").stat().st_mtime_ns == mtime


def test_same_seed_same_predictions_and_seed_matters(synthetic, tmp_path):
    a = load_run(run_loso(synthetic, TINY, seed=1, runs_dir=tmp_path / "a", progress=False))
    b = load_run(run_loso(synthetic, TINY, seed=1, runs_dir=tmp_path / "b", progress=False))
    c = load_run(run_loso(synthetic, TINY, seed=2, runs_dir=tmp_path / "c", progress=False))
    np.testing.assert_array_equal(a.epochs["pred"], b.epochs["pred"])
    np.testing.assert_array_equal(a.epochs["train_loss"], b.epochs["train_loss"])
    assert not np.array_equal(a.epochs["train_loss"], c.epochs["train_loss"])
    assert a.path.name != c.path.name


def test_training_learns_the_synthetic_task(synthetic, tmp_path):
    cfg = dataclasses.replace(TINY, dim=16, epochs=40, regions="whole", max_folds=None)
    run = load_run(run_loso(synthetic, cfg, runs_dir=tmp_path, progress=False))
    assert run.epochs["train_acc"][:, -1].mean() > 0.9
    assert run.metrics["honest"]["full"]["uf1"] > 0.6


def test_workers_give_the_same_predictions(synthetic, tmp_path):
    one = load_run(run_loso(synthetic, TINY, runs_dir=tmp_path / "1", progress=False))
    two = load_run(run_loso(synthetic, TINY, runs_dir=tmp_path / "2", workers=2,
                            progress=False))
    np.testing.assert_array_equal(one.epochs["pred"], two.epochs["pred"])


def test_nan_loss_names_fold_and_epoch(synthetic, tmp_path, monkeypatch):
    # a NaN input_scale is now refused up front (ConfigError), so the NaN comes in with the data
    from htnetlib.training import jobs

    inputs = jobs.network_inputs
    monkeypatch.setattr(jobs, "network_inputs", lambda data, cfg, **kw: inputs(data, cfg, **kw) * np.nan)
    with pytest.raises(TrainingError, match=r"fold 1/3 \(subject \w+\): loss is nan at epoch 1"):
        run_loso(synthetic, TINY, runs_dir=tmp_path, progress=False)


def test_permuted_labels_change_training(synthetic, tmp_path):
    cfg = dataclasses.replace(TINY, permute_labels=True)
    a = load_run(run_loso(synthetic, TINY, runs_dir=tmp_path, progress=False))
    b = load_run(run_loso(synthetic, cfg, runs_dir=tmp_path, progress=False))
    assert not np.array_equal(a.epochs["train_loss"], b.epochs["train_loss"])


def test_killed_run_resumes_to_the_same_predictions(synthetic_root, tmp_path):
    """SIGKILL after the first fold, resume, and compare with an uninterrupted run."""
    args = [sys.executable, "-m", "htnetlib.cli", "train", "--profile", "smoke",
            "--data", str(synthetic_root), "--set", "epochs=40", "--set", "max_folds=4",
            "--trainer", "loop"]  # fold after fold, so the kill finds some folds stored
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    killed = tmp_path / "killed"
    proc = subprocess.Popen(args + ["--out", str(killed)], env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 120
    while not list(killed.glob("*/folds/00.npz")) and time.time() < deadline:
        if proc.poll() is not None:
            pytest.fail("the run ended before it could be killed")
        time.sleep(0.02)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    run_dir = next(killed.iterdir())
    done = sorted(p.name for p in (run_dir / "folds").glob("*.npz"))
    assert 1 <= len(done) < 4 and not (run_dir / "metrics.json").exists()
    subprocess.run(args + ["--out", str(killed)], env=env, check=True, capture_output=True)
    whole = tmp_path / "whole"
    subprocess.run(args + ["--out", str(whole)], env=env, check=True, capture_output=True)
    a = load_run(run_dir)
    b = load_run(next(whole.iterdir()))
    np.testing.assert_array_equal(a.epochs["pred"], b.epochs["pred"])
    pd.testing.assert_frame_equal(a.predictions, b.predictions)


def test_profiles():
    assert config_mod.PROFILES["paper"] == Config()
    paper = config_mod.PROFILES["paper"]
    assert (paper.lr, paper.batch_size, paper.epochs, paper.block_repeats) == \
        (5e-5, 256, 800, (2, 2, 8))
    assert config_mod.PROFILES["cpu"].max_folds is None
    cfg = Config.from_dict(json.loads(json.dumps(TINY.to_dict())))
    assert cfg == TINY


def test_load_run_reports_missing_files(tmp_path):
    (tmp_path / "config.json").write_text("{}")
    with pytest.raises(store.RunError, match="missing predictions.csv, epochs.npz"):
        load_run(tmp_path)


@pytest.mark.parametrize("model", ["ststnet", "logreg"])
def test_baselines_train_on_the_same_folds(synthetic, tmp_path, model):
    cfg = config_mod.profile_config("smoke", model)
    run = load_run(run_loso(synthetic, cfg, runs_dir=tmp_path, profile="smoke", progress=False))
    ref = load_run(run_loso(synthetic, TINY, runs_dir=tmp_path, progress=False))
    pd.testing.assert_frame_equal(run.predictions[["dataset", "subject", "sample", "label"]],
                                  ref.predictions[["dataset", "subject", "sample", "label"]])
    assert run.epochs["pred"].shape[0] == cfg.epochs


def test_ststnet_shape_and_size():
    import torch

    from htnetlib.model.baselines import STSTNet
    from htnetlib.model import count_parameters

    net = STSTNet()
    assert count_parameters(net) == 1683
    assert net(torch.rand(4, 3, 28, 28)).shape == (4, 3)


def test_logreg_learns_the_synthetic_task(synthetic, tmp_path):
    cfg = dataclasses.replace(config_mod.profile_config("cpu", "logreg"))
    run = load_run(run_loso(synthetic, cfg, runs_dir=tmp_path, progress=False))
    assert run.metrics["honest"]["full"]["uf1"] > 0.8
    np.testing.assert_array_equal(run.predictions.honest, run.predictions.oracle)


def test_training_can_be_switched_off_per_profile(synthetic, tmp_path, monkeypatch):
    monkeypatch.setenv("HTNET_TRAIN_PROFILES", "smoke")
    with pytest.raises(TrainingError, match="training the 'cpu' profile is switched off"):
        run_loso(synthetic, TINY, runs_dir=tmp_path, profile="cpu", progress=False)
    assert run_loso(synthetic, TINY, runs_dir=tmp_path, profile="smoke", progress=False)
