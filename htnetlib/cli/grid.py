"""``htnet grid``: every run a profile's notebooks need, as one job each on a scheduler.

    htnet grid --profile paper --launcher slurm --partition gpu --gpus-per-job 1 --time-min 20
    htnet grid --profile cpu --launcher local --cpus-per-job 2
    htnet grid --profile paper --dry-run          # the jobs and their estimated cost only

The runs come from :func:`htnetlib.plan.make_plan`; the ones already stored under ``--out`` are
skipped and every other one becomes one job, submitted through `submitit
<https://github.com/facebookincubator/submitit>`_: ``slurm`` (sbatch, on a cluster's login
node), ``local`` (a process per job on this machine) or ``debug`` (in this process, one after
another, pdb on an error). Each job trains its run with :func:`htnetlib.run_loso` into
``--out`` (default: this repository's ``results/runs``), where ``make reproduce`` and the
notebooks find it by its id; submitit keeps each job's log in ``--log-dir``.

A job stores every finished fold as it goes, so a job that is preempted or reaches its time
limit is requeued (:meth:`RunJob.checkpoint`) and resumes from its stored folds; a job killed
outright resumes the same way when the grid is started again. Two jobs of one run never both
train it: the second waits on the run's lock and then reuses the finished run, and a job whose
run is already stored returns at once, so two launchers started on one grid share the work.

The launcher waits for its jobs and ends with a summary: the runs finished, the runs whose job
failed (each with the last line of its error and its log), and the runs left unfinished. It
exits 0 only when every submitted run finished.
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

from ..config import check_seed
from ..errors import EXIT_OK, EXIT_RUNTIME, ConfigError
from .common import whole_number

# htnetlib.plan (and with it torch) is imported where needed: a job that fails on its data
# fails before importing torch

LAUNCHERS = ("auto", "local", "slurm", "debug")


# --------------------------------------------------------------------------- one job


class RunJob:
    """One LOSO run as a submitit job: calling it trains, resumes or reuses the run.

    Everything a job needs travels in this object (pickled by submitit): the release folder,
    the configuration, seed and profile, the runs folder and the run id the grid planned. The
    job checks that its release gives that run id before it trains, so a job that sees other
    data (a different copy on a compute node) fails at once instead of training a run nobody
    asked for.
    """

    def __init__(self, data_root, config, seed: int, profile: str, runs_dir, run_id: str = "",
                 why: str = "", device: str | None = None, workers: int = 1):
        self.data_root = Path(data_root).absolute()
        self.config, self.seed, self.profile = config, seed, profile
        self.runs_dir = Path(runs_dir).absolute()
        self.run_id, self.why = run_id, why
        self.device, self.workers = device, workers

    def __call__(self) -> str:
        """Train the run (or resume it, or find it stored) and return its id."""
        from ..data import DataError, load_composite

        data = load_composite(self.data_root)
        # torch: after the data, so a bad release fails at once
        from ..training.loso import fold_subjects, run_loso
        from ..training.store import data_fingerprint, is_complete, run_id

        fingerprint = data_fingerprint(data)
        rid = run_id(self.config, self.seed, fingerprint, self.profile)
        if self.run_id and rid != self.run_id:
            raise DataError(f"{self.data_root}: this release gives run {rid}, not the planned "
                            f"{self.run_id} (data fingerprint {fingerprint}); give every job "
                            "the same release (--data)")
        run_dir = self.runs_dir / rid
        n_folds = len(fold_subjects(data, self.config))
        if is_complete(run_dir):
            state = "already stored"
        else:
            stored = len(list((run_dir / "folds").glob("[0-9][0-9].npz")))
            state = f"{stored} of {n_folds} folds stored, training the rest"
        print(f"htnet grid: run {rid} ({self.why or 'no reason given'}): {state}", flush=True)
        start = time.perf_counter()
        run_loso(data, self.config, seed=self.seed, runs_dir=self.runs_dir,
                       profile=self.profile, device=self.device, workers=self.workers,
                       progress=False)
        print(f"htnet grid: run {rid} finished in {run_dir} "
              f"({time.perf_counter() - start:.0f} s in this job)", flush=True)
        return rid

    def checkpoint(self, *args, **kwargs):
        """Called by submitit when the job is preempted or reaches its time limit: submit this
        job again. Finished folds are on disk already, so the new job resumes from them."""
        from submitit.helpers import DelayedSubmission

        return DelayedSubmission(self, *args, **kwargs)

    def __repr__(self) -> str:
        return f"RunJob({self.run_id or self.profile})"


# --------------------------------------------------------------------------- executors


def detect_launcher() -> str:
    """``slurm`` where Slurm's ``srun`` is on PATH, else ``local``."""
    return "slurm" if shutil.which("srun") else "local"


def make_executor(launcher: str, log_dir: Path, *, time_min: int = 60, gpus_per_job: int = 0,
                  cpus_per_job: int = 1, partition: str | None = None,
                  slurm_args: dict | None = None):
    """The submitit executor of ``launcher`` (slurm, local or debug), logging to ``log_dir``.

    Slurm jobs get one task on one node with ``cpus_per_job`` cores, ``gpus_per_job`` GPUs and
    ``time_min`` minutes; submitit asks Slurm for USR2 90 s before the limit, and the job then
    requeues itself. ``slurm_args`` are further ``#SBATCH`` options (``{"account": "abc"}``).
    Local jobs see ``gpus_per_job`` GPUs (none if 0) and are requeued the same way after
    ``time_min`` minutes.
    """
    try:
        import submitit
    except ImportError:
        raise ConfigError("htnet grid needs submitit: pip install submitit") from None
    if launcher == "slurm":
        if not shutil.which("srun") or not shutil.which("sbatch"):
            raise ConfigError("--launcher slurm: srun and sbatch are not on PATH; run htnet "
                              "grid on the cluster's login node, or use --launcher local")
        executor = submitit.AutoExecutor(folder=log_dir, cluster="slurm")
        params = dict(timeout_min=time_min, nodes=1, tasks_per_node=1,
                      cpus_per_task=cpus_per_job, slurm_additional_parameters=slurm_args or {})
        if gpus_per_job:
            params["gpus_per_node"] = gpus_per_job
        if partition:
            params["slurm_partition"] = partition
        executor.update_parameters(**params)
        return executor
    if launcher == "local":
        executor = submitit.LocalExecutor(folder=log_dir)
        executor.update_parameters(timeout_min=time_min, gpus_per_node=gpus_per_job)
        return executor
    if launcher == "debug":
        return submitit.DebugExecutor(folder=log_dir)
    raise ConfigError(f"--launcher {launcher!r}: choose one of {', '.join(LAUNCHERS)}")


# --------------------------------------------------------------------------- launching


@dataclass
class JobEnd:
    """How one run's job ended: ``finished``, ``failed`` (``error`` says why) or ``left``."""

    run_id: str
    state: str
    job_id: str = ""
    error: str = ""
    log: Path | None = None


@dataclass
class Outcome:
    """Every submitted run and how its job ended."""

    ends: list = field(default_factory=list)
    log_dir: Path | None = None

    def runs(self, state: str) -> list:
        return [e for e in self.ends if e.state == state]

    @property
    def ok(self) -> bool:
        return all(e.state == "finished" for e in self.ends)

    def summary(self) -> str:
        """The finished runs, the failed ones with their error, and the ones left."""
        finished, failed, left = (self.runs(s) for s in ("finished", "failed", "left"))
        where = f"; logs in {self.log_dir}" if self.log_dir else ""
        lines = [f"summary: {len(finished)} finished, {len(failed)} failed, {len(left)} left "
                 f"(of {len(self.ends)} runs{where})"]
        lines += [f"  finished {e.run_id}" for e in finished]
        lines += [f"  failed   {e.run_id} (job {e.job_id}): {e.error}; log {e.log}"
                  for e in failed]
        lines += [f"  left     {e.run_id}" + (f" (job {e.job_id}: {e.error})" if e.job_id else
                                              " (not submitted)") for e in left]
        if failed or left:
            lines.append("start the same htnet grid again to resume: stored folds are kept")
        return "\n".join(lines)


def _last_line(text: str | None) -> str:
    lines = [line.strip() for line in (text or "").splitlines() if line.strip()]
    return lines[-1] if lines else ""


def job_error(job, raised: BaseException | None = None, runs_dir: Path | None = None) -> str:
    """Why a job ended without finishing its run, in one line.

    For a job that raised, the last line of its traceback (the exception and its message);
    for one that ended without a result (killed, out of memory, cancelled, out of time), its
    state and the last line of its error log; for one that returned but left no run in
    ``runs_dir`` (the launcher's view of ``--out``), that. ``raised`` is an error the debug
    launcher raised in this process.
    """
    if raised is None and (job.paths.result_pickle.exists() or not _is_local(job)):
        raised = job.exception()  # waits a little for a result file on a slow shared disk
        if raised is None:
            return (f"the job returned, but its run is not stored under {runs_dir}: does "
                    "every job see the same --out folder?")
    name = type(raised).__name__
    if name == "FailedJobError":  # the message holds the job's traceback between dashes
        return _last_line(str(raised).split("-" * 22)[1])
    if raised is not None and name != "UncompletedJobError":
        return f"{name}: {_last_line(str(raised))}"
    state = re.search(r"\(state: ([^)]*)\)", str(raised or ""))  # a cluster's job state
    state = f"state {state.group(1)}; " if state and not _is_local(job) else ""
    last = _last_line(job.stderr())
    return (f"ended without a result ({state}killed, cancelled or out of memory?)"
            + (f"; last log line: {last}" if last else ""))


def _is_local(job) -> bool:
    return type(job).__name__ == "LocalJob"


def _done(job) -> tuple[bool, BaseException | None]:
    """Whether ``job`` has ended; the debug launcher runs the job here and raises its error."""
    try:
        return job.done(), None
    except Exception as exc:  # noqa: BLE001 - the job's own error, reported in the summary
        return True, exc


def launch(executor, tasks: list[RunJob], *, parallel: int = 0, poll_s: float = 1.0
           ) -> Outcome:
    """Submit every task (at most ``parallel`` jobs at a time; 0: all at once), wait for them
    and say how each ended. A run that another launcher has finished meanwhile is not submitted
    again; runs that another process is training (their ``.lock`` exists) are submitted last.
    A Ctrl-C cancels this machine's local jobs, says what is left, and raises KeyboardInterrupt.
    """
    from ..training.store import LOCK_NAME, is_complete

    outcome = Outcome(log_dir=Path(executor.folder))
    pending = list(tasks)
    running: dict = {}  # job -> task
    total, ended = len(tasks), 0

    def end(task, state, job=None, error=""):
        nonlocal ended
        ended += 1
        e = JobEnd(task.run_id, state, str(job.job_id) if job else "", error,
                   job.paths.stderr if job else None)
        outcome.ends.append(e)
        print(f"[{ended}/{total}] {state} {task.run_id}" + (f": {error}" if error else ""),
            flush=True)

    try:
        while pending or running:
            pending.sort(key=lambda t: (t.runs_dir / t.run_id / LOCK_NAME).exists())
            while pending and (not parallel or len(running) < parallel):
                task = pending.pop(0)
                if is_complete(task.runs_dir / task.run_id):
                    end(task, "finished", error="stored meanwhile, not submitted")
                    continue
                if getattr(executor, "cluster", None) == "slurm":
                    executor.update_parameters(name=task.run_id)  # the name squeue shows
                job = executor.submit(task)
                running[job] = task
                print(f"submitted {task.run_id} as job {job.job_id}", flush=True)
            for job in list(running):
                done, raised = _done(job)
                if not done:
                    continue
                task = running.pop(job)
                if raised is None and is_complete(task.runs_dir / task.run_id):
                    end(task, "finished", job)
                else:
                    end(task, "failed", job, job_error(job, raised, task.runs_dir))
            if running:
                time.sleep(poll_s)
    except KeyboardInterrupt:
        for job, task in running.items():
            if _is_local(job):
                job.cancel()
            outcome.ends.append(JobEnd(task.run_id, "left", str(job.job_id),
                                       "cancelled" if _is_local(job) else "still queued or "
                                       "running on the cluster"))
        outcome.ends += [JobEnd(t.run_id, "left") for t in pending]
        print(outcome.summary(), flush=True)
        raise
    return outcome


# --------------------------------------------------------------------------- dry run


def dry_run_text(grid_plan, todo: list, units: int = 1) -> str:
    """Every job with why it is needed and its estimated cost in GPU- or CPU-minutes (``units``
    GPUs or cores per job), and the total in hours."""
    unit = "GPU" if grid_plan.device_type == "cuda" else "CPU"
    lines = []
    known, unknown = 0.0, 0
    width = max((len(n.run_id) for n in todo), default=0)
    for n in todo:
        if n.seconds is None:
            cost, unknown = "no timing", unknown + 1
        else:
            minutes = n.seconds / 60 * units
            known += minutes
            cost = f"{minutes:.1f} {unit}-min"
        lines.append(f"  {n.run_id:<{width}}  {cost:>14}  {'; '.join(n.why)}")
    total = f"{known / 60:.2f} {unit}-hours"
    if unknown:
        total = f"at least {total} ({unknown} job(s) with no timing)"
    lines.append(f"total: {len(todo)} jobs, {total}")
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
                        help="whose notebooks' runs to train")
    parser.add_argument("--seeds", type=int, nargs="+", default=list(SEEDS),
                        metavar="N", help="the notebooks' seeds (default 0 1 2)")
    parser.add_argument("--data", help="release folder, visible from every job "
                                       "(default: $HTNET_DATA, else ./data)")
    parser.add_argument("--out", type=Path, default=ROOT / "results" / "runs",
                        help="runs folder the jobs write to, visible from every job "
                             "(default: this repository's results/runs, read by make reproduce)")
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
                        help="submit only the first N missing runs (a trial)")
    parser.add_argument("--log-dir", type=Path,
                        help="job logs and submitit's files (default: .cache/grid-logs/"
                             "<profile>-<time> in this repository)")
    parser.add_argument("--dry-run", action="store_true",
                        help="list every job, why it is needed and its estimated cost; "
                             "submit nothing")


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
    """``htnet grid``: plan, then list (``--dry-run``) or submit the missing runs and wait."""
    from ..io import ROOT

    launcher = detect_launcher() if args.launcher == "auto" else args.launcher
    allowed = os.environ.get("HTNET_TRAIN_PROFILES")
    if not args.dry_run and allowed and args.profile not in allowed.split(","):
        raise ConfigError(f"HTNET_TRAIN_PROFILES={allowed} switches training of the "
                          f"{args.profile!r} profile off here; every job would fail")
    data, grid_plan = plan_grid(args)
    missing = grid_plan.missing
    todo = missing[:args.limit] if args.limit else missing
    out = args.out.absolute()
    print(f"profile {args.profile}: {len(grid_plan.needs)} runs needed by the notebooks, "
          f"{len(grid_plan.needs) - len(missing)} stored under {out}, {len(missing)} missing"
          + (f"; --limit keeps the first {len(todo)}" if len(todo) < len(missing) else ""),
          flush=True)
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
    executor = make_executor(launcher, log_dir, time_min=args.time_min,
                             gpus_per_job=_gpus(args), cpus_per_job=args.cpus_per_job,
                             partition=args.partition, slurm_args=dict(args.slurm_args))
    tasks = [RunJob(data.root, n.config, n.seed, n.profile, out, n.run_id, "; ".join(n.why),
                    workers=args.cpus_per_job) for n in todo]
    parallel = _parallel(args, launcher)
    print(f"{launcher} launcher: {len(tasks)} jobs, {parallel or 'all'} at a time, logs in "
          f"{log_dir}", flush=True)
    outcome = launch(executor, tasks, parallel=parallel,
                     poll_s=15.0 if launcher == "slurm" else 0.5)
    print(outcome.summary())
    return EXIT_OK if outcome.ok else EXIT_RUNTIME


__all__ = ["RunJob", "JobEnd", "Outcome", "make_executor", "launch", "job_error",
           "dry_run_text", "add_arguments", "run", "detect_launcher", "plan_grid"]

if __name__ == "__main__":  # pragma: no cover - ``htnet grid`` is the entry point
    _parser = argparse.ArgumentParser(prog="htnet grid")
    add_arguments(_parser)
    sys.exit(run(_parser.parse_args()))
