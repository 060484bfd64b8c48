"""The run store's reliability: checked inputs, damaged files, completion, locking, provenance,
one store for runs, inner stores and leave-one-dataset-out results, and the trainer choice."""

import dataclasses
import json
import shlex
import shutil
import subprocess
import sys
import time
import warnings
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from htnetlib.config import ConfigError, apply_overrides, profile_config
from htnetlib import io
from htnetlib.training import jobs
from htnetlib.training import loso
from htnetlib.training import stamps as stamps_mod
from htnetlib.training import store as store_mod
from htnetlib.data import DataError
from htnetlib.errors import StoreWarning
from htnetlib.training import lodo as lodo_mod
from htnetlib.training import nested as nested_mod
from htnetlib.training import trainer as trainer_mod
from htnetlib.config import Config
from htnetlib.training.store import RunError, is_complete, load_run, run_id
from htnetlib.training.loso import run_loso

TINY = Config(dim=8, heads=1, block_repeats=(1, 1, 1), epochs=4, lr=1e-3, max_folds=3)
RESULTS = Path(__file__).resolve().parents[1] / "results"
COMMITTED = sorted((RESULTS / "runs").glob("*/config.json"))
COMMITTED_LODO = sorted((RESULTS / "tables" / "lodo").glob("*/config.json"))
# A run trained now: its four files and its fold stamps (folds.json).
NEW_RUN_FILES = store_mod.RUN_FILES + (store_mod.STAMPS_NAME,)


@pytest.fixture(autouse=True)
def own_cache(tmp_path_factory, monkeypatch):
    """The trainer choice's cache in a folder of this module, not the user's."""
    monkeypatch.setenv("HTNET_CACHE", str(tmp_path_factory.getbasetemp() / "cache"))


@pytest.fixture(scope="module")
def reference(synthetic, tmp_path_factory):
    """An uninterrupted smoke run of TINY, seed 0."""
    return load_run(run_loso(synthetic, TINY, runs_dir=tmp_path_factory.mktemp("ref"),
                             profile="smoke", progress=False))


def count_training(monkeypatch) -> list:
    """Record every fold trained from now on."""
    calls, real = [], jobs.train_fold
    monkeypatch.setattr(jobs, "train_fold", lambda *a, **k: calls.append(1) or real(*a, **k))
    return calls


class Killed(Exception):
    """Stands for the process being killed at that point."""


def killed(*args, **kwargs):
    raise Killed


def interrupted_before_assembly(synthetic, runs_dir, monkeypatch, config=TINY) -> Path:
    """A run whose folds are all stored but which was never assembled."""
    with monkeypatch.context() as m:
        m.setattr(loso, "assemble", killed)
        with pytest.raises(Killed):
            run_loso(synthetic, config, runs_dir=runs_dir, profile="smoke", trainer="loop",
                     progress=False)
    (run_dir,) = runs_dir.iterdir()
    assert sorted(p.name for p in (run_dir / "folds").iterdir()) == [
        f"{k:02d}.npz" for k in range(config.max_folds)]
    return run_dir


def assert_same_run(run, reference):
    np.testing.assert_array_equal(run.epochs["pred"], reference.epochs["pred"])
    pd.testing.assert_frame_equal(run.predictions, reference.predictions)
    assert sorted(p.name for p in run.path.iterdir()) == sorted(NEW_RUN_FILES)
    assert sorted(p.name for p in run.path.parent.iterdir()) == [run.path.name]  # no lock file


# --------------------------------------------------------------------------- checked inputs


@pytest.mark.parametrize("config, seed", [
    (dataclasses.replace(TINY, dim=0), 0),
    (dataclasses.replace(TINY, input_scale=float("nan")), 0),
    (TINY, -1), (TINY, 1.5), (TINY, 2**31)],
    ids=["dim=0", "input_scale=nan", "seed=-1", "seed=1.5", "seed=2**31"])
def test_bad_config_or_seed_fails_before_any_folder(synthetic, tmp_path, config, seed):
    with pytest.raises(ConfigError):
        run_loso(synthetic, config, seed=seed, runs_dir=tmp_path / "runs", progress=False)
    assert not (tmp_path / "runs").exists()


# --------------------------------------------------------------------------- reading runs


def _set_json(name, text):
    return lambda d: (d / name).write_text(text)


DAMAGE = {
    "no folder": (lambda d: shutil.rmtree(d), "no such run folder"),
    "empty folder": (lambda d: [p.unlink() for p in d.iterdir()], "missing config.json"),
    "missing file": (lambda d: (d / "metrics.json").unlink(), "missing metrics.json"),
    "unfinished": (lambda d: _set_json("config.json", '{"run_id": "x"}\n')(d),
                   "config.json: the run is not finished"),
    "bad config JSON": (_set_json("config.json", '{"run_id": '), "config.json: not readable"),
    "config not an object": (_set_json("config.json", "[]"), "config.json: holds a JSON list"),
    "bad metrics JSON": (_set_json("metrics.json", ""), "metrics.json: not readable"),
    "garbage npz": (lambda d: (d / "epochs.npz").write_bytes(b"junk"), "epochs.npz: not a"),
    "truncated npz": (lambda d: (d / "epochs.npz").write_bytes(
        (d / "epochs.npz").read_bytes()[:300]), "epochs.npz: not a"),
    "npz without pred": (lambda d: np.savez(d / "epochs.npz", epoch=np.arange(3)),
                         r"epochs.npz: lacks pred"),
    "empty CSV": (_set_json("predictions.csv", ""), "predictions.csv: not a readable CSV"),
    "CSV without column": (lambda d: pd.read_csv(d / "predictions.csv").drop(
        columns="oracle").to_csv(d / "predictions.csv", index=False),
        "predictions.csv: lacks column"),
    "short CSV": (lambda d: pd.read_csv(d / "predictions.csv")[:5].to_csv(
        d / "predictions.csv", index=False),
                  r"predictions.csv: 5 rows, but config.json records \d+ samples"),
}


@pytest.mark.parametrize("case", DAMAGE)
def test_load_run_names_what_is_wrong(reference, tmp_path, case):
    damage, message = DAMAGE[case]
    run_dir = shutil.copytree(reference.path, tmp_path / reference.path.name)
    damage(run_dir)
    with pytest.raises(RunError, match=message) as err:
        load_run(run_dir)
    assert isinstance(err.value, DataError) and str(run_dir) in str(err.value)
    assert "\n" not in str(err.value)
    if case in ("no folder", "empty folder", "missing file", "unfinished", "bad config JSON"):
        assert not is_complete(run_dir)  # run_loso trains or assembles such a run again


# --------------------------------------------------------------------------- damaged folds


def _other_subject(folds):
    shutil.copy(folds / "00.npz", folds / "01.npz")


def _fewer_epochs(folds):
    with np.load(folds / "01.npz") as f:
        arrays = {k: f[k] for k in store_mod.FOLD_KEYS}
    np.savez(folds / "01.npz", **{**arrays, "pred": arrays["pred"][:-1]})


FOLD_DAMAGE = {
    "empty": lambda folds: (folds / "01.npz").write_bytes(b""),
    "truncated": lambda folds: (folds / "01.npz").write_bytes(
        (folds / "01.npz").read_bytes()[:200]),
    "other subject": _other_subject,
    "fewer epochs": _fewer_epochs,
}


@pytest.mark.parametrize("case", FOLD_DAMAGE)
def test_damaged_fold_is_set_aside_and_trained_again(synthetic, reference, tmp_path, monkeypatch,
                                                     capsys, case):
    run_dir = interrupted_before_assembly(synthetic, tmp_path, monkeypatch)
    FOLD_DAMAGE[case](run_dir / "folds")
    capsys.readouterr()
    calls = count_training(monkeypatch)
    with pytest.warns(StoreWarning) as caught:
        assert run_loso(synthetic, TINY, runs_dir=tmp_path, profile="smoke", trainer="loop",
                        progress=False) == run_dir
    (warning,) = [str(w.message) for w in caught if w.category is StoreWarning]
    assert "01.npz" in warning and "01.npz.corrupt" in warning and "\n" not in warning
    assert capsys.readouterr().err == ""  # the library itself prints nothing
    assert len(calls) == 1  # only the damaged fold was trained again
    assert_same_run(load_run(run_dir), reference)


def test_cli_shows_a_store_warning_as_one_line(synthetic_root, synthetic, tmp_path, monkeypatch,
                                               capsys):
    from htnetlib.cli import main

    sets = ["dim=8", "heads=1", "block_repeats=[1,1,1]", "epochs=2", "max_folds=2"]
    cfg = apply_overrides(profile_config("smoke"), sets)
    run_dir = interrupted_before_assembly(synthetic, tmp_path, monkeypatch, cfg)
    FOLD_DAMAGE["empty"](run_dir / "folds")
    capsys.readouterr()
    argv = ["train", "--profile", "smoke", "--data", str(synthetic_root), "--out", str(tmp_path),
            "--trainer", "loop"]
    for item in sets:
        argv += ["--set", item]
    with warnings.catch_warnings():
        warnings.simplefilter("default")
        assert main(argv) == 0
    lines = [line for line in capsys.readouterr().err.splitlines() if "warning" in line]
    assert len(lines) == 1 and lines[0].startswith("htnet: warning: ")
    assert "01.npz.corrupt, training the fold again" in lines[0]
    assert is_complete(run_dir)


# --------------------------------------------------------------------------- completion


def test_interrupted_assembly_is_assembled_again(synthetic, reference, tmp_path, monkeypatch):
    write_json = io.write_json

    def killed_before_final_config(path, obj):
        if Path(path).name == "config.json" and "n_folds" in obj:
            raise Killed
        write_json(path, obj)

    with monkeypatch.context() as m:
        m.setattr(jobs, "write_json", killed_before_final_config)  # produce writes it
        with pytest.raises(Killed):
            run_loso(synthetic, TINY, runs_dir=tmp_path, profile="smoke", progress=False)
    (run_dir,) = tmp_path.iterdir()
    assert all((run_dir / f).is_file() for f in store_mod.RUN_FILES) and (run_dir / "folds").is_dir()
    assert not is_complete(run_dir)
    with pytest.raises(RunError, match="not finished"):
        load_run(run_dir)
    calls = count_training(monkeypatch)
    assert run_loso(synthetic, TINY, runs_dir=tmp_path, profile="smoke",
                    progress=False) == run_dir
    assert calls == []  # assembled from the stored folds
    run = load_run(run_dir)
    assert run.meta["n_folds"] == 3
    assert_same_run(run, reference)


def test_leftovers_of_a_finished_run_are_removed(reference, synthetic, tmp_path):
    """Killed after the final config.json: folds/ and the lock file are left, and cleared."""
    run_dir = shutil.copytree(reference.path, tmp_path / reference.path.name)
    (run_dir / "folds").mkdir()
    (run_dir / "folds" / "00.npz").write_bytes(b"")
    (run_dir / ".lock").touch()
    mtime = (run_dir / "metrics.json").stat().st_mtime_ns
    assert run_loso(synthetic, TINY, runs_dir=tmp_path, profile="smoke",
                    progress=False) == run_dir
    assert sorted(p.name for p in run_dir.iterdir()) == sorted(NEW_RUN_FILES)
    assert (run_dir / "metrics.json").stat().st_mtime_ns == mtime


def test_retrain_under_the_lock(reference, synthetic, tmp_path):
    run_dir = shutil.copytree(reference.path, tmp_path / reference.path.name)
    mtime = (run_dir / "metrics.json").stat().st_mtime_ns
    run_loso(synthetic, TINY, runs_dir=tmp_path, profile="smoke", retrain=True, progress=False)
    assert (run_dir / "metrics.json").stat().st_mtime_ns != mtime
    assert_same_run(load_run(run_dir), reference)


# --------------------------------------------------------------------------- two trainers

TRAINER = """
import sys, time, warnings
from pathlib import Path
from htnetlib import config as config_mod
from htnetlib.data import load_composite
from htnetlib.training import jobs, loso

warnings.showwarning = lambda message, *a, **k: print(f"warning: {message}", file=sys.stderr)
root, runs, go = sys.argv[1:]
calls, real = [], jobs.train_fold
def held(*a, **k):
    while not Path(go).exists():  # the first trainer holds the lock until the test says go
        time.sleep(0.05)
    calls.append(1)
    return real(*a, **k)
jobs.train_fold = held
cfg = config_mod.Config(dim=8, heads=1, block_repeats=(1, 1, 1), epochs=4, lr=1e-3, max_folds=3)
run = loso.run_loso(load_composite(root), cfg, runs_dir=runs, profile="smoke", trainer="loop",
                    progress=False)
print(run.name, len(calls))
"""


def _wait_for(condition, what, procs, seconds=120):
    deadline = time.time() + seconds
    while not condition():
        if time.time() > deadline or any(p.poll() not in (None, 0) for p in procs):
            pytest.fail(f"gave up waiting for {what}")
        time.sleep(0.05)


@pytest.mark.slow
def test_two_trainers_on_one_run_train_it_once(synthetic_root, reference, tmp_path):
    runs, go = tmp_path / "runs", tmp_path / "go"
    args = [sys.executable, "-c", TRAINER, str(synthetic_root), str(runs), str(go)]
    errs = [tmp_path / "first.err", tmp_path / "second.err"]

    def start(err):
        with open(err, "w") as stderr:
            return subprocess.Popen(args, stdout=subprocess.PIPE, stderr=stderr, text=True)

    first = start(errs[0])
    # config.json is written under the lock: the first trainer holds it
    _wait_for(lambda: list(runs.glob("*/config.json")), "the first trainer", [first])
    second = start(errs[1])
    _wait_for(lambda: "waiting" in errs[1].read_text(), "the second trainer to wait",
              [first, second])
    go.touch()
    out = [p.communicate(timeout=300)[0].split() for p in (first, second)]
    for p, err in zip((first, second), errs):
        assert p.returncode == 0, err.read_text()
    waited = errs[1].read_text().strip().splitlines()
    assert len(waited) == 1 and "another process is training this run" in waited[0]
    (run_dir,) = runs.iterdir()
    assert out == [[run_dir.name, "3"], [run_dir.name, "0"]]  # the second reused the run
    assert_same_run(load_run(run_dir), reference)


# --------------------------------------------------------------------------- provenance


def rebuilt_config(command: str) -> tuple[Config, int, str]:
    """The configuration, seed and profile an ``htnet train`` command line trains."""
    from htnetlib.cli.app import build_parser

    argv = shlex.split(command)
    assert argv[:2] == ["htnet", "train"]
    args = build_parser().parse_args(argv[1:])
    config = apply_overrides(profile_config(args.profile, args.model), args.set or [])
    return config, args.seed, args.profile


def test_train_command_round_trips():
    cfg = dataclasses.replace(profile_config("cpu", "ststnet"), block_repeats=(1, 2, 3),
                              max_folds=None, shuffle=True, lr=1 / 3, regions="corrected")
    command = store_mod.train_command(cfg, 7, "cpu")
    assert command.startswith("htnet train --profile cpu --model ststnet --seed 7 --set ")
    assert rebuilt_config(command) == (cfg, 7, "cpu")
    assert store_mod.train_command(profile_config("smoke"), 0, "smoke") == \
        "htnet train --profile smoke --model htnet --seed 0"
    # a run without a profile is written against the paper profile (Config's defaults)
    assert rebuilt_config(store_mod.train_command(TINY, 3, None)) == (TINY, 3, "paper")


@pytest.mark.parametrize("model", ["htnet", "logreg"])
def test_new_run_records_portable_provenance(synthetic, synthetic_root, tmp_path, model):
    cfg = TINY if model == "htnet" else profile_config("smoke", model)
    meta = load_run(run_loso(synthetic, cfg, runs_dir=tmp_path, profile="smoke",
                             progress=False)).meta
    assert meta["data_root"] == synthetic_root.name
    assert rebuilt_config(meta["command"]) == (cfg, 0, "smoke")
    assert meta["config"] == cfg.stored_dict()
    assert run_id(Config.from_dict(meta["config"]), meta["seed"], meta["data_fingerprint"],
                  meta["profile"]) == meta["run_id"]
    assert meta["git_commit"].endswith("+dirty") == bool(meta.get("git_dirty_files"))
    if getattr(synthetic, "manifest_status", None) is not None:
        assert meta["data_manifest"] == synthetic.manifest_status


def test_dirty_tree_names_its_files(synthetic, tmp_path, monkeypatch):
    monkeypatch.setattr(io, "git_dirty_files", lambda: ["htnetlib/train.py"])
    meta = load_run(run_loso(synthetic, TINY, runs_dir=tmp_path, progress=False)).meta
    assert meta["git_dirty_files"] == ["htnetlib/train.py"]


@pytest.mark.parametrize("path", COMMITTED, ids=lambda p: p.parent.name)
def test_committed_run_is_complete_portable_and_keeps_its_id(path):
    text = path.read_text()
    meta = json.loads(text)
    assert text == json.dumps(meta, indent=2, sort_keys=True) + "\n"
    assert is_complete(path.parent) and load_run(path.parent).meta == meta
    config = Config.from_dict(meta["config"])
    assert run_id(config, meta["seed"], meta["data_fingerprint"], meta["profile"]) == \
        meta["run_id"] == path.parent.name
    assert meta["config"] == config.stored_dict()
    assert "/" not in meta["data_root"]
    assert rebuilt_config(meta["command"]) == (config, meta["seed"], meta["profile"])
    if meta["git_commit"].endswith("+dirty"):
        assert meta["git_dirty_files"]


# --------------------------------------------------------------------------- one store


@pytest.mark.parametrize("path", COMMITTED + COMMITTED_LODO,
                         ids=lambda p: f"{p.parent.parent.name}/{p.parent.name}")
def test_committed_result_keeps_its_id_and_loads_through_the_one_store(path):
    """Every committed run, inner store and leave-one-dataset-out result: its id recomputed, its
    folder exactly its kind's files, finished and loaded by the one store."""
    folder, meta = path.parent, json.loads(path.read_text())
    config = Config.from_dict(meta["config"])
    lodo = folder.parent.name == "lodo"
    kind = store_mod.LODO if lodo else store_mod.RUN
    make_id = lodo_mod.lodo_id if lodo else run_id
    assert make_id(config, meta["seed"], meta["data_fingerprint"], meta["profile"]) == \
        folder.name == meta["lodo_id" if lodo else "run_id"]
    inner = folder / nested_mod.INNER_DIR
    names = sorted(p.name for p in folder.iterdir() if p != inner)
    stamps = [kind.stamps] if kind.stamps and kind.stamps in names else []  # runs since stamps
    assert names == sorted(kind.files + tuple(stamps))
    assert store_mod.is_complete(folder, kind)
    stored = store_mod.load_stored(folder, kind)
    assert stored["meta"] == meta and sorted(stored) == sorted(["path", "meta", *kind.files[1:]])
    if lodo:
        assert lodo_mod.lodo_complete(folder) and lodo_mod.load_lodo(folder)["meta"] == meta
    if inner.exists():
        assert sorted(p.name for p in inner.iterdir()) == sorted(store_mod.INNER.files)
        assert nested_mod.nested_complete(folder)
        loaded = nested_mod.load_inner(folder)
        assert loaded["meta"]["outer_run_id"] == folder.name
        assert loaded["pred"].shape[:2] == (loaded["meta"]["n_folds"], loaded["meta"]["epochs"])


def test_the_three_ids_are_one_hash():
    payload = {"config": TINY.to_dict(), "seed": 3, "data": "abc"}
    assert run_id(TINY, 3, "abc", "smoke") == store_mod.hash_id("htnet-smoke-s3", payload)
    assert lodo_mod.lodo_id(TINY, 3, "abc") == store_mod.hash_id(
        "lodo-htnet-custom-s3", {**payload, "protocol": "lodo"})


def test_unfinished_lodo_is_not_finished(tmp_path):
    """A leave-one-dataset-out folder whose config.json lacks n_samples (written before its
    fits) is unfinished, whatever files exist."""
    folder = tmp_path / "lodo-x"
    folder.mkdir()
    for name in store_mod.LODO.files:
        (folder / name).write_text("{}")
    (folder / "config.json").write_text('{"lodo_id": "lodo-x"}')
    assert not lodo_mod.lodo_complete(folder)
    with pytest.raises(RunError, match="config.json: the leave-one-dataset-out result is not "
                                       "finished"):
        lodo_mod.load_lodo(folder)


# --------------------------------------------------------------------------- trainer choice


def test_trainer_changes_neither_id_nor_predictions(synthetic, tmp_path):
    runs = {t: load_run(run_loso(synthetic, TINY, runs_dir=tmp_path / t, profile="smoke",
                                 trainer=t, progress=False)) for t in ("loop", "grouped")}
    loop, grouped = runs["loop"], runs["grouped"]
    assert loop.path.name == grouped.path.name
    for name, run in runs.items():  # each fold's stamp names the trainer that trained it
        assert [s["trainer"] for s in stamps_mod.fold_stamps(run.path)] == [name] * TINY.max_folds
    assert (loop.meta["trainer"], grouped.meta["trainer"]) == ("loop", "grouped")
    np.testing.assert_array_equal(loop.epochs["pred"], grouped.epochs["pred"])
    pd.testing.assert_frame_equal(loop.predictions, grouped.predictions)
    np.testing.assert_array_equal(loop.epochs["train_acc"], grouped.epochs["train_acc"])
    np.testing.assert_allclose(loop.epochs["train_loss"], grouped.epochs["train_loss"],
                               rtol=1e-4, atol=1e-6)


def test_auto_measures_once_and_records_its_choice(synthetic, tmp_path, monkeypatch):
    monkeypatch.setenv("HTNET_CACHE", str(tmp_path / "cache"))
    measured = []
    real = trainer_mod.measure
    monkeypatch.setattr(trainer_mod, "measure", lambda *a: measured.append(1) or real(*a))
    first = load_run(run_loso(synthetic, TINY, runs_dir=tmp_path / "a", profile="smoke",
                              progress=False))
    timing = first.meta["trainer_timing"]
    assert first.meta["trainer"] in ("loop", "grouped") and timing["cached"] is False
    assert timing["loop_seconds"] > 0 and timing["grouped_seconds"] > 0
    assert timing["measured_folds"] == 3 and timing["measured_epochs"] == 2
    faster = min(("loop", "grouped"), key=lambda t: timing[f"{t}_projected_seconds"])
    assert first.meta["trainer"] == faster
    cache = json.loads((tmp_path / "cache" / trainer_mod.CACHE_NAME).read_text())
    assert [v["trainer"] for v in cache.values()] == [faster]
    # measured once: a second run of the configuration reads the cached decision
    second = load_run(run_loso(synthetic, TINY, seed=1, runs_dir=tmp_path / "b",
                               profile="smoke", progress=False))
    assert measured == [1] and second.meta["trainer"] == faster
    assert second.meta["trainer_timing"]["cached"] is True
    # the choice is in config.json, never in the id
    assert first.path.name == run_id(TINY, 0, first.meta["data_fingerprint"], "smoke")
    # a model the grouped trainer does not implement trains with loop, unmeasured
    logreg = load_run(run_loso(synthetic, profile_config("smoke", "logreg"),
                               runs_dir=tmp_path / "c", profile="smoke", progress=False))
    assert logreg.meta["trainer"] == "loop" and "trainer_timing" not in logreg.meta
    assert measured == [1]
