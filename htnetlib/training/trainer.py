"""Which trainer trains a LOSO run's folds: ``loop`` or ``grouped``, chosen by measurement.

Both trainers compute the same predictions (:mod:`htnetlib.training.parallel`, tested), so the
choice is about time alone and never enters a run id. On a GPU the grouped trainer is the fast
path. On a CPU neither wins everywhere: grouping saves the framework's per-operation overhead
of HTNet's small tensors, while ``loop`` runs ``workers`` processes side by side, and which
matters more depends on the machine, the configuration and the thread counts. So
:func:`choose` trains a few folds of the actual configuration for a few epochs with each
trainer and picks the one whose projected time for the whole run is lower. The decision is
cached per (configuration, workers, threads, machine) in ``trainer_choice.json`` under
:func:`htnetlib.data.regions.cache_dir`, so it is measured once.
"""

from __future__ import annotations

import dataclasses
import math
import platform
import time

import torch

from ..config import Config
from ..data.regions import cache_dir
from ..errors import RunError
from ..io import device_name, read_json, write_json
from . import fold as fold_mod
from .store import hash_id


CACHE_NAME = "trainer_choice.json"


MEASURED_FOLDS = 3


MEASURED_EPOCHS = 2


def grouped_supported(config: Config) -> bool:
    """Whether the grouped trainer implements ``config``: HTNet without the later training
    fields (class weights, mirror, schedule: :data:`htnetlib.config.LATER_FIELDS`)."""
    return config.model == "htnet" and not fold_mod.later_fields(config)


def cache_key(config: Config, workers: int, threads: int | None) -> str:
    """The key of one decision: configuration, workers, threads and the machine (host, CPU,
    cores, torch version)."""
    return hash_id("trainer", {"config": config.to_dict(), "workers": workers,
                               "threads": threads, "host": platform.node(),
                               "cpu": device_name("cpu"), "torch": torch.__version__})


def _read_cache() -> dict:
    try:
        return read_json(cache_dir() / CACHE_NAME)
    except RunError:  # missing or damaged: measure again
        return {}


def measure(config: Config, jobs: list[dict], workers: int, threads: int | None,
            n_folds: int) -> dict:
    """Train up to :data:`MEASURED_FOLDS` of ``jobs`` for :data:`MEASURED_EPOCHS` epochs with
    each trainer (after an untimed one-epoch warm-up of each) and project the whole run of ``n_folds`` folds:
    ``loop`` runs ``workers`` folds side by side, ``grouped`` all folds as one computation.
    Nothing is stored; every fold is seeded on its own, so the run's results do not change."""
    from .parallel import train_group

    short = dataclasses.replace(config, epochs=min(MEASURED_EPOCHS, config.epochs))
    sample = [dict(j, config=short) for j in jobs[:MEASURED_FOLDS]]
    cpu = torch.device("cpu")
    before = torch.get_num_threads()
    if threads:
        torch.set_num_threads(threads)
    try:
        def fit(job, cfg):
            return fold_mod.train_fold(cfg, job["x_train"], job["y_train"], job["x_test"],
                                       job["y_test"], seed=job["seed"], device=cpu,
                                       x_train_mirror=job.get("x_train_mirror"),
                                       x_test_mirror=job.get("x_test_mirror"))

        one = dataclasses.replace(short, epochs=1)  # warm-ups: first-call costs of each path
        fit(sample[0], one)
        train_group(one, sample[:2], device=cpu)
        start = time.perf_counter()
        for job in sample:
            fit(job, short)
        loop = time.perf_counter() - start
        start = time.perf_counter()
        train_group(short, sample, device=cpu)
        grouped = time.perf_counter() - start
    finally:
        torch.set_num_threads(before)
    k = len(sample)
    side_by_side = max(1, min(workers, n_folds))
    return {"measured_folds": k, "measured_epochs": short.epochs,
            "loop_seconds": round(loop, 3), "grouped_seconds": round(grouped, 3),
            "loop_projected_seconds": round(loop / k * math.ceil(n_folds / side_by_side)
                                            * config.epochs / short.epochs, 1),
            "grouped_projected_seconds": round(grouped / k * n_folds
                                               * config.epochs / short.epochs, 1),
            "workers": workers, "threads": threads}


def choose(config: Config, jobs: list[dict], workers: int, threads: int | None
           ) -> tuple[str, dict | None]:
    """``(trainer, timing)`` for training ``jobs`` on the CPU: ``loop`` without a timing when
    the grouped trainer does not support ``config`` or nothing is left to train; else the
    cached decision for this configuration and machine, or a new :func:`measure`."""
    if not grouped_supported(config) or not jobs:
        return "loop", None
    key = cache_key(config, workers, threads)
    cached = _read_cache().get(key)
    if isinstance(cached, dict) and cached.get("trainer") in ("loop", "grouped"):
        return cached["trainer"], {**cached.get("timing", {}), "cached": True}
    timing = measure(config, jobs, workers, threads, len(jobs))
    trainer = ("grouped" if timing["grouped_projected_seconds"]
               < timing["loop_projected_seconds"] else "loop")
    cache = _read_cache()
    cache[key] = {"trainer": trainer, "timing": timing}
    try:
        write_json(cache_dir() / CACHE_NAME, cache)
    except OSError:  # a read-only cache: measure again next time
        pass
    return trainer, {**timing, "cached": False}
