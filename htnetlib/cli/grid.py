"""``htnet grid``: every job a profile's notebooks need, as one scheduler job each.

    htnet grid --profile paper --launcher slurm --partition gpu --gpus-per-job 1 --time-min 20
    htnet grid --profile cpu --launcher local --cpus-per-job 2
    htnet grid --profile paper --dry-run          # the jobs and their estimated cost only
    htnet grid --profile paper --status           # the submitted jobs' states, nothing submitted

The jobs come from the experiment registry through :func:`htnetlib.study.plan.make_plan`: LOSO
runs (notebooks 04-12), the nested rule's inner fits (notebook 12, in ``<run>/inner/``) and the
leave-one-dataset-out results (notebook 13, in ``tables/lodo/`` beside ``--out``). The ones
already stored are skipped and every other one becomes one job, submitted through `submitit
<https://github.com/facebookincubator/submitit>`_ as job arrays: ``slurm`` (sbatch, on a
cluster's login node; ``--parallel`` is the array's parallelism), ``local`` (a process per job on
this machine, at most ``--parallel`` at a time) or ``debug`` (in this process, one after another,
pdb on an error). Each job trains with :func:`htnetlib.training.loso.run_loso`,
:func:`~htnetlib.training.nested.run_nested` or :func:`~htnetlib.training.lodo.run_lodo` into
``--out`` (default: this repository's ``results/runs``), where ``make reproduce`` and the
notebooks find it by its id; submitit keeps each job's log in ``--log-dir``.

Every submitted job is recorded in a state file (``--state``, default ``submitted.json`` beside
the log folders). A later ``htnet grid`` asks the scheduler (or, for local jobs, the process
table) for each recorded job's state and never submits again a job that is still queued or
running; a cancelled or failed job is submitted again. ``--status`` prints those states (with
the log of each failed or cancelled job) and the stored and missing counts. The states need no
Slurm accounting (:func:`~htnetlib.cli.grid_jobs.state_of`).

A job stores every finished fold as it goes, so a job that is preempted or reaches its time
limit is requeued (:meth:`RunJob.checkpoint`) and resumes from its stored folds; a job killed
outright resumes the same way when the grid is started again. Two jobs of one run never both
train it: the second waits on the run's lock and then reuses the finished run, and a job whose
run is already stored returns at once, so two launchers started on one grid share the work.

The launcher waits for its jobs and ends with a summary: the jobs finished, the jobs that failed
(each with the last line of its error and its log), and the jobs left unfinished. It exits 0
only when every submitted job finished.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

from ..config import check_seed
from ..errors import EXIT_OK, EXIT_RUNTIME, ConfigError
from ..study.experiments import KINDS
from .common import whole_number

from .grid_jobs import (LAUNCHERS, JobEnd, Outcome, RunJob, active_jobs, default_state,  # noqa: F401
                        detect_launcher, job_error, job_state, launch, load_submitted,
                        make_executor, record_submitted, recorded_job, state_of)

POLL_S = {"slurm": 15.0}  # seconds between looks at the jobs, by launcher (default 0.5)

# htnetlib.study.plan (and with it torch) is imported where needed
# --------------------------------------------------------------------------- dry run


def dry_run_text(grid_plan, todo: list, units: int = 1) -> str:
    """Every job with its id, kind, estimated cost in GPU- or CPU-minutes (``units`` GPUs or
    cores per job) and why it is needed, and the total in hours."""
    unit = "GPU" if grid_plan.device_type == "cuda" else "CPU"
    lines = []
    known, unknown = 0.0, 0
    width = max((len(n.key) for n in todo), default=0)
    for n in todo:
        if n.seconds is None:
            cost, unknown = "no timing", unknown + 1
        else:
            minutes = n.seconds / 60 * units
            known += minutes
            cost = f"{minutes:.1f} {unit}-min"
        lines.append(f"  {n.key:<{width}}  {n.kind:<6}  {cost:>14}  {'; '.join(n.why)}")
    total = f"{known / 60:.2f} {unit}-hours"
    if unknown:
        total = f"at least {total} ({unknown} job(s) with no timing)"
    kinds = ", ".join(f"{sum(n.kind == k for n in todo)} {k}" for k in KINDS)
    lines.append(f"total: {len(todo)} jobs ({kinds}), {total}")
    bases = list(dict.fromkeys(n.basis for n in todo if n.seconds is not None))
    if bases:
        lines.append("estimates rest on:")
        lines += [f"  {b}" for b in bases[:6]]
        if len(bases) > 6:
            lines.append(f"  ... and {len(bases) - 6} more references")
    return "\n".join(lines)


# --------------------------------------------------------------------------- command line


def _key_value(text: str) -> tuple[str, str]:
    """An argparse type: ``KEY=VALUE`` (an ``#SBATCH --KEY=VALUE`` option)."""
    key, sep, value = text.partition("=")
    if not sep or not key.strip().lstrip("-"):
        raise argparse.ArgumentTypeError(f"expected KEY=VALUE such as account=myproject, got "
                                         f"{text!r}")
    return key.strip().lstrip("-"), value


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Add the options of ``htnet grid`` to ``parser``."""
    from ..io import ROOT
    from ..study.experiments import SEEDS

    parser.add_argument("--profile", required=True, choices=("smoke", "cpu", "paper"),
                        help="whose notebooks' jobs to train")
    parser.add_argument("--seeds", type=int, nargs="+", default=list(SEEDS),
                        metavar="N", help="the notebooks' seeds (default 0 1 2)")
    parser.add_argument("--data", help="release folder, visible from every job "
                                       "(default: $HTNET_DATA, else ./data)")
    parser.add_argument("--out", type=Path, default=ROOT / "results" / "runs",
                        help="runs folder the jobs write to, visible from every job "
                             "(default: this repository's results/runs, read by make reproduce); "
                             "leave-one-dataset-out results go to tables/lodo beside it")
    parser.add_argument("--launcher", choices=LAUNCHERS, default="auto",
                        help="slurm: sbatch; local: processes here; debug: in this process "
                             "with pdb on an error; auto (default): slurm where srun exists")
    parser.add_argument("--partition", help="Slurm partition")
    parser.add_argument("--gpus-per-job", type=whole_number(0),
                        help="GPUs per job (default 1 for the paper profile, else 0); 0 plans "
                             "and trains on CPU")
    parser.add_argument("--cpus-per-job", type=whole_number(1), default=1,
                        help="CPU cores per job, its fold processes on a CPU (default 1)")
    parser.add_argument("--time-min", type=whole_number(1), default=60,
                        help="time limit per job in minutes (default 60); a job that reaches "
                             "it is requeued and resumes from its stored folds")
    parser.add_argument("--slurm-args", type=_key_value, nargs="+", default=[],
                        metavar="KEY=VALUE", help="further #SBATCH options, e.g. "
                                                  "account=myproject qos=normal mem=16G")
    parser.add_argument("--parallel", type=whole_number(0),
                        help="jobs at a time, 0 for all at once (default: all for slurm; for "
                             "local, cores / --cpus-per-job, or 1 with GPUs)")
    parser.add_argument("--limit", type=whole_number(1),
                        help="submit only the first N missing jobs (a trial)")
    parser.add_argument("--log-dir", type=Path,
                        help="job logs and submitit's files (default: .cache/grid-logs/"
                             "<profile>-<time> in this repository)")
    parser.add_argument("--state", type=Path,
                        help="file recording the submitted jobs (default: submitted.json beside "
                             "the log folders, .cache/grid-logs/ in this repository)")
    what = parser.add_mutually_exclusive_group()
    what.add_argument("--dry-run", action="store_true",
                      help="list every missing job (LOSO runs, nested inner fits, "
                           "leave-one-dataset-out results), why it is needed and its estimated "
                           "cost; submit nothing")
    what.add_argument("--status", action="store_true",
                      help="the state of every job this grid submitted (pending, running, "
                           "finished, failed) and the stored and missing counts; submit nothing")


def plan_grid(args):
    """The release ``args.data`` (loaded and checked) and the plan of ``args.profile`` on it,
    its costs estimated on a GPU when the jobs get one, else on a CPU."""
    from ..study import plan as plan_mod
    from ..data import load_composite

    for s in args.seeds:
        check_seed(s)
    if args.out.exists() and not args.out.is_dir():
        raise ConfigError(f"--out {args.out}: is a file, not a folder")
    gpus = _gpus(args)
    device_type = "cuda" if gpus else "cpu"
    data = load_composite(args.data)
    grid_plan = plan_mod.make_plan(data, args.profile, runs_dir=args.out,
                                   device_type=device_type, workers=args.cpus_per_job,
                                   seeds=args.seeds)
    return data, grid_plan


def _gpus(args) -> int:
    return args.gpus_per_job if args.gpus_per_job is not None else int(args.profile == "paper")


def _parallel(args, launcher: str) -> int:
    if args.parallel is not None:
        return args.parallel
    if launcher != "local":
        return 0
    return 1 if _gpus(args) else max(1, (os.cpu_count() or 1) // args.cpus_per_job)


def run(args: argparse.Namespace) -> int:
    """``htnet grid``: plan, then list (``--dry-run``), report (``--status``) or submit the
    missing jobs and wait."""
    from ..io import ROOT

    launcher = detect_launcher() if args.launcher == "auto" else args.launcher
    allowed = os.environ.get("HTNET_TRAIN_PROFILES")
    listing = args.dry_run or args.status
    if not listing and allowed and args.profile not in allowed.split(","):
        raise ConfigError(f"HTNET_TRAIN_PROFILES={allowed} switches training of the "
                          f"{args.profile!r} profile off here; every job would fail")
    data, grid_plan = plan_grid(args)
    out = args.out.absolute()
    state = args.state or default_state(args.log_dir)
    jobs, missing = grid_plan.jobs, grid_plan.missing_jobs
    print(f"profile {args.profile}: {len(jobs)} jobs needed by the notebooks "
          f"({grid_plan.counts()}), {len(jobs) - len(missing)} stored under {out}, "
          f"{len(missing)} missing", flush=True)
    if args.status:
        return status(state, out, grid_plan)
    active = {} if args.dry_run else active_jobs(state, out)
    waiting = [n for n in missing if n.key in active]
    if waiting:
        print(f"{len(waiting)} missing job(s) already queued or running, not submitted again:")
        for n in waiting:
            record, how = active[n.key]
            print(f"  {n.key} ({n.kind}): {how} as {record['launcher']} job {record['job_id']}")
    left = [n for n in missing if n.key not in active]
    todo = left[:args.limit] if args.limit else left
    if len(todo) < len(left):
        print(f"--limit keeps the first {len(todo)} of {len(left)}", flush=True)
    if args.dry_run:
        units = _gpus(args) or args.cpus_per_job
        print(dry_run_text(grid_plan, todo, units))
        print(f"dry run: nothing submitted ({launcher} launcher, {_gpus(args)} GPU(s) and "
              f"{args.cpus_per_job} core(s) per job, {args.time_min} min limit)")
        return EXIT_OK
    if not todo:
        print("nothing to submit")
        return EXIT_OK
    log_dir = args.log_dir or ROOT / ".cache" / "grid-logs" / \
        f"{args.profile}-{time.strftime('%Y%m%d-%H%M%S')}"
    parallel = _parallel(args, launcher)
    executor = make_executor(launcher, log_dir, time_min=args.time_min,
                             gpus_per_job=_gpus(args), cpus_per_job=args.cpus_per_job,
                             partition=args.partition, slurm_args=dict(args.slurm_args),
                             parallel=parallel)
    tasks = [RunJob(data.root, n.config, n.seed, n.profile, out, n.run_id, "; ".join(n.why),
                    workers=args.cpus_per_job, kind=n.kind) for n in todo]
    print(f"{launcher} launcher: {len(tasks)} jobs, {parallel or 'all'} at a time, logs in "
          f"{log_dir}, submitted jobs recorded in {state}", flush=True)
    outcome = launch(executor, tasks, parallel=parallel,
                     poll_s=POLL_S.get(launcher, 0.5), state=state)
    print(outcome.summary())
    return EXIT_OK if outcome.ok else EXIT_RUNTIME


def status(state: Path, out: Path, grid_plan) -> int:
    """``htnet grid --status``: every job recorded in ``state`` for ``out`` with its state
    (and its log where it failed or was cancelled), and the stored and missing counts per
    kind; submits nothing."""
    recorded = load_submitted(state).get(str(out), {})
    by_key = {n.key: n for n in grid_plan.jobs}
    for kind, jobs, missing in (("loso", grid_plan.needs, grid_plan.missing),
                                ("nested", grid_plan.nested, grid_plan.missing_nested),
                                ("lodo", grid_plan.lodo, grid_plan.missing_lodo)):
        print(f"  {kind:<6} {len(jobs) - len(missing)} stored, {len(missing)} missing")
    if not recorded:
        print(f"no submitted jobs recorded in {state}")
        return EXIT_OK
    counts: dict = {}
    print(f"{len(recorded)} submitted job(s) recorded in {state}:")
    for key, rec in recorded.items():
        job = recorded_job(rec)
        how = state_of(job)
        counts[how] = counts.get(how, 0) + 1
        n = by_key.get(key)
        stored = "stored" if n is not None and n.stored else "not stored"
        log = f"; log {job.paths.stderr}" if how in ("failed", "cancelled") else ""
        print(f"  {how:<9} {key} ({rec['kind']}, {rec['launcher']} job {rec['job_id']}, "
              f"{stored}){log}")
    print("states: " + ", ".join(f"{v} {k}" for k, v in sorted(counts.items())))
    return EXIT_OK


__all__ = ["RunJob", "JobEnd", "Outcome", "make_executor", "launch", "job_error",
           "dry_run_text", "add_arguments", "run", "status", "detect_launcher", "plan_grid",
           "job_state", "active_jobs", "load_submitted", "record_submitted", "default_state",
           "recorded_job", "state_of"]

if __name__ == "__main__":  # pragma: no cover - ``htnet grid`` is the entry point
    _parser = argparse.ArgumentParser(prog="htnet grid")
    add_arguments(_parser)
    sys.exit(run(_parser.parse_args()))
