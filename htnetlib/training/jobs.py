"""Jobs: one fold's training arrays, and the trainers that run a list of them.

A job is a dict that :func:`htnetlib.training.fold.train_fold` takes (configuration, training
and test arrays, seed, device, name) plus the subject it holds out and the file it is stored
in. LOSO folds, nested inner fits and leave-one-dataset-out fits are all jobs, cut by
:class:`JobArrays` and trained by :func:`train_jobs`: fold after fold in worker processes
(``loop``), or many at once as one batched computation (``grouped``,
:mod:`htnetlib.training.parallel`). Each finished job is stored atomically as it ends.
:func:`produce` trains the missing jobs of one stored result (a run, an inner store or a
leave-one-dataset-out result, :mod:`htnetlib.training.store`) under its lock: resume, damaged
files set aside, assembly, and the final config.json written last.
"""

from __future__ import annotations

import os
import shutil
import signal
import threading
import time
import traceback
import warnings
from contextlib import contextmanager
from pathlib import Path
from typing import Callable

import numpy as np
import torch

from ..config import Config, is_user_model
from ..errors import StoreWarning, UserModelError, exit_code
from ..data import Composite
from ..data.regions import network_inputs
from .fold import train_fold
from ..io import write_json
from .stamps import mixed_stamps, read_stamp, training_stamp, write_stamps
from .store import (LOCK_NAME, Kind, clear_jobs, is_complete, run_lock, save_fold, set_aside,
                    stored_fold_ok)


class JobArrays:
    """The model inputs, mirrored inputs (``config.mirror`` or ``config.readouts``, else None)
    and labels of every sample, from which :meth:`job` cuts one :func:`train_fold` job."""

    def __init__(self, data: Composite, config: Config):
        self.config = config
        self.x = network_inputs(data, config)
        self.mirror = (network_inputs(data, config, mirror=True)
                       if config.mirror or config.readouts else None)
        self.y = data.table["label"].to_numpy()

    def job(self, fit: np.ndarray, test: np.ndarray, **job) -> dict:
        """A job training on the rows ``fit`` and testing on the rows ``test`` (masks);
        ``job`` adds seed, device, name, subject and path."""
        out = dict(config=self.config, x_train=self.x[fit], y_train=self.y[fit],
                   x_test=self.x[test], y_test=self.y[test], **job)
        if self.config.mirror:
            out["x_train_mirror"] = self.mirror[fit]
        if self.config.readouts:
            out["x_test_mirror"] = self.mirror[test]
        return out


def train_jobs(jobs: list[dict], trainer: str, dev: torch.device, workers: int,
                threads: int | None, progress: bool):
    """Train and store every job; yield the number of folds finished at each step."""
    if trainer == "grouped":
        from .parallel import train_groups

        if threads and dev.type == "cpu":
            torch.set_num_threads(threads)
        # groups sized by a dry run on a GPU, halved on out-of-memory; each stored as it ends
        for group, results in train_groups(jobs[0]["config"] if jobs else None, jobs,
                                           device=dev, progress=progress):
            for job, res in zip(group, results):
                save_fold(job["path"], job["subject"], res, job.get("stamp"))
            yield len(group)
        return
    workers = max(1, min(workers, len(jobs)))
    if workers == 1:
        for job in jobs:
            fold_job(job, threads, progress=progress)
            yield 1
        return
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor, as_completed

    ctx = multiprocessing.get_context("spawn")
    pool = ProcessPoolExecutor(workers, mp_context=ctx, initializer=watch_parent,
                               initargs=(os.getpid(),))
    try:
        for fut in as_completed([pool.submit(fold_job, job, threads) for job in jobs]):
            fut.result()
            yield 1
    except BaseException:  # Ctrl-C, a failed fold, or the caller closing us: stop at once
        stop_pool(pool)
        raise
    pool.shutdown(wait=True)


# The pid of the process that started this worker (None outside a worker): see watch_parent.
_PARENT: int | None = None
PARENT_POLL_SECONDS = 0.2


def watch_parent(parent: int) -> None:
    """Initializer of a fold worker: end this process as soon as its parent is gone.

    A parent killed by SIGTERM or SIGKILL cannot stop its workers, which would otherwise go on
    training (and storing) folds nobody waits for. A daemon thread checks ``os.getppid()``
    every :data:`PARENT_POLL_SECONDS` and calls ``os._exit`` once it changes. Ctrl-C is left
    to the parent (SIGINT is ignored here), which stops the pool at once (:func:`stop_pool`).
    """
    global _PARENT
    _PARENT = parent
    signal.signal(signal.SIGINT, signal.SIG_IGN)

    def watch() -> None:
        while os.getppid() == parent:
            time.sleep(PARENT_POLL_SECONDS)
        os._exit(1)

    threading.Thread(target=watch, name="htnet-parent-watch", daemon=True).start()


def parent_alive() -> bool:
    """False in a worker whose parent has gone (True outside a worker)."""
    return _PARENT is None or os.getppid() == _PARENT


def stop_pool(pool) -> None:
    """Cancel the queued folds of ``pool`` and end its worker processes now, without waiting
    for the folds they are training; the folds stored so far stay, so the next call resumes."""
    processes = list((getattr(pool, "_processes", None) or {}).values())
    pool.shutdown(wait=False, cancel_futures=True)
    for process in processes:
        if process.is_alive():
            process.terminate()
    for process in processes:
        process.join(timeout=2)
        if process.is_alive():
            process.kill()
            process.join(timeout=2)


@contextmanager
def user_model_errors(model: str, fold: str):
    """Around the training of one fold: where ``model`` is a user's ``package.module:factory``,
    an error of its network (a shape bug, no parameters, integer logits; anything but the
    errors htnet itself names, an interruption, an OS error or running out of memory) becomes
    a :class:`~htnetlib.errors.UserModelError` naming the factory and the fold and carrying
    the traceback: it is the user's code, not a bug of htnetlib."""
    try:
        yield
    except Exception as exc:
        if not is_user_model(model) or exit_code(exc) is not None:
            raise
        details = "".join(traceback.format_exception(exc))
        reason = (str(exc).strip().splitlines() or [""])[0]
        raise UserModelError(f"model {model} failed in {fold}: {type(exc).__name__}: {reason} "
                             "(its traceback above; the error is in that network's code)",
                             details) from exc


def fold_job(job: dict, threads: int | None, progress: bool = False) -> None:
    """Train one fold and store it atomically (runs in a worker process when workers > 1).

    A worker whose parent has gone stores nothing: nobody waits for the fold, and a file
    written after the parent died would appear behind the user's back."""
    if threads and torch.get_num_threads() != threads:
        torch.set_num_threads(threads)
    with user_model_errors(getattr(job["config"], "model", ""), job["name"]):
        res = train_fold(job["config"], job["x_train"], job["y_train"], job["x_test"],
                         job["y_test"], seed=job["seed"], device=torch.device(job["device"]),
                         name=job["name"], progress=progress,
                         x_train_mirror=job.get("x_train_mirror"),
                         x_test_mirror=job.get("x_test_mirror"))
    if not parent_alive():
        os._exit(1)
    save_fold(job["path"], job["subject"], res, job.get("stamp"))


def produce(kind: Kind, folder: Path, *, meta: dict, jobs: Callable[[], list[dict]],
            assemble: Callable[[dict, list[dict]], dict], retrain: bool = False,
            trainer: str | Callable = "loop", device: torch.device | None = None,
            workers: int = 1, threads: int | None = 1, progress: bool = False,
            desc: str | None = None) -> Path:
    """Train, resume or reuse one stored result of ``kind`` in ``folder``, under its lock.

    With ``retrain`` everything but the lock is removed first. A result found finished (by
    another process, or one killed after its final config.json) keeps its files and loses its
    leftover job files. Otherwise: ``meta`` is written as config.json without the completion
    keys (unfinished); ``jobs()`` gives every job, of which those not stored and usable
    (:func:`stored_fold_ok`) are trained by ``trainer`` (``loop`` or ``grouped``, see
    :func:`train_jobs`; or a function of the jobs to train giving
    ``(trainer, timing)``, whose choice and timing config.json records as ``trainer`` and
    ``trainer_timing``); ``assemble(meta, jobs)`` writes the result's other files and returns
    the final config.json, written last; then the job files are removed.

    For a kind with a stamps file (a run's ``folds.json``), every job trained now carries the
    stamp of this start (:func:`~htnetlib.training.stamps.training_stamp`; its file adds the
    time), a job reused keeps the stamp it was stored with, and the file is written again
    whenever the stored jobs change; jobs from more than one commit (a resume across commits)
    are named in one :class:`~htnetlib.errors.StoreWarning`.
    """
    folder = Path(folder)
    device = device if device is not None else torch.device("cpu")
    with run_lock(folder):
        if retrain:  # remove everything but the lock we hold
            for path in folder.iterdir():
                if path.is_dir():
                    shutil.rmtree(path)
                elif path.name != LOCK_NAME:
                    path.unlink()
        if is_complete(folder, kind):
            clear_jobs(folder, kind)
            return folder
        set_aside(folder, kind)  # a finished result damaged afterwards: named, trained again
        meta = {k: v for k, v in meta.items() if k not in kind.finished}
        write_json(folder / "config.json", meta)  # without the completion keys: unfinished
        every = jobs()
        todo = [j for j in every if not stored_fold_ok(j)]  # resume; damaged ones again
        if callable(trainer):
            trainer, timing = trainer(todo)
            meta.update(trainer=trainer, trainer_timing=timing)
            write_json(folder / "config.json", meta)
        stamps: dict[int, dict] = {}
        if kind.stamps is not None:
            stamp = training_stamp(device, trainer)
            for job in todo:
                job["stamp"] = stamp
            stamps = gather_stamps(folder / kind.stamps, every, stamps, force=True)
            mixed = mixed_stamps(folder.name, list(stamps.values()) + ([stamp] if todo else []))
            if mixed:
                warnings.warn(mixed, StoreWarning, stacklevel=2)
        bar = None
        if progress:
            from tqdm.auto import tqdm
            bar = tqdm(total=len(every), initial=len(every) - len(todo), desc=desc or folder.name,
                       unit="fold")
        steps = train_jobs(todo, trainer, device, workers, threads, progress)
        try:  # an error ends the bar's line first, so the error starts a line of its own
            for done in steps:
                if bar is not None:
                    bar.update(done)
                if kind.stamps is not None:
                    stamps = gather_stamps(folder / kind.stamps, every, stamps)
        finally:
            steps.close()  # stops the worker processes at once if we did not finish
            if bar is not None:
                bar.close()
        final = assemble(meta, every)
        lacking = [k for k in kind.finished if k not in final]
        if lacking:
            raise AssertionError(f"assembly of a {kind.what} left out {', '.join(lacking)}")
        write_json(folder / "config.json", final)
        clear_jobs(folder, kind)
    return folder


def gather_stamps(path: Path, jobs: list[dict], known: dict[int, dict], *,
                  force: bool = False) -> dict[int, dict]:
    """The stamps of the stored jobs among ``jobs`` by index, ``known`` ones kept and the others
    read from their files (:func:`~htnetlib.training.stamps.read_stamp`), written to the
    stamps file ``path`` (:func:`~htnetlib.training.stamps.write_stamps`) where they changed,
    or always with ``force`` (a start, whose stored jobs may differ from the file's)."""
    found = {k: known.get(k) or read_stamp(job["path"]) for k, job in enumerate(jobs)
             if k in known or Path(job["path"]).is_file()}
    if force or found != known:
        write_stamps(path, jobs, found)
    return found
