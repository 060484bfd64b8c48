"""``htnet grid`` (htnetlib.cli.grid): runs submitted as submitit jobs, requeued, resumed, summarised.

Jobs run through submitit's LocalExecutor (one process per job), on the synthetic release with
the ``smoke`` profile; the tests that interrupt a job use a smoke model with more epochs, so a
fold takes long enough to interrupt the job in the middle of its run.
"""

import argparse
import dataclasses
import os
import re
import signal
import stat
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

submitit = pytest.importorskip("submitit")

from htnetlib.cli import grid
from htnetlib.cli import grid_jobs
from htnetlib import io
from htnetlib.training import loso
from htnetlib.training import store
from htnetlib.study import plan
from htnetlib.config import PROFILES, ConfigError
from htnetlib.data import DataError

# the interrupting tests find a job's process in /proc
linux_only = pytest.mark.skipif(sys.platform != "linux", reason="finds job processes in /proc")
SLOW = dataclasses.replace(PROFILES["smoke"], epochs=120)  # 0.5 to 4 s of CPU per fold


def parse(*argv: str) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="htnet grid")
    grid.add_arguments(parser)
    return parser.parse_args(list(argv))


def local_executor(log_dir: Path):
    # the time limit only guards against a hung test: each job here takes seconds
    return grid.make_executor("local", log_dir, time_min=5)


def assert_same_run(a: Path, b: Path) -> None:
    """Two run folders hold the same predictions and per-epoch curves (timings aside)."""
    pd.testing.assert_frame_equal(store.read_predictions(a / "predictions.csv"),
                                  store.read_predictions(b / "predictions.csv"))
    ea, eb = io.read_npz(a / "epochs.npz"), io.read_npz(b / "epochs.npz")
    assert sorted(ea) == sorted(eb)
    for key in ea:
        if key != "fold_seconds":
            np.testing.assert_array_equal(ea[key], eb[key], err_msg=key)


def stored_folds_in_log(log: str) -> list[int]:
    """The number of folds each attempt of a job found stored, from its log."""
    return [int(k) for k in re.findall(r"(\d+) of \d+ folds stored", log)]


def job_process(log_dir: Path) -> int:
    """The pid of the process running a local job of ``log_dir`` (submitit's
    ``python -m submitit.core._submit <log_dir>``, a child of the job's controller)."""
    for proc in Path("/proc").iterdir():
        try:
            args = (proc / "cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        if b"submitit.core._submit" in args and str(log_dir).encode() in args:
            return int(proc.name)
    raise AssertionError(f"no running job process of {log_dir}")


def signal_after_first_fold(run_dir: Path, log_dir: Path, sig: int, report: dict) -> None:
    """Once the run has stored a fold, send ``sig`` to the job training it (in a thread)."""
    deadline = time.monotonic() + 180
    while time.monotonic() < deadline:
        if list((run_dir / "folds").glob("[0-9][0-9].npz")):
            os.kill(job_process(log_dir), sig)
            report["sent"] = True
            return
        time.sleep(0.02)


def launch_and_interrupt(task: grid.RunJob, log_dir: Path, sig: int) -> grid.Outcome:
    """Launch ``task`` as a local job and send it ``sig`` once it has stored its first fold."""
    report = {}
    watcher = threading.Thread(target=signal_after_first_fold,
                               args=(task.runs_dir / task.run_id, log_dir, sig, report))
    watcher.start()
    outcome = grid.launch(local_executor(log_dir), [task], poll_s=0.2)
    watcher.join()
    assert report.get("sent"), "the job finished before it could be interrupted"
    return outcome


@pytest.fixture(scope="module")
def reference(synthetic, tmp_path_factory) -> Path:
    """The SLOW run trained directly (``htnet train``'s run_loso), for comparison."""
    return loso.run_loso(synthetic, SLOW, seed=0, profile="smoke", progress=False,
                         trainer="loop", runs_dir=tmp_path_factory.mktemp("direct"))


def slow_task(synthetic, synthetic_root, runs_dir: Path) -> grid.RunJob:
    rid = store.run_id(SLOW, 0, store.data_fingerprint(synthetic), "smoke")
    # the loop trainer stores each fold as it ends (the grouped one stores a group at once)
    return grid.RunJob(synthetic_root, SLOW, 0, "smoke", runs_dir, rid, why="test",
                       trainer="loop")


# --------------------------------------------------------------------------- the grid


@pytest.mark.slow
def test_smoke_grid_runs_as_local_jobs_like_htnet_train(synthetic, synthetic_root, tmp_path,
                                                        capsys):
    runs, logs = tmp_path / "runs", tmp_path / "logs"
    code = grid.run(parse("--profile", "smoke", "--data", str(synthetic_root), "--out",
                          str(runs), "--launcher", "local", "--limit", "1", "--log-dir",
                          str(logs)))
    out = capsys.readouterr().out
    assert code == 0, out
    first = plan.make_plan(synthetic, "smoke", runs_dir=tmp_path / "none").needs[0]
    assert f"finished {first.run_id}" in out
    assert "summary: 1 finished, 0 failed, 0 cancelled, 0 left" in out
    assert list(logs.glob("*_log.out")), "submitit keeps each job's log in --log-dir"
    direct = loso.run_loso(synthetic, first.config, seed=first.seed, profile="smoke",
                            runs_dir=tmp_path / "direct", progress=False)
    assert_same_run(runs / first.run_id, direct)

    # the stored run is skipped, and now gives the dry run a CPU timing for HTNet
    assert grid.run(parse("--profile", "smoke", "--data", str(synthetic_root), "--out",
                          str(runs), "--dry-run")) == 0
    out = capsys.readouterr().out
    assert ("113 jobs needed by the notebooks (97 LOSO runs, 6 nested inner fits, 10 "
            "leave-one-dataset-out results), 1 stored") in out
    jobs = [line for line in out.splitlines() if re.match(r"  \S+-smoke-s\d+-", line)]
    assert len(jobs) == 112 and not any(f"{first.run_id} " in line for line in jobs)
    assert any(re.search(r"\d+\.\d CPU-min  05 Table 2: HTNet", line) for line in jobs)
    assert any("no timing" in line and line.split()[0].startswith("logreg") for line in jobs)
    assert any(line.split()[:2] == [f"{first.run_id}/inner", "nested"] for line in jobs)
    assert re.search(r"total: 112 jobs \(96 loso, 6 nested, 10 lodo\), at least \d+\.\d+ "
                     r"CPU-hours", out)
    assert "nothing submitted" in out

    # the launcher recorded its job, which --status now reports finished
    assert grid.run(parse("--profile", "smoke", "--data", str(synthetic_root), "--out",
                          str(runs), "--status", "--log-dir", str(logs))) == 0
    out = capsys.readouterr().out
    assert re.search(rf"  finished +{first.run_id} \(loso, local job \d+, stored\)", out), out
    assert "states: 1 finished" in out


def test_paper_dry_run_lists_the_full_grid_in_gpu_hours(real_root, capsys):
    assert grid.run(parse("--profile", "paper", "--data", str(real_root), "--dry-run")) == 0
    out = capsys.readouterr().out
    assert ("paper: 113 jobs needed by the notebooks (97 LOSO runs, 6 nested inner fits, "
            "10 leave-one-dataset-out results)") in out
    jobs = [line for line in out.splitlines() if re.match(r"  \S+-paper-s\d+-", line)]
    stored = int(re.search(r"(\d+) stored", out).group(1))
    assert len(jobs) == 113 - stored
    assert re.search(r"total: \d+ jobs \(\d+ loso, \d+ nested, \d+ lodo\), (at least )?"
                     r"\d+\.\d+ GPU-hours", out)
    assert any("GPU-min" in line for line in jobs)


def test_dry_run_lists_nested_inner_fits_and_lodo_results(synthetic_root, tmp_path, capsys):
    """``htnet grid --dry-run`` (the command line) lists all three kinds of job, by id."""
    from htnetlib.cli import main

    assert main(["grid", "--profile", "paper", "--data", str(synthetic_root), "--out",
                 str(tmp_path / "runs"), "--dry-run"]) == 0
    out = capsys.readouterr().out
    lines = out.splitlines()
    nested = [line for line in lines if re.match(r"  htnet-paper-s0-\w+/inner +nested ", line)]
    assert [line.split("  ")[-1] for line in nested] == [
        "12 nested rule: plain", "12 nested rule: all three", "12 nested rule: all three, whole map"]
    lodo = [line for line in lines if re.match(r"  lodo-\w+-paper-s\d-\w+ +lodo ", line)]
    assert len(lodo) == 10
    assert sum("13 leave one dataset out: Logistic regression" in line for line in lodo) == 1
    assert re.search(r"total: 113 jobs \(97 loso, 6 nested, 10 lodo\)", out)
    assert not (tmp_path / "runs").exists()  # a dry run writes nothing


def test_a_second_grid_does_not_submit_jobs_still_running(synthetic, synthetic_root, tmp_path,
                                                          capsys):
    """A job recorded as submitted whose process still runs is not submitted again; --status
    shows it running, and failed once it ended without a result."""
    runs, state = tmp_path / "runs", tmp_path / "submitted.json"
    first = plan.make_plan(synthetic, "smoke", runs_dir=runs).missing_jobs[0]
    # stands for the first grid's job of ``first``: a local job that is still running
    executor = local_executor(tmp_path / "first-logs")
    job = executor.submit(time.sleep, 60)
    task = grid.RunJob(synthetic_root, first.config, first.seed, "smoke", runs, first.run_id,
                       "; ".join(first.why))
    grid.record_submitted(state, executor, [(task, job)])
    try:
        args = ("--profile", "smoke", "--data", str(synthetic_root), "--out", str(runs),
                "--state", str(state))
        assert grid.run(parse(*args, "--status")) == 0
        out = capsys.readouterr().out
        assert re.search(rf"  running +{first.run_id} \(loso, local job {job.job_id}, "
                         r"not stored\)", out), out
        assert grid.run(parse(*args, "--dry-run")) == 0  # a dry run lists every missing job
        assert f"  {first.run_id} " in capsys.readouterr().out

        assert grid.run(parse(*args, "--launcher", "debug", "--limit", "1", "--log-dir",
                              str(tmp_path / "second-logs"))) == 0
        out = capsys.readouterr().out
        assert "1 missing job(s) already queued or running, not submitted again" in out
        assert f"  {first.run_id} (loso): running as local job {job.job_id}" in out
        submitted = re.findall(r"submitted \w+ (\S+) as job", out)
        assert len(submitted) == 1 and submitted[0] != first.run_id
        assert "summary: 1 finished, 0 failed, 0 cancelled, 0 left" in out
        assert not store.is_complete(runs / first.run_id)
    finally:
        job.cancel()
    deadline = time.monotonic() + 30
    while not job.done() and time.monotonic() < deadline:
        time.sleep(0.1)
    assert grid.job_state(grid.load_submitted(state)[str(runs.absolute())][first.run_id]) == \
        "failed"
    assert grid.run(parse(*args, "--status")) == 0
    assert re.search(rf"  failed +{first.run_id} ", capsys.readouterr().out)


# --------------------------------------------------------------------------- requeue and resume


@pytest.mark.slow
@linux_only
def test_preempted_job_is_requeued_and_resumes_from_its_folds(synthetic, synthetic_root,
                                                              reference, tmp_path):
    task = slow_task(synthetic, synthetic_root, tmp_path / "runs")
    # USR2 is what Slurm (and the local launcher at the time limit) sends before stopping a
    # job: submitit calls RunJob.checkpoint and starts the job again
    outcome = launch_and_interrupt(task, tmp_path / "logs", signal.SIGUSR2)
    assert outcome.ok, outcome.summary()
    log = Path(str(outcome.ends[0].log).replace("_log.err", "_log.out")).read_text()
    first, resumed = stored_folds_in_log(log)
    assert first == 0 and 1 <= resumed < 3, log
    assert_same_run(task.runs_dir / task.run_id, reference)


@pytest.mark.slow
@linux_only
def test_killed_job_resumes_when_the_grid_runs_again(synthetic, synthetic_root, reference,
                                                     tmp_path):
    task = slow_task(synthetic, synthetic_root, tmp_path / "runs")
    killed = launch_and_interrupt(task, tmp_path / "logs", signal.SIGKILL)
    (end,) = killed.ends
    assert end.state == "failed" and "ended without a result" in end.error, killed.summary()
    assert not store.is_complete(task.runs_dir / task.run_id)

    again = grid.launch(local_executor(tmp_path / "logs2"), [task], poll_s=0.2)
    assert again.ok, again.summary()
    log = next((tmp_path / "logs2").glob("*_log.out")).read_text()
    assert 1 <= stored_folds_in_log(log)[0] < 3, log
    assert_same_run(task.runs_dir / task.run_id, reference)


def test_job_of_a_stored_run_just_returns(synthetic_root, reference, capsys):
    task = grid.RunJob(synthetic_root, SLOW, 0, "smoke", reference.parent, reference.name)
    before = {p.name: p.stat().st_mtime_ns for p in reference.iterdir()}
    assert task() == reference.name
    assert "already stored" in capsys.readouterr().out
    assert {p.name: p.stat().st_mtime_ns for p in reference.iterdir()} == before


def debug_job(synthetic, synthetic_root, runs: Path, kind: str):
    need = next(n for n in plan.make_plan(synthetic, "smoke", runs_dir=runs).jobs
                if n.kind == kind)
    return grid.RunJob(synthetic_root, need.config, need.seed, "smoke", runs, need.run_id,
                       "; ".join(need.why), kind=kind)


def test_a_nested_job_trains_the_run_and_its_inner_fits(synthetic, synthetic_root, tmp_path,
                                                        capsys):
    task = debug_job(synthetic, synthetic_root, tmp_path / "runs", "nested")
    assert task.key == f"{task.run_id}/inner" and not task.stored()
    outcome = grid.launch(grid.make_executor("debug", tmp_path / "logs"), [task],
                          state=tmp_path / "submitted.json")
    assert outcome.ok, outcome.summary()
    assert store.is_complete(tmp_path / "runs" / task.run_id) and task.stored()
    out = capsys.readouterr().out
    assert f"nested {task.key} (12 nested rule: plain): 0 of 15 inner fits stored" in out
    assert not (tmp_path / "submitted.json").exists()  # debug jobs end in this process


def test_a_lodo_job_stores_its_result_beside_the_runs(synthetic, synthetic_root, tmp_path):
    task = debug_job(synthetic, synthetic_root, tmp_path / "runs", "lodo")
    outcome = grid.launch(grid.make_executor("debug", tmp_path / "logs"), [task])
    assert outcome.ok, outcome.summary()
    assert task.folder == tmp_path / "tables" / "lodo" / task.run_id and task.stored()
    assert plan.make_plan(synthetic, "smoke", runs_dir=tmp_path / "runs").lodo[0].stored


# --------------------------------------------------------------------------- errors


def test_summary_names_the_error_of_a_failed_job(tmp_path):
    task = grid.RunJob(tmp_path / "no-release", SLOW, 0, "smoke", tmp_path / "runs",
                       "htnet-smoke-s0-0000000000")
    outcome = grid.launch(local_executor(tmp_path / "logs"), [task], poll_s=0.2)
    assert not outcome.ok
    (end,) = outcome.runs("failed")
    assert end.error.startswith("htnetlib.errors.DataError: data root ")
    assert "no-release does not exist" in end.error
    summary = outcome.summary()
    assert "0 finished, 1 failed, 0 cancelled, 0 left" in summary
    assert f"failed   {task.run_id}" in summary and end.error in summary
    assert str(end.log) in summary and end.log.is_file()


def test_job_refuses_other_data_than_planned(synthetic_root, tmp_path):
    task = grid.RunJob(synthetic_root, SLOW, 0, "smoke", tmp_path, "htnet-smoke-s0-0000000000")
    with pytest.raises(DataError, match="not the planned htnet-smoke-s0-0000000000"):
        task()
    assert not any(tmp_path.iterdir())


def test_bad_arguments_are_one_line_errors(tmp_path, monkeypatch, capsys):
    with pytest.raises(SystemExit):
        parse("--profile", "smoke", "--slurm-args", "account")
    assert "expected KEY=VALUE" in capsys.readouterr().err
    with pytest.raises(DataError, match="does not exist"):
        grid.run(parse("--profile", "smoke", "--data", str(tmp_path / "nothing"), "--dry-run"))
    monkeypatch.setenv("PATH", str(tmp_path))
    with pytest.raises(ConfigError, match="srun and sbatch are not on PATH"):
        grid.make_executor("slurm", tmp_path / "logs")


def fake_slurm(tmp_path, monkeypatch) -> None:
    """srun and sbatch stand-ins on PATH: sbatch copies its script to ``<tmp_path>/job.sh`` and
    answers as Slurm does, with job id 4242."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    for name, body in {"srun": "exit 0",
                       "sbatch": f'cp "$1" {tmp_path}/job.sh; echo "Submitted batch job 4242"'
                       }.items():
        (bin_dir / name).write_text(f"#!/bin/sh\n{body}\n")
        (bin_dir / name).chmod(stat.S_IRWXU)
    monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ['PATH']}")


def test_slurm_jobs_ask_for_the_partition_gpus_time_and_requeue_signal(synthetic_root,
                                                                       tmp_path, monkeypatch):
    fake_slurm(tmp_path, monkeypatch)
    executor = grid.make_executor("slurm", tmp_path / "logs", time_min=20, gpus_per_job=1,
                                  partition="gpu", slurm_args={"account": "proj"})
    executor.update_parameters(name="htnet-paper-s0-abc")
    job = executor.submit(grid.RunJob(synthetic_root, PROFILES["paper"], 0, "paper",
                                      tmp_path / "runs"))
    assert job.job_id == "4242"
    script = (tmp_path / "job.sh").read_text()
    for line in ("--partition=gpu", "--gpus-per-node=1", "--time=20", "--signal=USR2@90",
                 "--account=proj", "--cpus-per-task=1", "--job-name=htnet-paper-s0-abc"):
        assert f"#SBATCH {line}\n" in script, script


def test_slurm_jobs_go_as_one_array_with_its_parallelism_and_are_recorded(synthetic_root,
                                                                          tmp_path, monkeypatch):
    fake_slurm(tmp_path, monkeypatch)
    executor = grid.make_executor("slurm", tmp_path / "logs", parallel=2)
    tasks = [grid.RunJob(synthetic_root, PROFILES["smoke"], s, "smoke", tmp_path / "runs",
                         f"htnet-smoke-s{s}-000000000{s}", kind=kind)
             for s, kind in ((0, "loso"), (1, "nested"), (2, "lodo"))]
    jobs = grid_jobs.submit_array(executor, tasks)
    assert [j.job_id for j in jobs] == ["4242_0", "4242_1", "4242_2"]
    assert "#SBATCH --array=0-2%2\n" in (tmp_path / "job.sh").read_text()
    state = tmp_path / "submitted.json"
    grid.record_submitted(state, executor, list(zip(tasks, jobs)))
    recorded = grid.load_submitted(state)[str(tmp_path / "runs")]
    assert sorted(recorded) == ["htnet-smoke-s0-0000000000", "htnet-smoke-s1-0000000001/inner",
                                "htnet-smoke-s2-0000000002"]
    assert {r["launcher"] for r in recorded.values()} == {"slurm"}
    assert recorded["htnet-smoke-s1-0000000001/inner"]["job_id"] == "4242_1"
