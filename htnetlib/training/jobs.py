"""Jobs: one fold's training arrays, and the trainers that run a list of them.

A job is a dict that :func:`htnetlib.training.fold.train_fold` takes (configuration, training
and test arrays, seed, device, name) plus the subject it holds out and the file it is stored
in. LOSO folds, nested inner fits and leave-one-dataset-out fits are all jobs, cut by
:class:`JobArrays` and trained by :func:`train_jobs`: fold after fold in worker processes
(``loop``), or many at once as one batched computation (``grouped``,
:mod:`htnetlib.training.parallel`). Each finished job is stored atomically as it ends.
"""

from __future__ import annotations

import numpy as np
import torch

from ..config import Config
from ..data import Composite
from ..data.regions import network_inputs
from .fold import train_fold
from .store import save_fold


class JobArrays:
    """The model inputs, mirrored inputs (``config.mirror``, else None) and labels of every
    sample, from which :meth:`job` cuts one :func:`train_fold` job."""

    def __init__(self, data: Composite, config: Config):
        self.config = config
        self.x = network_inputs(data, config)
        self.mirror = network_inputs(data, config, mirror=True) if config.mirror else None
        self.y = data.table["label"].to_numpy()

    def job(self, fit: np.ndarray, test: np.ndarray, **job) -> dict:
        """A job training on the rows ``fit`` and testing on the rows ``test`` (masks);
        ``job`` adds seed, device, name, subject and path."""
        out = dict(config=self.config, x_train=self.x[fit], y_train=self.y[fit],
                   x_test=self.x[test], y_test=self.y[test], **job)
        if self.mirror is not None:
            out["x_train_mirror"] = self.mirror[fit]
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
                save_fold(job["path"], job["subject"], res)
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
    with ProcessPoolExecutor(workers, mp_context=ctx) as pool:
        for fut in as_completed([pool.submit(fold_job, job, threads) for job in jobs]):
            fut.result()
            yield 1


def fold_job(job: dict, threads: int | None, progress: bool = False) -> None:
    """Train one fold and store it atomically (runs in a worker process when workers > 1)."""
    if threads and torch.get_num_threads() != threads:
        torch.set_num_threads(threads)
    res = train_fold(job["config"], job["x_train"], job["y_train"], job["x_test"], job["y_test"],
                     seed=job["seed"], device=torch.device(job["device"]), name=job["name"],
                     progress=progress, x_train_mirror=job.get("x_train_mirror"))
    save_fold(job["path"], job["subject"], res)

