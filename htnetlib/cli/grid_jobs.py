"""The jobs of ``htnet grid``: one stored result (a LOSO run, a nested rule's inner fits or a
leave-one-dataset-out result) as a submitit job, the executors, job-array submission with a
parallelism limit, waiting and the summary, and the state file of submitted jobs that keeps a
later ``htnet grid`` from submitting a queued or running job again (:mod:`htnetlib.cli.grid`).

A job's state comes from its files and the scheduler, never from Slurm's accounting (``sacct``,
which fails where accounting storage is disabled, as on many small clusters): a job that wrote
its result has finished or failed; otherwise ``squeue`` gives the state while the controller
holds the job (until ``MinJobAge``, default 5 minutes, after it ends), and a job the
controller has forgotten is told apart by its log (see :func:`state_of`).
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path

from ..errors import ConfigError, DataError
from ..study.experiments import KINDS

LAUNCHERS = ("auto", "local", "slurm", "debug")


# --------------------------------------------------------------------------- one job


class RunJob:
    """One job of the grid as a submitit job: calling it trains, resumes or reuses its result.

    ``kind`` is ``loso`` (a run, :func:`run_loso`), ``nested`` (the run and its inner fits,
    :func:`run_nested`) or ``lodo`` (a leave-one-dataset-out result in ``lodo_dir``, default
    ``tables/lodo`` beside ``runs_dir``, :func:`run_lodo`). Everything a job needs travels in
    this object (pickled by submitit): the release folder, the configuration, seed and profile,
    the output folders and the id the grid planned (``run_id``: the run's, or the lodo id). The
    job checks that its release gives that id before it trains, so a job that sees other data
    (a different copy on a compute node) fails at once instead of training a result nobody
    asked for. ``trainer`` is :func:`run_loso`'s (``loop`` stores each fold as it ends, so an
    interrupted job resumes fold by fold).
    """

    def __init__(self, data_root, config, seed: int, profile: str, runs_dir, run_id: str = "",
                 why: str = "", device: str | None = None, workers: int = 1, *,
                 kind: str = "loso", lodo_dir=None, trainer: str = "auto"):
        if kind not in KINDS:
            raise ConfigError(f"job kind {kind!r}: choose one of {', '.join(KINDS)}")
        self.data_root = Path(data_root).absolute()
        self.config, self.seed, self.profile = config, seed, profile
        self.runs_dir = Path(runs_dir).absolute()
        self.lodo_dir = (self.runs_dir.parent / "tables" / "lodo" if lodo_dir is None
                         else Path(lodo_dir).absolute())
        self.run_id, self.why = run_id, why
        self.device, self.workers = device, workers
        self.kind, self.trainer = kind, trainer

    @property
    def key(self) -> str:
        """The job's id over all kinds: the run id, ``<run id>/inner`` or the lodo id."""
        return f"{self.run_id}/inner" if self.kind == "nested" else self.run_id

    @property
    def folder(self) -> Path:
        """Where the job's result is stored (the run, its inner store or the lodo result)."""
        if self.kind == "lodo":
            return self.lodo_dir / self.run_id
        return self.runs_dir / self.run_id / ("inner" if self.kind == "nested" else "")

    def stored(self) -> bool:
        """Whether the job's result is stored and finished."""
        from ..study.plan import lodo_complete
        from ..training.nested import nested_complete
        from ..training.store import is_complete

        if self.kind == "lodo":
            return lodo_complete(self.folder)
        if self.kind == "nested":
            return nested_complete(self.runs_dir / self.run_id)
        return is_complete(self.folder)

    def __call__(self) -> str:
        """Train the job's result (or resume it, or find it stored) and return its id."""
        from ..data import DataError, load_composite

        data = load_composite(self.data_root)
        # torch: after the data, so a bad release fails at once
        from ..training.lodo import lodo_id, run_lodo
        from ..training.loso import fold_subjects, run_loso
        from ..training.nested import INNER_GROUPS, run_nested
        from ..training.store import data_fingerprint, run_id

        fingerprint = data_fingerprint(data)
        make_id = lodo_id if self.kind == "lodo" else run_id
        rid = make_id(self.config, self.seed, fingerprint, self.profile)
        if self.run_id and rid != self.run_id:
            raise DataError(f"{self.data_root}: this release gives {self.kind} id {rid}, not the "
                            f"planned {self.run_id} (data fingerprint {fingerprint}); give every "
                            "job the same release (--data)")
        self.run_id = rid
        folder = self.folder
        if self.kind == "loso":
            total, pattern = len(fold_subjects(data, self.config)), "folds/[0-9][0-9].npz"
        elif self.kind == "nested":
            total = len(fold_subjects(data, self.config)) * INNER_GROUPS
            pattern = "[0-9][0-9]_[0-9].npz"
        else:
            total, pattern = data.table["dataset"].nunique(), "folds/[0-9][0-9].npz"
        if self.stored():
            state = "already stored"
        else:
            unit = "inner fits" if self.kind == "nested" else "folds"
            state = (f"{len(list(folder.glob(pattern)))} of {total} {unit} stored, training "
                     "the rest")
        print(f"htnet grid: {self.kind} {self.key} ({self.why or 'no reason given'}): {state}",
              flush=True)
        start = time.perf_counter()
        if self.kind == "loso":
            run_loso(data, self.config, seed=self.seed, runs_dir=self.runs_dir,
                     profile=self.profile, device=self.device, workers=self.workers,
                     trainer=self.trainer, progress=False)
        elif self.kind == "nested":
            run_nested(data, self.config, seed=self.seed, runs_dir=self.runs_dir,
                       profile=self.profile, workers=self.workers)
        else:
            run_lodo(data, self.config, seed=self.seed, store_dir=self.lodo_dir,
                     profile=self.profile, workers=self.workers)
        print(f"htnet grid: {self.kind} {self.key} finished in {folder} "
              f"({time.perf_counter() - start:.0f} s in this job)", flush=True)
        return rid

    def checkpoint(self, *args, **kwargs):
        """Called by submitit when the job is preempted or reaches its time limit: submit this
        job again. Finished folds are on disk already, so the new job resumes from them."""
        from submitit.helpers import DelayedSubmission

        return DelayedSubmission(self, *args, **kwargs)

    def __repr__(self) -> str:
        return f"RunJob({self.kind}, {self.key or self.profile})"


# --------------------------------------------------------------------------- executors


def detect_launcher() -> str:
    """``slurm`` where Slurm's ``srun`` is on PATH, else ``local``."""
    return "slurm" if shutil.which("srun") else "local"


def make_executor(launcher: str, log_dir: Path, *, time_min: int = 60, gpus_per_job: int = 0,
                  cpus_per_job: int = 1, partition: str | None = None,
                  slurm_args: dict | None = None, parallel: int = 0, max_requeues: int = 3):
    """The submitit executor of ``launcher`` (slurm, local or debug), logging to ``log_dir``.

    Slurm jobs get one task on one node with ``cpus_per_job`` cores, ``gpus_per_job`` GPUs and
    ``time_min`` minutes; submitit asks Slurm for USR2 90 s before the limit (half the limit
    for limits under 3 minutes: Slurm signals a job whose limit is shorter than the warning as
    it starts), and the job then requeues itself (at most ``max_requeues`` times). ``slurm_args`` are further ``#SBATCH`` options (``{"account": "abc"}``);
    ``parallel`` (0: Slurm's default) caps how many jobs of one array run at a time.
    Local jobs see ``gpus_per_job`` GPUs (none if 0) and are requeued the same way after
    ``time_min`` minutes.
    """
    try:
        import submitit
    except ImportError:
        raise ConfigError("htnet grid needs submitit: pip install 'htnetlib[cluster]'") from None
    if launcher == "slurm":
        if not shutil.which("srun") or not shutil.which("sbatch"):
            raise ConfigError("--launcher slurm: srun and sbatch are not on PATH; run htnet "
                              "grid on the cluster's login node, or use --launcher local")
        executor = submitit.AutoExecutor(folder=log_dir, cluster="slurm",
                                         slurm_max_num_timeout=max_requeues)
        params = dict(timeout_min=time_min, nodes=1, tasks_per_node=1,
                      cpus_per_task=cpus_per_job, slurm_signal_delay_s=min(90, time_min * 30),
                      slurm_additional_parameters=slurm_args or {})
        if gpus_per_job:
            params["gpus_per_node"] = gpus_per_job
        if partition:
            params["slurm_partition"] = partition
        if parallel:
            params["slurm_array_parallelism"] = parallel
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
    """How one run's job ended: ``finished``, ``failed`` (``error`` says why), ``cancelled``
    or ``left``."""

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
        """The finished jobs, the failed ones with their error, the cancelled ones and the
        ones left."""
        finished, failed, cancelled, left = (self.runs(s) for s in
                                             ("finished", "failed", "cancelled", "left"))
        where = f"; logs in {self.log_dir}" if self.log_dir else ""
        lines = [f"summary: {len(finished)} finished, {len(failed)} failed, {len(cancelled)} "
                 f"cancelled, {len(left)} left (of {len(self.ends)} jobs{where})"]
        lines += [f"  finished {e.run_id}" for e in finished]
        lines += [f"  failed   {e.run_id} (job {e.job_id}): {e.error}; log {e.log}"
                  for e in failed]
        lines += [f"  cancelled {e.run_id} (job {e.job_id}); log {e.log}" for e in cancelled]
        lines += [f"  left     {e.run_id}" + (f" (job {e.job_id}: {e.error})" if e.job_id else
                                              " (not submitted)") for e in left]
        if failed or cancelled or left:
            lines.append("start the same htnet grid again to resume: stored folds are kept")
        return "\n".join(lines)


def _last_line(text: str | None) -> str:
    lines = [line.strip() for line in (text or "").splitlines() if line.strip()]
    return lines[-1] if lines else ""


def job_error(job, raised: BaseException | None = None, runs_dir: Path | None = None) -> str:
    """Why a job ended without finishing its run, in one line.

    For a job that raised, the last line of its traceback (the exception and its message);
    for one that ended without a result (killed, out of memory, cancelled, out of time), its
    Slurm state and the last line of its error log; for one that returned but left no run in
    ``runs_dir`` (the launcher's view of ``--out``), that. ``raised`` is an error the debug
    launcher raised in this process.
    """
    if raised is None and job.paths.result_pickle.exists():
        raised = job.exception()
        if raised is None:
            return (f"the job returned, but its run is not stored under {runs_dir}: does "
                    "every job see the same --out folder?")
    name = type(raised).__name__
    if name == "FailedJobError":  # the message holds the job's traceback between dashes
        return _last_line(str(raised).split("-" * 22)[1])
    if raised is not None and name != "UncompletedJobError":
        return f"{name}: {_last_line(str(raised))}"
    state = _slurm_state(job) if _is_slurm(job) else ""
    state = f"state {state}; " if state else ""
    last = _last_line(job.stderr())
    return (f"ended without a result ({state}killed, cancelled or out of memory?)"
            + (f"; last log line: {last}" if last else ""))


def _is_local(job) -> bool:
    return type(job).__name__ == "LocalJob"


def _is_slurm(job) -> bool:
    return type(job).__name__ == "SlurmJob"


def _poll(job) -> tuple[str, BaseException | None]:
    """``job``'s state (:func:`state_of`), or for local and debug jobs ``running`` or
    ``ended``; the debug launcher runs the job here and raises its error."""
    if _is_slurm(job):
        return state_of(job), None
    try:
        return ("ended" if job.done() else "running"), None
    except Exception as exc:  # noqa: BLE001 - the job's own error, reported in the summary
        return "ended", exc


def submit_array(executor, tasks: list) -> list:
    """Submit ``tasks`` in one submitit batch: one Slurm job array (its parallelism is the
    executor's ``slurm_array_parallelism``), or one local process per task."""
    if len(tasks) == 1:
        return [executor.submit(tasks[0])]
    with executor.batch():
        jobs = [executor.submit(t) for t in tasks]
    return jobs


def launch(executor, tasks: list[RunJob], *, parallel: int = 0, poll_s: float = 1.0,
           state: Path | None = None) -> Outcome:
    """Submit every task as job arrays (at most ``parallel`` local jobs at a time, 0: all at
    once; a Slurm array runs at most its ``slurm_array_parallelism`` jobs at a time), wait for
    them and say how each ended. A job that another launcher has finished meanwhile is not
    submitted again; jobs that another process is training (their ``.lock`` exists) are
    submitted last. Each submitted job is recorded in the state file ``state`` (see
    :func:`record_submitted`). A Ctrl-C cancels this machine's local jobs, says what is left,
    and raises KeyboardInterrupt.
    """
    from ..training.store import LOCK_NAME

    outcome = Outcome(log_dir=Path(executor.folder))
    pending = list(tasks)
    running: dict = {}  # job -> task
    total, ended = len(tasks), 0
    array = getattr(executor, "cluster", None) == "slurm"  # the array limits itself

    def end(task, how, job=None, error=""):
        nonlocal ended
        ended += 1
        e = JobEnd(task.key, how, str(job.job_id) if job else "", error,
                   job.paths.stderr if job else None)
        outcome.ends.append(e)
        print(f"[{ended}/{total}] {how} {task.key}" + (f": {error}" if error else ""),
              flush=True)

    try:
        while pending or running:
            pending.sort(key=lambda t: (t.folder / LOCK_NAME).exists())
            room = len(pending) if array or not parallel else parallel - len(running)
            batch = []
            while pending and len(batch) < room:
                task = pending.pop(0)
                if task.stored():
                    end(task, "finished", error="stored meanwhile, not submitted")
                    continue
                batch.append(task)
            if batch:
                if array:
                    executor.update_parameters(name=f"htnet-{batch[0].profile}")  # squeue
                jobs = submit_array(executor, batch)
                for job, task in zip(jobs, batch):
                    running[job] = task
                    print(f"submitted {task.kind} {task.key} as job {job.job_id}", flush=True)
                if state is not None and not isinstance(executor, _debug_executor()):
                    record_submitted(state, executor, list(zip(batch, jobs)))
            for job in list(running):
                how, raised = _poll(job)
                if how in ACTIVE:
                    continue
                task = running.pop(job)
                if raised is None and task.stored():
                    end(task, "finished", job)
                elif how == "cancelled":
                    end(task, "cancelled", job)
                else:
                    end(task, "failed", job, job_error(job, raised, task.runs_dir))
            if running:
                time.sleep(poll_s)
    except KeyboardInterrupt:
        for job, task in running.items():
            if _is_local(job):
                job.cancel()
            outcome.ends.append(JobEnd(task.key, "left", str(job.job_id),
                                       "cancelled" if _is_local(job) else "still queued or "
                                       "running on the cluster"))
        outcome.ends += [JobEnd(t.key, "left") for t in pending]
        print(outcome.summary(), flush=True)
        raise
    return outcome


def _debug_executor():
    from submitit import DebugExecutor

    return DebugExecutor


# --------------------------------------------------------------------------- submitted jobs

ACTIVE = ("pending", "running")  # states in which a recorded job is not submitted again


def default_state(log_dir: Path | None) -> Path:
    """The state file: ``submitted.json`` in the folder that holds the log folders (``--log-dir``'s
    parent, default ``.cache/grid-logs``), so every launch of one grid finds it."""
    from ..io import ROOT

    return (Path(log_dir).parent if log_dir else ROOT / ".cache" / "grid-logs") / "submitted.json"


def load_submitted(path: Path) -> dict:
    """The recorded jobs of the state file ``path``: ``{out folder: {job key: record}}``, empty
    where there is no file yet."""
    from ..io import read_json

    path = Path(path)
    if not path.exists():
        return {}
    try:
        return read_json(path)
    except DataError as exc:
        raise ConfigError(f"--state {path}: {exc}; delete it to forget the submitted jobs"
                          ) from None


def record_submitted(path: Path, executor, submitted: list) -> None:
    """Add ``submitted`` ((task, submitit job) pairs) to the state file ``path``, under each
    task's ``--out`` folder, replacing older records of the same job; written atomically (read
    again just before, so launchers that share the file keep each other's records)."""
    from ..io import write_json

    cluster = "slurm" if getattr(executor, "cluster", None) == "slurm" else "local"
    stored = load_submitted(path)
    for task, job in submitted:
        stored.setdefault(str(task.runs_dir), {})[task.key] = {
            "job_id": str(job.job_id), "launcher": cluster, "folder": str(Path(executor.folder)),
            "kind": task.kind, "why": task.why,
            "submitted": time.strftime("%Y-%m-%dT%H:%M:%S%z")}
    write_json(Path(path), stored)


def recorded_job(record: dict):
    """The submitit job (a SlurmJob or a LocalJob) of a record of the state file."""
    folder, job_id = Path(record["folder"]), str(record["job_id"])
    if record.get("launcher") == "slurm":
        from submitit.slurm.slurm import SlurmJob

        return SlurmJob(folder, job_id)
    from submitit.local.local import LocalJob

    return LocalJob(folder, job_id)


def job_state(record: dict) -> str:
    """The state (:func:`state_of`) of a job recorded in the state file."""
    return state_of(recorded_job(record))


def state_of(job) -> str:
    """``pending``, ``running``, ``finished``, ``failed`` or ``cancelled``: a submitit Slurm or
    local job's state.

    A job that wrote its result has finished, or failed if it raised. Slurm jobs without a
    result: Slurm's state from ``squeue`` (pending also while the controller cannot be
    reached, so that nothing is submitted twice); once the controller has forgotten the job,
    cancelled if its log says so or if it left no log (it never started: removed while
    pending), else failed (killed, out of memory or out of time). Local jobs without a result:
    running while the job's controller process (its id is the job id) lives, else failed."""
    from submitit.core.utils import pickle_load

    slurm = _slurm_state(job) if _is_slurm(job) else None  # before the result: no race
    if job.paths.result_pickle.exists():
        try:
            outcome, _ = pickle_load(job.paths.result_pickle)
        except Exception:  # noqa: BLE001 - a damaged result file: the job left no result
            return "failed"
        return "finished" if outcome == "success" else "failed"
    if slurm is None:
        return "running" if _controller_alive(str(job.job_id), job.paths.folder) else "failed"
    if not slurm:
        log = job.paths.stderr
        return "cancelled" if not log.exists() or _CANCELLED.search(job.stderr() or "") \
            else "failed"
    for state, starts in _SLURM_STATES.items():
        if slurm.startswith(starts):
            return state
    return "failed"


# Slurm's job states (squeue's %T) by the state they mean here; any other one is failed
_SLURM_STATES = {"pending": ("PENDING", "REQUEUE", "CONFIGURING", "SUSPENDED", "RESIZING",
                             "UNKNOWN"),
                 "running": ("RUNNING", "COMPLETING", "SIGNALING", "STAGE_OUT"),
                 "cancelled": ("CANCELLED",)}
# what slurmstepd writes to a job's log when scancel stops it ("... DUE TO TIME LIMIT" or
# "... DUE TO JOB REQUEUE" are other ends)
_CANCELLED = re.compile(r"\*\*\* JOB \S+ ON \S+ CANCELLED AT \S+ \*\*\*")


def _slurm_state(job) -> str:
    """Slurm's state of a SlurmJob from ``squeue`` (PENDING, RUNNING, CANCELLED, ...), UNKNOWN
    where squeue fails, or ``""`` where the controller no longer knows the job."""
    try:
        done = subprocess.run(["squeue", "--noheader", "--array", "--states=all", "--jobs",
                               str(job.job_id), "--format=%T"],
                              capture_output=True, text=True, timeout=60)
    except (OSError, subprocess.TimeoutExpired):
        return "UNKNOWN"
    if done.returncode == 0:
        return done.stdout.split()[0] if done.stdout.split() else ""
    return "" if "Invalid job id" in done.stderr else "UNKNOWN"


def _controller_alive(job_id: str, folder: Path) -> bool:
    """Whether process ``job_id`` lives and is submitit's controller of a job in ``folder``."""
    try:
        pid = int(job_id)
        os.kill(pid, 0)
    except (ValueError, ProcessLookupError):
        return False
    except PermissionError:
        return True  # another user's process: cannot tell, so do not submit again
    cmdline = Path(f"/proc/{pid}/cmdline")
    if not cmdline.exists():
        return True  # no /proc here: the process lives
    try:
        args = cmdline.read_bytes().split(b"\0")
    except OSError:
        return False
    return b"submitit.local._local" in args and str(folder).encode() in args


def active_jobs(path: Path, out: Path) -> dict:
    """Job key -> (record, state) of every job recorded for ``out`` in the state file ``path``
    that is still pending or running."""
    recorded = load_submitted(path).get(str(Path(out).absolute()), {})
    states = {key: (rec, job_state(rec)) for key, rec in recorded.items()}
    return {key: v for key, v in states.items() if v[1] in ACTIVE}
