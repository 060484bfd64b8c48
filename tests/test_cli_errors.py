"""Every error a user can cause in ``htnet``: one stderr line, a documented exit status, and
for ``train`` no run folder (see the exit-status table in htnetlib/cli.py)."""

import os
import shutil

import pytest
import torch
from cli_helpers import error_line

from htnetlib.cli import app as cli
from htnetlib.training import loso
from htnetlib.data import regions
from htnetlib.cli.app import main
from htnetlib.config import TrainingError


@pytest.fixture
def train_args(synthetic_root, tmp_path):
    """``htnet train`` of the smoke profile on the synthetic release into ``tmp_path/runs``."""
    return ["train", "--profile", "smoke", "--data", str(synthetic_root),
            "--out", str(tmp_path / "runs")]


@pytest.fixture(scope="module")
def smoke_run(synthetic_root, tmp_path_factory):
    """A finished smoke run, trained once for this module through the command line."""
    runs = tmp_path_factory.mktemp("runs")
    assert main(["train", "--profile", "smoke", "--data", str(synthetic_root),
                 "--out", str(runs)]) == 0
    return next(runs.iterdir())


# --------------------------------------------------------------------------- usage: exit 2


@pytest.mark.parametrize("args, shown", [
    (["--set", "max_folds=0"], "max_folds=0"),
    (["--set", "max_folds=-1"], "max_folds=-1"),
    (["--set", "epochs=0"], "epochs=0"),
    (["--set", "dim=abc"], "dim='abc'"),
    (["--set", "lr=-1"], "lr=-1"),
    (["--set", "heads=0"], "heads=0"),
    (["--set", "batch_size=0"], "batch_size=0"),
    (["--set", "dropout=2"], "dropout=2"),
    (["--set", "permute_labels=maybe"], "permute_labels='maybe'"),
    (["--set", "block_repeats=1,1"], "block_repeats=[1, 1]"),
    (["--set", "colour=blue"], "'colour'"),
    (["--set", "epochs"], "'epochs'"),
    (["--ablation", "layers=6", "--set", "heads=0"], "heads=0"),
    (["--seed", "-1"], "seed=-1"),
    (["--seed", "abc"], "'abc'"),
    (["--device", "gpu7"], "'gpu7'"),
    (["--device", "tpu"], "'tpu'"),
    (["--threads", "-1"], "--threads: -1"),
    (["--workers", "0"], "--workers: 0"),
    (["--profile", "huge"], "'huge'"),
    (["--model", "logreg", "--ablation", "layers=6"], "HTNet only"),
])
def test_bad_train_argument_is_one_line_exit_2_and_no_run_folder(train_args, tmp_path, capsys,
                                                                 args, shown):
    assert main(train_args + args) == 2
    assert shown in error_line(capsys)
    assert not (tmp_path / "runs").exists()


def test_set_values_are_typed_and_apply_on_top_of_an_ablation(train_args, monkeypatch):
    seen = {}

    def fake_run_loso(data, config, **kw):
        seen["config"], seen["seed"] = config, kw["seed"]
        return "run"

    monkeypatch.setattr(loso, "run_loso", fake_run_loso)
    monkeypatch.setattr(cli, "_print_evaluation", lambda run_dir: 0)
    assert main(train_args + ["--set", "permute_labels=False", "--seed", "7"]) == 0
    assert seen["config"].permute_labels is False and seen["seed"] == 7
    assert main(train_args + ["--set", "permute_labels=true", "--set", "max_folds=none"]) == 0
    assert seen["config"].permute_labels is True and seen["config"].max_folds is None
    assert main(train_args + ["--ablation", "layers=6", "--set", "epochs=2",
                              "--set", "dropout=0.5"]) == 0
    config = seen["config"]
    assert config.block_repeats == (1, 1, 3) and config.epochs == 2 and config.dropout == 0.5


@pytest.mark.parametrize("device", ["cuda", "cuda:0", "mps"])
def test_unavailable_device_is_exit_2(train_args, tmp_path, capsys, monkeypatch, device):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(torch.backends.mps, "is_available", lambda: False)
    assert main(train_args + ["--device", device]) == 2
    assert f"--device {device}: " in error_line(capsys)
    assert not (tmp_path / "runs").exists()


def test_out_naming_a_file_is_exit_2(synthetic_root, tmp_path, capsys):
    somefile = tmp_path / "somefile"
    somefile.write_text("not a folder")
    for out in (somefile, somefile / "runs"):
        assert main(["train", "--profile", "smoke", "--data", str(synthetic_root),
                     "--out", str(out)]) == 2
        line = error_line(capsys)
        assert str(out) in line and "is a file, not a folder" in line
    assert somefile.read_text() == "not a folder"


def test_out_not_writable_is_exit_4(train_args, tmp_path, capsys, monkeypatch):
    # tests run as root, which may write anywhere: os.access stands in for a read-only folder
    monkeypatch.setattr(os, "access", lambda path, mode: False)
    assert main(train_args) == 4
    line = error_line(capsys)
    assert str(tmp_path / "runs") in line and "not writable" in line
    assert not (tmp_path / "runs").exists()


def test_usage_errors_of_argparse_are_one_line(capsys):
    assert main([]) == 2
    assert "command" in error_line(capsys)
    assert main(["evaluate"]) == 2
    assert "run_dir" in error_line(capsys)
    assert main(["--help"]) == 0
    assert "4    runtime: training failed" in capsys.readouterr().out


# --------------------------------------------------------------------------- data: exit 3


def test_missing_release_is_exit_3_and_no_run_folder(tmp_path, capsys):
    missing = tmp_path / "no-release"
    assert main(["train", "--profile", "smoke", "--data", str(missing),
                 "--out", str(tmp_path / "runs")]) == 3
    assert str(missing) in error_line(capsys)
    assert not (tmp_path / "runs").exists()


def test_evaluate_a_folder_that_is_not_a_run_is_exit_3(tmp_path, capsys):
    empty = tmp_path / "empty"
    empty.mkdir()
    for folder in (empty, tmp_path / "missing"):
        assert main(["evaluate", str(folder)]) == 3
        assert str(folder) in error_line(capsys)


@pytest.mark.parametrize("name", ["epochs.npz", "config.json", "metrics.json",
                                  "predictions.csv"])
def test_evaluate_a_run_with_a_corrupt_file_is_exit_3(smoke_run, tmp_path, capsys, name):
    run = tmp_path / smoke_run.name
    shutil.copytree(smoke_run, run)
    (run / name).write_bytes(b"\x00garbage\xff")
    assert main(["evaluate", str(run)]) == 3
    assert str(run / name) in error_line(capsys)


def test_evaluate_a_run_with_a_missing_file_is_exit_3(smoke_run, tmp_path, capsys):
    run = tmp_path / smoke_run.name
    shutil.copytree(smoke_run, run)
    (run / "metrics.json").unlink()
    assert main(["evaluate", str(run)]) == 3
    assert "metrics.json" in error_line(capsys)


# --------------------------------------------------------------------------- runtime: exit 4


@pytest.mark.parametrize("error, shown", [
    (TrainingError("fold 1/3 (subject s01): loss is nan at epoch 2"), "loss is nan at epoch 2"),
    (PermissionError(13, "Permission denied", "/runs/x/config.json"),
     "/runs/x/config.json: Permission denied"),
    (torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB\nmore"),
     "CUDA out of memory"),
    (MemoryError(), "out of memory"),
])
def test_training_failure_is_one_line_exit_4(train_args, capsys, monkeypatch, error, shown):
    def fail(*args, **kw):
        raise error

    monkeypatch.setattr(loso, "run_loso", fail)
    assert main(train_args) == 4
    assert shown in error_line(capsys)


def test_interrupt_is_one_line_exit_130(train_args, capsys, monkeypatch):
    def interrupt(*args, **kw):
        raise KeyboardInterrupt

    monkeypatch.setattr(loso, "run_loso", interrupt)
    assert main(train_args) == 130
    assert "interrupted" in error_line(capsys)


def test_unexpected_error_shows_its_traceback_exit_70(train_args, capsys, monkeypatch):
    monkeypatch.setattr(loso, "run_loso", lambda *a, **kw: 1 / 0)
    assert main(train_args) == 70
    err = capsys.readouterr().err.splitlines()
    assert err[0].startswith("Traceback")
    assert err[-1].startswith("htnet: error: unexpected ZeroDivisionError: division by zero")


def test_debug_shows_the_traceback_and_keeps_the_exit_status(train_args, capsys, monkeypatch):
    assert main(["--debug"] + train_args + ["--set", "epochs=0"]) == 2
    err = capsys.readouterr().err.splitlines()
    assert err[0].startswith("Traceback") and "ConfigError" in "\n".join(err)
    assert err[-1].startswith("htnet: error: ") and "epochs=0" in err[-1]
    monkeypatch.setenv("HTNET_DEBUG", "1")
    assert main(train_args + ["--set", "epochs=0"]) == 2
    assert capsys.readouterr().err.startswith("Traceback")


# --------------------------------------------------------------------------- warnings


def test_corrupt_landmark_cache_is_one_warning_line(train_args, tmp_path, capsys, monkeypatch):
    cache = tmp_path / "cache"
    cache.mkdir()
    (cache / "landmarks-official.json").write_text('{"ab')
    monkeypatch.setenv("HTNET_CACHE", str(cache))
    monkeypatch.setattr(regions, "detect_landmarks", lambda img: regions.FALLBACK_LANDMARKS)
    assert main(train_args + ["--set", "epochs=1", "--set", "max_folds=1"]) == 0
    warned = [line for line in capsys.readouterr().err.splitlines() if line.startswith("htnet:")]
    assert len(warned) == 1 and warned[0].startswith("htnet: warning: ")
    assert str(cache / "landmarks-official.json") in warned[0]
    assert (cache / "landmarks-official.json.corrupt").read_text() == '{"ab'
    assert regions.read_cache(cache / "landmarks-official.json")  # written again, valid
