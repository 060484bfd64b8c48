"""Holes found by a fault probe (bad inputs and kills tried as a new user would), one test each.

Workers end with their parent (SIGINT, SIGKILL); allocator failures, tiny frames and a damaged
table in an output folder are one-line errors with the exit status of :mod:`htnetlib.errors`;
a finished run holds no temporary files, a damaged one is trained again; ``--debug`` keeps the
exit status; files get the user's umask; an error never shares a line with a progress bar.
"""

from __future__ import annotations

import json
import os
import shlex
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import cv2
import numpy as np
import pandas as pd
import pytest
from cli_helpers import error_line

from htnetlib import errors
from htnetlib.cli import app
from htnetlib.cli.app import main
from htnetlib.config import apply_overrides, profile_config
from htnetlib.errors import DataError, TrainingError
from htnetlib.training import jobs, loso, store

ROOT = Path(__file__).resolve().parents[1]
linux_only = pytest.mark.skipif(sys.platform != "linux", reason="finds processes in /proc")


def final_error_line(capsys) -> str:
    """The error line of a command that trained: after its progress bar, on a line of its
    own, the last on stderr, with no traceback."""
    err = capsys.readouterr().err
    lines = err.splitlines()
    assert "Traceback" not in err and lines[-1].startswith("htnet: error: "), err
    assert sum(line.startswith("htnet: error: ") for line in lines) == 1, err
    return lines[-1]


@pytest.fixture(scope="module")
def stored_run(synthetic, synthetic_root, tmp_path_factory) -> Path:
    """A finished smoke run (the one ``htnet train --profile smoke`` makes), trained once."""
    config = profile_config("smoke", "htnet")
    return loso.run_loso(synthetic, config, seed=0, profile="smoke", trainer="loop",
                         runs_dir=tmp_path_factory.mktemp("stored") / "runs", progress=False)


def copy_run(run: Path, tmp_path: Path) -> Path:
    """A copy of ``run`` in a runs folder of its own under ``tmp_path``."""
    target = tmp_path / "runs" / run.name
    shutil.copytree(run, target)
    return target


def train_argv(run: Path, root: Path, *extra: str) -> list[str]:
    """``htnet train`` arguments that train (or find) ``run`` in its runs folder: the command
    config.json records, with --data and --out."""
    command = json.loads((run / "config.json").read_text())["command"]
    return shlex.split(command)[1:] + ["--trainer", "loop", "--data", str(root),
                                       "--out", str(run.parent), *extra]


@pytest.fixture(scope="module")
def model_dir(synthetic, tmp_path_factory) -> Path:
    """A model folder fitted with the smoke profile on the synthetic release."""
    from htnetlib.predict import fit

    folder = tmp_path_factory.mktemp("model") / "smoke"
    fit(synthetic, profile_config("smoke", "htnet"), seed=0, profile="smoke").save(folder)
    return folder


def edited_model(model_dir: Path, tmp_path: Path, change) -> Path:
    """A copy of ``model_dir`` whose model.json ``change(meta)`` edited."""
    folder = tmp_path / "model"
    shutil.copytree(model_dir, folder)
    meta = json.loads((folder / "model.json").read_text())
    change(meta)
    (folder / "model.json").write_text(json.dumps(meta))
    return folder


# --------------------------------------------------------------------------- 1 workers


def children(pid: int) -> set[int]:
    """The child processes of ``pid`` (every thread's children, from /proc)."""
    out = set()
    for task in Path(f"/proc/{pid}/task").glob("*/children"):
        try:
            out |= {int(c) for c in task.read_text().split()}
        except OSError:
            pass
    return out


def alive(pid: int) -> bool:
    """Whether ``pid`` runs (a zombie, dead but not yet reaped, does not)."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return False
    return state != "Z"


def wait_gone(pids: set[int], seconds: float) -> set[int]:
    """Those of ``pids`` still alive after up to ``seconds``."""
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        if not any(alive(p) for p in pids):
            return set()
        time.sleep(0.05)
    return {p for p in pids if alive(p)}


def start_training(root: Path, out: Path) -> subprocess.Popen:
    """``htnet train`` of a slow smoke run in two worker processes (``--trainer loop``: auto
    may pick the grouped trainer, which has none), with its folds started:
    returns once both workers run and a fold is stored or a second has passed."""
    proc = subprocess.Popen([sys.executable, "-m", "htnetlib.cli", "train", "--profile", "smoke",
                             "--workers", "2", "--trainer", "loop", "--set", "epochs=200",
                             "--data", str(root), "--out", str(out)], cwd=ROOT,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    end = time.monotonic() + 120
    while len(children(proc.pid)) < 2 and proc.poll() is None and time.monotonic() < end:
        time.sleep(0.05)  # spawned workers (and multiprocessing's resource tracker)
    assert proc.poll() is None, proc.communicate()
    end = time.monotonic() + 1
    while not list(out.glob("*/folds/*.npz")) and time.monotonic() < end:
        time.sleep(0.05)
    return proc


@pytest.mark.slow
@linux_only
def test_workers_end_with_their_parent_and_the_run_resumes(synthetic, synthetic_root, tmp_path):
    # Ctrl-C: exit 130 within seconds, not after every queued fold; no worker survives
    out = tmp_path / "interrupted"
    proc = start_training(synthetic_root, out)
    workers = children(proc.pid)
    started = time.monotonic()
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=30)
    assert proc.returncode == 130, err
    assert time.monotonic() - started < 8, err
    assert err.splitlines()[-1] == "htnet: error: interrupted (run it again to resume)"
    assert not wait_gone(workers, 3), "a worker outlived its interrupted parent"
    assert not list(out.glob("*/.lock"))  # released: the next call resumes at once

    # kill -9 of a fresh one: the workers notice within ~2 s, and store no fold afterwards
    out = tmp_path / "killed"
    proc = start_training(synthetic_root, out)
    workers = children(proc.pid)
    proc.kill()
    proc.communicate(timeout=30)
    folds = sorted(out.glob("*/folds/*.npz"))
    assert not wait_gone(workers, 2.5), "a worker outlived its killed parent"
    time.sleep(0.5)
    assert sorted(out.glob("*/folds/*.npz")) == folds, "a fold was stored after the parent died"

    # the third call finishes the run, with the predictions of an uninterrupted one
    done = subprocess.run([sys.executable, "-m", "htnetlib.cli", "train", "--profile", "smoke",
                           "--workers", "2", "--trainer", "loop", "--set", "epochs=200", "--data",
                           str(synthetic_root), "--out", str(out)], cwd=ROOT,
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    run = Path(done.stdout.splitlines()[0])
    config = apply_overrides(profile_config("smoke", "htnet"), ["epochs=200"])
    whole = loso.run_loso(synthetic, config, seed=0, profile="smoke", trainer="loop",
                          runs_dir=tmp_path / "whole", progress=False)
    assert run.name == whole.name
    pd.testing.assert_frame_equal(store.read_predictions(run / "predictions.csv"),
                                  store.read_predictions(whole / "predictions.csv"))
    assert sorted(p.name for p in run.iterdir()) == sorted(store.RUN_FILES
                                                         + (store.STAMPS_NAME,))


def test_a_worker_whose_parent_is_gone_stores_nothing(monkeypatch, tmp_path):
    """The check right before a fold is stored (the watcher thread aside)."""
    monkeypatch.setattr(jobs, "_PARENT", os.getppid() + 1)
    monkeypatch.setattr(jobs, "train_fold", lambda *a, **kw: object())
    monkeypatch.setattr(os, "_exit", lambda code: (_ for _ in ()).throw(SystemExit(code)))
    job = dict(config=None, x_train=None, y_train=None, x_test=None, y_test=None, seed=0,
               device="cpu", name="fold", subject="s1", path=tmp_path / "00.npz")
    with pytest.raises(SystemExit):
        jobs.fold_job(job, None)
    assert not (tmp_path / "00.npz").exists()
    assert not jobs.parent_alive()


# --------------------------------------------------------------------------- 2 tracebacks


@pytest.mark.parametrize("message, shown", [
    ("[enforce fail at alloc_cpu.cpp:127] err == 0. DefaultCPUAllocator: can't allocate memory: "
     "you tried to allocate 588000000000 bytes. Error code 12 (Cannot allocate memory)",
     "out of memory (tried to allocate 547.6 GiB)"),
    ("cannot allocate memory", "out of memory"),
    ("DefaultCPUAllocator: not enough memory: you tried to allocate 2048 bytes",
     "out of memory (tried to allocate 2.0 KiB)"),
    ("CUDA out of memory. Tried to allocate 2.00 GiB (GPU 0; 79 GiB total)",
     "CUDA out of memory (tried to allocate 2.00 GiB)"),
])
def test_allocator_messages_are_out_of_memory(message, shown):
    assert errors.exit_code(RuntimeError(message)) == errors.EXIT_RUNTIME
    assert errors.out_of_memory(RuntimeError(message)) == shown
    assert errors.out_of_memory(RuntimeError("shape mismatch")) is None
    assert errors.out_of_memory(ValueError("out of memory")) is None


def test_a_model_too_large_to_allocate_is_one_line_exit_4(synthetic_root, tmp_path, capsys):
    assert main(["train", "--profile", "smoke", "--set", "dim=1000000000", "--trainer", "loop",
                 "--data", str(synthetic_root), "--out", str(tmp_path / "runs")]) == 4
    line = final_error_line(capsys)
    assert "out of memory (tried to allocate" in line and "GiB" in line, line


def test_predict_with_a_model_json_too_large_to_allocate_is_exit_4(model_dir, tmp_path, capsys):
    folder = edited_model(model_dir, tmp_path, lambda m: m["config"].update(dim=10**9))
    frame = tmp_path / "frame.png"
    cv2.imwrite(str(frame), np.zeros((64, 64, 3), np.uint8))
    assert main(["predict", "--model", str(folder), "--onset", str(frame),
                 "--apex", str(frame)]) == 4
    assert "out of memory" in error_line(capsys)


@pytest.mark.parametrize("side", [8, 1])
def test_predict_on_frames_too_small_for_a_face_is_exit_3(model_dir, tmp_path, capsys, side):
    onset, apex = tmp_path / "onset.png", tmp_path / "apex.png"
    for path in (onset, apex):
        cv2.imwrite(str(path), np.full((side, side, 3), 128, np.uint8))
    assert main(["predict", "--model", str(model_dir), "--onset", str(onset),
                 "--apex", str(apex)]) == 3
    line = error_line(capsys)
    assert str(onset) in line and f"{side}x{side} pixels, too small for a face" in line
    sequence = tmp_path / "sequence"
    sequence.mkdir()
    for k in range(3):
        cv2.imwrite(str(sequence / f"img{k}.png"), np.full((side, side, 3), 100 + k, np.uint8))
    assert main(["predict", "--model", str(model_dir), "--sequence", str(sequence)]) == 3
    line = error_line(capsys)
    assert "img0.png" in line and f"{side}x{side} pixels" in line


def test_a_detector_failing_on_a_degenerate_frame_is_a_data_error():
    from htnetlib.data import flow

    class Failing:
        min_face_size = 20

        def detect(self, image, landmarks=False):
            raise RuntimeError("torch.cat(): expected a non-empty list of Tensors")

    frame = np.zeros((40, 30, 3), np.uint8)
    with pytest.raises(DataError, match=r"face detection failed on the 30x40 onset frame"):
        flow.crop_face(frame, frame, detector=Failing())
    with pytest.raises(DataError, match=r"the image is 12x12 pixels, too small for a face"):
        flow.detect_landmarks(np.zeros((12, 12), np.uint8), detector=Failing())


def test_preprocess_into_a_folder_with_a_damaged_table_changes_nothing(tmp_path, capsys):
    from test_preprocess import make_casme2

    raw = make_casme2(tmp_path / "raw")
    out = tmp_path / "out"
    out.mkdir()
    table = out / "combined_3_class2_for_optical_flow.csv"
    table.write_bytes(np.random.default_rng(0).integers(0, 256, 4096, dtype=np.uint8).tobytes())
    before = {p: p.read_bytes() for p in out.rglob("*")}
    assert main(["preprocess", "--dataset", "casme2", "--root", str(raw),
                 "--out", str(out)]) == 3
    line = error_line(capsys)
    assert str(table) in line and "not a readable table" in line
    assert {p: p.read_bytes() for p in out.rglob("*")} == before


# --------------------------------------------------------------------------- 3 smaller defects


def test_temporary_files_of_a_killed_final_write_are_removed(stored_run, tmp_path, monkeypatch,
                                                             synthetic):
    run = copy_run(stored_run, tmp_path)
    for name in (".predictions.csv.k2j3h4.csv", ".config.json.x8y9z0.json"):
        (run / name).write_text("half")
    assert store.has_leftovers(run) and not store.reusable(run)
    monkeypatch.setattr(jobs, "train_jobs", lambda *a, **kw: pytest.fail("trained again"))
    assert loso.run_loso(synthetic, profile_config("smoke", "htnet"), seed=0, profile="smoke",
                         runs_dir=run.parent, progress=False) == run
    assert sorted(p.name for p in run.iterdir()) == sorted(store.RUN_FILES
                                                         + (store.STAMPS_NAME,))
    assert store.reusable(run)


def test_gitignore_ignores_temporary_files_but_no_committed_file():
    if shutil.which("git") is None or not (ROOT / ".git").exists():
        pytest.skip("not a git checkout")
    temps = ["results/runs/x/.predictions.csv.abc.csv", "results/runs/x/.config.json.abc.json",
             "results/tables/lodo/y/.epochs.npz.abc.npz", "results/figures/.f.png.abc.png",
             "results/tables/.table2.md.abc.md"]
    done = subprocess.run(["git", "check-ignore", *temps], cwd=ROOT, capture_output=True,
                          text=True)
    assert done.stdout.split() == temps
    tracked = subprocess.run(["git", "ls-files", "results"], cwd=ROOT, capture_output=True,
                             text=True).stdout.split()
    assert not [p for p in tracked if "/." in p]


def test_a_run_with_a_truncated_file_is_not_finished(stored_run, tmp_path):
    for name in ("metrics.json", "predictions.csv"):
        run = copy_run(stored_run, tmp_path / name)
        text = (run / name).read_text()
        (run / name).write_text(text[: len(text) // 3] if name.endswith("json") else "")
        assert not store.is_complete(run) and not store.reusable(run)
        assert name in store.damage(run)


def test_grid_dry_run_lists_a_run_with_a_truncated_metrics_json(synthetic, synthetic_root,
                                                                tmp_path, capsys):
    from htnetlib.study import plan

    first = plan.make_plan(synthetic, "smoke", runs_dir=tmp_path / "none").needs[0]
    runs = tmp_path / "runs"
    run = loso.run_loso(synthetic, first.config, seed=first.seed, profile="smoke",
                        runs_dir=runs, trainer="loop", progress=False)
    argv = ["grid", "--profile", "smoke", "--data", str(synthetic_root), "--out", str(runs),
            "--dry-run"]
    assert main(argv) == 0
    assert f"  {run.name} " not in capsys.readouterr().out
    (run / "metrics.json").write_text('{"full": {"uf')
    assert main(argv) == 0
    assert f"  {run.name} " in capsys.readouterr().out


def test_train_on_a_damaged_run_warns_once_and_trains_it_again(stored_run, synthetic_root,
                                                              tmp_path, capsys):
    run = copy_run(stored_run, tmp_path)
    (run / "metrics.json").write_text('{"full": ')
    assert main(train_argv(run, synthetic_root)) == 0
    captured = capsys.readouterr()
    warnings = [line for line in captured.err.splitlines() if line.startswith("htnet: warning")]
    assert len(warnings) == 1 and "metrics.json" in warnings[0], captured.err
    assert "training the run again" in warnings[0]
    assert store.is_complete(run)
    assert json.loads((run / "metrics.json").read_text()) == \
        json.loads((stored_run / "metrics.json").read_text())


def test_debug_keeps_the_exit_status(synthetic_root, tmp_path, capsys, monkeypatch):
    argv = ["--debug", "train", "--profile", "smoke", "--data", str(synthetic_root),
            "--out", str(tmp_path / "runs")]
    monkeypatch.setattr(loso, "run_loso", lambda *a, **kw: 1 / 0)
    assert main(argv) == 70
    err = capsys.readouterr().err
    assert err.startswith("Traceback") and "ZeroDivisionError" in err
    monkeypatch.setattr(loso, "run_loso", lambda *a, **kw: (_ for _ in ()).throw(
        TrainingError("fold 1/3: loss is nan at epoch 2")))
    assert main(argv) == 4
    assert capsys.readouterr().err.splitlines()[-1].endswith("loss is nan at epoch 2")
    monkeypatch.setattr(loso, "run_loso", lambda *a, **kw: (_ for _ in ()).throw(
        KeyboardInterrupt()))
    monkeypatch.setenv("HTNET_DEBUG", "1")
    assert main(argv[1:]) == 130
    assert "KeyboardInterrupt" in capsys.readouterr().err


def test_data_fetch_into_a_file_is_exit_2(tmp_path, capsys):
    somefile = tmp_path / "somefile"
    somefile.write_text("mine")
    assert main(["data", "fetch", "--dest", str(somefile)]) == 2
    line = error_line(capsys)
    assert f"--dest {somefile}" in line and "is a file, not a folder" in line
    assert somefile.read_text() == "mine"


@pytest.mark.parametrize("change, shown", [
    (lambda m: m.update(config=[1, 2]), "config is not a configuration"),
    (lambda m: m["config"].update(block_repeats="abc"), "invalid configuration"),
], ids=["config-list", "block-repeats-text"])
def test_a_damaged_model_json_is_exit_3(model_dir, tmp_path, capsys, change, shown):
    folder = edited_model(model_dir, tmp_path, change)
    frame = tmp_path / "frame.png"
    cv2.imwrite(str(frame), np.zeros((64, 64, 3), np.uint8))
    assert main(["predict", "--model", str(folder), "--onset", str(frame),
                 "--apex", str(frame)]) == 3
    line = error_line(capsys)
    assert str(folder / "model.json") in line and shown in line


def test_a_stored_run_is_read_from_a_read_only_folder(stored_run, synthetic_root, tmp_path,
                                                      capsys, monkeypatch):
    run = copy_run(stored_run, tmp_path)
    # tests run as root, which may write anywhere: os.access stands in for a read-only folder
    monkeypatch.setattr(os, "access", lambda path, mode: False)
    assert main(train_argv(run, synthetic_root)) == 0
    captured = capsys.readouterr()
    assert captured.out.splitlines()[0] == str(run) and not captured.err
    assert main(train_argv(run, synthetic_root, "--seed", "1")) == 4  # this one must train
    line = error_line(capsys)
    assert str(run.parent) in line and "not writable" in line
    assert sorted(p.name for p in run.parent.iterdir()) == [run.name]


@pytest.mark.parametrize("umask, mode", [(0o022, 0o644), (0o027, 0o640)])
def test_run_and_model_files_follow_the_umask(synthetic, tmp_path, umask, mode):
    from htnetlib import io

    old = os.umask(umask)
    try:
        assert io.file_mode() == mode
        run = loso.run_loso(synthetic, profile_config("smoke", "htnet"), seed=0,
                            profile="smoke", runs_dir=tmp_path / "runs", trainer="loop",
                            progress=False)
        io.write_text(tmp_path / "model" / "model.json", "{}")
    finally:
        os.umask(old)
    files = [run / f for f in store.RUN_FILES] + [tmp_path / "model" / "model.json"]
    assert {f.name: oct(f.stat().st_mode & 0o777) for f in files} == \
        {f.name: oct(mode) for f in files}


def test_an_error_after_a_progress_bar_starts_its_own_line(synthetic_root, tmp_path, capsys,
                                                           monkeypatch):
    def fail(todo, *args, **kw):
        yield 1
        raise TrainingError("fold 2/3 (subject s02): loss is nan at epoch 1")

    monkeypatch.setattr(jobs, "train_jobs", fail)
    assert main(["train", "--profile", "smoke", "--trainer", "loop", "--data",
                 str(synthetic_root), "--out", str(tmp_path / "runs")]) == 4
    err = capsys.readouterr().err
    assert "fold/s" in err or "fold]" in err or "1/3" in err, err  # the bar was drawn
    last = err.splitlines()[-1]
    assert last == "htnet: error: fold 2/3 (subject s02): loss is nan at epoch 1", err
    assert "\n\n" not in err
    from tqdm import tqdm

    assert not list(getattr(tqdm, "_instances", ())), "a bar was left open"


def test_the_error_line_gets_a_newline_only_after_a_partial_line(capsys):
    for written, expected in [("LOSO run:  33%|###   | 1/3", "LOSO run:  33%|###   | 1/3\n"),
                              ("done\n", "done\n"), ("", "")]:
        stream = app._Stderr(sys.stderr)
        monkey, sys.stderr = sys.stderr, stream
        try:
            stream.write(written)
            app._error("boom")
        finally:
            sys.stderr = monkey
        assert capsys.readouterr().err == expected + "htnet: error: boom\n"



# --------------------------------------------------------------------------- make reproduce


@pytest.mark.parametrize("args", [["--budget-hours", "nan"], ["--budget-hours", "inf"],
                                  ["--budget-hours", "0"], ["--budget-hours", "-1"],
                                  ["--only", "99"], ["--profile", "cpu", "--only", "99"],
                                  ["--workers", "0"]],
                         ids=lambda a: " ".join(a))
def test_reproduce_arguments_are_usage_errors_before_anything_runs(args, synthetic_root,
                                                                   monkeypatch, capsys):
    """A budget that is not a finite number of hours above 0, or an --only naming no notebook,
    is exit 2 with one line; no plan is printed and no notebook runs."""
    from htnetlib.cli import reproduce

    monkeypatch.setenv("HTNET_DATA", str(synthetic_root))
    ran = []
    monkeypatch.setattr(reproduce, "execute", lambda *a, **k: ran.append(a))
    argv = args if "--profile" in args else ["--profile", "paper", *args]
    assert reproduce.main(argv) == errors.EXIT_USAGE
    out = capsys.readouterr()
    assert not ran and "profile" not in out.out
    assert len(out.err.strip().splitlines()) == 1 and "error" in out.err
