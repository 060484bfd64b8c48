"""``htnet grid --launcher slurm`` against a real single-node Slurm cluster (tests/slurm_cluster.py).

The cluster has no accounting storage, so ``sacct`` fails, as on many small clusters; the
launcher and ``--status`` must still tell each job's state. The jobs train the smoke profile
on the synthetic release into temporary folders. Where the cluster cannot start (not root, no
``slurm-wlm``/``munge``), every test here skips with the reason. About 3 minutes, most of it
the time-limit test.
"""

import argparse
import concurrent.futures
import dataclasses
import re
import subprocess
import time
from pathlib import Path

import pytest

submitit = pytest.importorskip("submitit")

import slurm_cluster
from htnetlib.cli import grid
from htnetlib.config import PROFILES
from htnetlib.errors import EXIT_RUNTIME
from htnetlib.study import plan
from htnetlib.study.tables import stored_run
from htnetlib.training import loso, store
from test_grid import assert_same_run, parse, stored_folds_in_log

pytestmark = pytest.mark.slow
# each fold of this model trains for about 17 s: an attempt of a 1-minute job (Slurm signals it
# 30 s before its limit, or sooner: its timer looks every 30 s) stores one or two folds, so the
# run (3 folds) takes at least two attempts
LONG = dataclasses.replace(PROFILES["smoke"], epochs=1800)


@pytest.fixture(scope="module")
def cluster():
    """The running cluster, for this module's tests; launchers look at their jobs every 1 s."""
    try:
        started = slurm_cluster.start()
    except slurm_cluster.Unavailable as exc:
        pytest.skip(f"no test Slurm cluster: {exc}")
    with pytest.MonkeyPatch.context() as mp:
        mp.setitem(grid.POLL_S, "slurm", 1.0)
        yield started
    started.stop()


def grid_args(synthetic_root, tmp_path: Path, *more: str) -> argparse.Namespace:
    return parse("--profile", "smoke", "--seeds", "0", "--data", str(synthetic_root), "--out",
                 str(tmp_path / "runs"), "--state", str(tmp_path / "submitted.json"),
                 "--launcher", "slurm", "--time-min", "5", *more)


def submitted(out: str) -> dict:
    """Job key -> Slurm job id, from a launcher's output."""
    return dict(re.findall(r"submitted \w+ (\S+) as job (\S+)", out))


def wait_for(predicate, what: str, timeout_s: float = 60):
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.5)
    raise AssertionError(f"{what}: not after {timeout_s} s")


def test_the_cluster_has_no_accounting(cluster):
    """The premise of the other tests: sacct fails here, so submitit alone cannot tell states."""
    assert re.match(r"slurm(-wlm)? \d+\.\d+", cluster.version())
    done = subprocess.run(["sacct", "--jobs", "1"], capture_output=True, text=True)
    assert done.returncode != 0 and "accounting storage is disabled" in done.stderr


def test_grid_runs_as_one_job_array_and_status_says_finished(cluster, synthetic,
                                                             synthetic_root, tmp_path, capsys):
    logs = tmp_path / "logs"
    args = grid_args(synthetic_root, tmp_path, "--limit", "3", "--parallel", "2",
                     "--log-dir", str(logs))
    assert grid.run(args) == 0
    out = capsys.readouterr().out
    jobs = submitted(out)
    assert len(jobs) == 3 and "summary: 3 finished, 0 failed, 0 cancelled, 0 left" in out, out
    array = {job.split("_")[0] for job in jobs.values()}
    assert len(array) == 1 and sorted(j.split("_")[1] for j in jobs.values()) == ["0", "1", "2"]
    (script,) = logs.glob("*_submission.sh")
    assert "#SBATCH --array=0-2%2\n" in script.read_text()

    # the notebooks' plan and run loader find the runs
    found = plan.make_plan(synthetic, "smoke", runs_dir=tmp_path / "runs", seeds=[0])
    for need in found.needs:
        if need.run_id in jobs:
            assert need.stored and stored_run(synthetic, need.config, 0, "smoke",
                                              tmp_path / "runs") is not None

    assert grid.run(grid_args(synthetic_root, tmp_path, "--status")) == 0
    out = capsys.readouterr().out
    for key, job in jobs.items():
        assert re.search(rf"  finished +{key} \(loso, slurm job {job}, stored\)\n", out), out
    assert "states: 3 finished\n" in out


def test_status_tells_running_pending_and_failed_jobs_without_accounting(
        cluster, synthetic, synthetic_root, tmp_path, capsys):
    runs, state = tmp_path / "runs", tmp_path / "submitted.json"
    needs = plan.make_plan(synthetic, "smoke", runs_dir=runs, seeds=[0]).missing_jobs[:3]
    tasks = [grid.RunJob(synthetic_root, n.config, n.seed, "smoke", runs, n.run_id, "test")
             for n in needs]
    now = grid.make_executor("slurm", tmp_path / "logs", time_min=5)
    later = grid.make_executor("slurm", tmp_path / "logs", time_min=5,
                               slurm_args={"begin": "now+600"})
    # a job that fails at once (no release), one that runs for a while, one not yet eligible
    bad = grid.RunJob(tmp_path / "no-release", needs[0].config, 0, "smoke", runs,
                      needs[0].run_id)
    jobs = [now.submit(bad), now.submit(time.sleep, 300), later.submit(time.sleep, 1)]
    grid.record_submitted(state, now, list(zip(tasks, jobs)))
    try:
        wait_for(lambda: [grid.state_of(j) for j in jobs] == ["failed", "running", "pending"],
                 "the jobs failed, running and pending")
        assert grid.run(grid_args(synthetic_root, tmp_path, "--status")) == 0
        out = capsys.readouterr().out
        ids = [j.job_id for j in jobs]
        assert re.search(rf"  failed +{tasks[0].key} \(loso, slurm job {ids[0]}, not stored\); "
                         rf"log {re.escape(str(jobs[0].paths.stderr))}\n", out), out
        assert "DataError" in jobs[0].paths.stderr.read_text()
        assert re.search(rf"  running +{tasks[1].key} \(loso, slurm job {ids[1]}, not stored\)"
                         r"\n", out), out
        assert re.search(rf"  pending +{tasks[2].key} \(loso, slurm job {ids[2]}, not stored\)"
                         r"\n", out), out
        assert "states: 1 failed, 1 pending, 1 running\n" in out
    finally:
        cluster.run("scancel", jobs[1].job_id, jobs[2].job_id)


def test_a_job_the_controller_forgot_is_told_by_its_log(cluster, tmp_path):
    from submitit.slurm.slurm import SlurmJob

    job = SlurmJob(tmp_path, "999999")  # Slurm no longer knows it (or never did)
    assert grid.state_of(job) == "cancelled"  # no log: it never started
    job.paths.stderr.write_text("slurmstepd-n1: error: *** JOB 999999 ON n1 CANCELLED AT "
                                "2025-01-01T00:00:00 DUE TO TIME LIMIT ***\n")
    assert grid.state_of(job) == "failed"
    job.paths.stderr.write_text("slurmstepd-n1: error: *** JOB 999999 ON n1 CANCELLED AT "
                                "2025-01-01T00:00:00 ***\n")
    assert grid.state_of(job) == "cancelled"


def test_second_grid_submits_nothing_twice_and_a_cancelled_job_again(
        cluster, synthetic_root, tmp_path, capsys):
    # the first grid's jobs wait in the queue (not eligible for 10 minutes)
    first = concurrent.futures.ThreadPoolExecutor(1).submit(grid.run, grid_args(
        synthetic_root, tmp_path, "--limit", "2", "--slurm-args", "begin=now+600",
        "--log-dir", str(tmp_path / "logs1")))
    state = tmp_path / "submitted.json"
    wait_for(lambda: state.exists() and len(grid.load_submitted(state)[str(tmp_path / "runs")])
             == 2, "the first grid recorded its jobs")
    queued = {k: r["job_id"] for k, r in grid.load_submitted(state)[str(tmp_path / "runs")]
              .items()}

    assert grid.run(grid_args(synthetic_root, tmp_path, "--limit", "1", "--log-dir",
                              str(tmp_path / "logs2"))) == 0
    out = capsys.readouterr().out
    assert "2 missing job(s) already queued or running, not submitted again" in out, out
    for key, job in queued.items():
        assert f"  {key} (loso): pending as slurm job {job}\n" in out
    # (the first grid, still waiting in its thread, prints to the same captured output)
    (other,) = [key for key in submitted(out) if key not in queued]
    assert "summary: 1 finished, 0 failed, 0 cancelled, 0 left" in out

    for job in queued.values():
        cluster.run("scancel", job)
    assert first.result(timeout=60) == EXIT_RUNTIME  # the first grid reports both cancelled
    out = capsys.readouterr().out
    assert "summary: 0 finished, 0 failed, 2 cancelled, 0 left" in out, out
    for key, job in queued.items():
        assert f"  cancelled {key} (job {job}); log " in out

    assert grid.run(grid_args(synthetic_root, tmp_path, "--status")) == 0
    out = capsys.readouterr().out
    for key, job in queued.items():
        assert re.search(rf"  cancelled +{key} \(loso, slurm job {job}, not stored\); log ", out)
    assert "states: 2 cancelled, 1 finished\n" in out

    # the next grid submits a cancelled job again
    assert grid.run(grid_args(synthetic_root, tmp_path, "--limit", "1", "--log-dir",
                              str(tmp_path / "logs3"))) == 0
    out = capsys.readouterr().out
    (again,) = submitted(out)
    assert again in queued, out
    assert "summary: 1 finished, 0 failed, 0 cancelled, 0 left" in out


def test_job_at_its_time_limit_is_requeued_and_resumes_from_its_folds(cluster, synthetic,
                                                                      synthetic_root, tmp_path):
    rid = store.run_id(LONG, 0, store.data_fingerprint(synthetic), "smoke")
    task = grid.RunJob(synthetic_root, LONG, 0, "smoke", tmp_path / "runs", rid, "test",
                       trainer="loop")  # the loop trainer stores each fold as it ends
    executor = grid.make_executor("slurm", tmp_path / "logs", time_min=1, max_requeues=8)
    with concurrent.futures.ThreadPoolExecutor(1) as pool:  # the uninterrupted run, meanwhile
        direct = pool.submit(loso.run_loso, synthetic, LONG, seed=0, profile="smoke",
                             progress=False, trainer="loop", runs_dir=tmp_path / "direct")
        outcome = grid.launch(executor, [task], poll_s=1.0)
        reference = direct.result()
    assert outcome.ok, outcome.summary()
    log = Path(str(outcome.ends[0].log).replace("_log.err", "_log.out")).read_text()
    attempts = stored_folds_in_log(log)
    # requeued; a later attempt found the folds an earlier one stored
    assert len(attempts) >= 2 and attempts[0] == 0 and attempts[-1] >= 1, log
    assert attempts == sorted(attempts), log
    assert "timed-out" in outcome.ends[0].log.read_text()
    assert_same_run(task.runs_dir / rid, reference)
