"""Leave-one-subject-out training (paper section 4.2): one run of one configuration and seed.

For every held-out subject a fresh model is trained on all other subjects and the held-out
subject is predicted after every epoch (:mod:`htnetlib.training.fold`); the run is stored,
resumed and read back through :mod:`htnetlib.training.store`.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import torch

from ..config import Config, check_seed
from ..data import Composite
from ..errors import ConfigError, TrainingError
from ..evaluation import metrics
from ..io import atomic_write, provenance, read_json, read_npz, write_json
from .fold import fold_seed, later_fields, pick_device
from .jobs import JobArrays, train_jobs
from .store import (FOLD_KEYS, LOCK_NAME, check_training_allowed, data_fingerprint, is_complete,
                    run_id, run_lock, stored_fold_ok, train_command)


def fold_subjects(data: Composite, config: Config) -> list[str]:
    """Held-out subjects in run order (sorted), cut to ``max_folds`` if set."""
    subjects = sorted(data.table["subject"].unique())
    return subjects[: config.max_folds] if config.max_folds else subjects


def run_loso(data: Composite, config: Config, *, seed: int = 0, runs_dir: Path | str = "results/runs",
             profile: str | None = None, device: str | None = None, retrain: bool = False,
             workers: int = 1, threads: int | None = 1, trainer: str = "auto",
             progress: bool = True) -> Path:
    """Train (or resume, or reuse) one LOSO run and return its folder.

    Two trainers compute the same thing (tested):

    ``loop``
        one fold after another, in ``workers`` processes; ``threads`` is torch's intra-op
        thread count per process (None keeps torch's default). HTNet's small tensors run
        fastest with one thread per core on a CPU, and several threads per process slow to a
        crawl when cores are shared.
    ``grouped``
        many folds as one batched computation (:mod:`htnetlib.parallel`), as many as fit in
        memory; the fast path on a GPU.

    ``auto`` picks ``grouped`` for HTNet on CUDA and ``loop`` otherwise. Every fold is seeded on
    its own, so neither the trainer nor the order folds finish in changes what a fold computes.

    The configuration and seed are checked before any folder is made (:class:`ConfigError`).
    Training holds the run's lock (:func:`run_lock`): a second process on the same run waits and
    then reuses the finished run. Stored folds are checked before they are kept; a damaged one
    is set aside and trained again.
    """
    config.check()
    seed = check_seed(seed)
    fingerprint = data_fingerprint(data)
    rid = run_id(config, seed, fingerprint, profile)
    run_dir = Path(runs_dir) / rid
    finished = is_complete(run_dir) and not retrain
    if finished and not any((run_dir / name).exists() for name in ("folds", LOCK_NAME)):
        return run_dir  # a finished run is read without taking the lock
    if not finished:
        check_training_allowed(profile, f"run {rid} is not stored under {runs_dir}")
    with run_lock(run_dir):
        return _train_run(data, config, seed, fingerprint, run_dir, profile=profile,
                          device=device, retrain=retrain, workers=workers, threads=threads,
                          trainer=trainer, progress=progress)


def _train_run(data: Composite, config: Config, seed: int, fingerprint: str, run_dir: Path, *,
               profile: str | None, device: str | None, retrain: bool, workers: int,
               threads: int | None, trainer: str, progress: bool) -> Path:
    """The body of :func:`run_loso`, run while holding the run's lock."""
    rid = run_dir.name
    if retrain:  # remove everything but the lock we hold
        for path in run_dir.iterdir():
            if path.is_dir():
                shutil.rmtree(path)
            elif path.name != LOCK_NAME:
                path.unlink()
    if is_complete(run_dir):
        # finished by another process, or killed after its final config.json was written
        shutil.rmtree(run_dir / "folds", ignore_errors=True)
        return run_dir
    dev = pick_device(device)
    if trainer == "auto":
        trainer = "grouped" if (dev.type == "cuda" and config.model == "htnet"
                                and not later_fields(config)) else "loop"
    if trainer not in ("loop", "grouped"):
        raise ValueError(f"unknown trainer {trainer!r}; expected auto, loop or grouped")
    if trainer == "grouped" and later_fields(config):
        raise ConfigError(f"the grouped trainer does not implement {', '.join(later_fields(config))}"
                          "; train with --trainer loop")
    meta = {"run_id": rid, "profile": profile, "seed": seed, "config": config.stored_dict(),
            "data_fingerprint": fingerprint, "data_root": Path(data.root).resolve().name,
            **provenance(dev), "command": train_command(config, seed, profile),
            "trainer": trainer, "workers": workers, "threads": threads}
    manifest = getattr(data, "manifest_status", None)
    if manifest is not None:
        meta["data_manifest"] = manifest
    write_json(run_dir / "config.json", meta)

    folds = fold_subjects(data, config)
    # finished folds of an interrupted run are kept; a damaged one is set aside and retrained
    jobs = [j for j in fold_jobs(data, config, seed, run_dir / "folds", dev)
            if not stored_fold_ok(j)]
    bar = None
    if progress:
        from tqdm.auto import tqdm
        bar = tqdm(total=len(folds), initial=len(folds) - len(jobs), desc=f"LOSO {rid}",
                   unit="fold")
    for done in train_jobs(jobs, trainer, dev, workers, threads, progress):
        if bar is not None:
            bar.update(done)
    if bar is not None:
        bar.close()
    extra = {}
    if dev.type == "cuda":
        extra["gpu_peak_memory_gib"] = round(torch.cuda.max_memory_allocated(dev) / 2**30, 2)
    assemble(run_dir, data, folds, extra)
    return run_dir


def fold_jobs(data: Composite, config: Config, seed: int, fold_dir: Path,
              device: torch.device | str = "cpu") -> list[dict]:
    """One job per held-out subject: its training and test arrays, seed, name and output file."""
    arrays = JobArrays(data, config)
    subjects = data.table["subject"].to_numpy()
    folds = fold_subjects(data, config)
    jobs = []
    for k, subject in enumerate(folds):
        test = subjects == subject
        jobs.append(arrays.job(~test, test, seed=fold_seed(seed, k), device=str(device),
                               name=f"fold {k + 1}/{len(folds)} (subject {subject})",
                               subject=subject, path=Path(fold_dir) / f"{k:02d}.npz"))
    return jobs


def assemble(run_dir: Path, data: Composite, folds: list[str], extra: dict | None = None) -> None:
    """Join the finished folds into predictions.csv, epochs.npz and metrics.json.

    Each file is written atomically, and the final config.json (with ``n_folds``, which
    :func:`is_complete` requires) last: a run killed before that step is assembled again by the
    next :func:`run_loso`, never reused half-written. ``folds/`` is removed after it.
    """
    run_dir = Path(run_dir)
    table = data.table
    held = table[table["subject"].isin(folds)]
    order = held.index.to_numpy()  # rows of the predictions, in table order
    position = {row: i for i, row in enumerate(order)}
    fold_files = [read_npz(run_dir / "folds" / f"{k:02d}.npz", FOLD_KEYS)
                  for k in range(len(folds))]
    n_epochs = fold_files[0]["pred"].shape[0]
    pred = np.empty((n_epochs, len(order)), dtype=np.int8)
    for k, subject in enumerate(folds):
        f = fold_files[k]
        if str(f["subject"]) != subject:
            raise TrainingError(f"{run_dir}/folds/{k:02d}.npz holds subject {f['subject']}, "
                                f"expected {subject}")
        rows = [position[r] for r in table.index[table["subject"] == subject]]
        pred[:, rows] = f["pred"]
    out = held[["dataset", "subject", "sample", "label"]].reset_index(drop=True)
    out["honest"] = metrics.honest_predictions(pred)
    out["oracle"] = metrics.oracle_predictions(pred, out["label"], out["subject"])
    per_fold = {key: np.stack([f[key] for f in fold_files])
                for key in ("train_loss", "train_acc", "test_acc")}
    seconds = float(sum(float(f["seconds"]) for f in fold_files))
    atomic_write(run_dir / "epochs.npz", lambda p: np.savez_compressed(
        p, pred=pred, epoch=np.arange(1, n_epochs + 1), subjects=np.array(folds),
        fold_seconds=np.array([float(f["seconds"]) for f in fold_files]), **per_fold))
    atomic_write(run_dir / "predictions.csv", lambda p: out.to_csv(p, index=False))
    write_json(run_dir / "metrics.json",
               {proto: metrics.scores(out, proto) for proto in metrics.PROTOCOLS})
    meta = read_json(run_dir / "config.json")
    meta["train_seconds"] = round(seconds, 1)
    meta["n_samples"], meta["n_folds"], meta["epochs"] = len(out), len(folds), n_epochs
    meta.update(extra or {})
    write_json(run_dir / "config.json", meta)
    shutil.rmtree(run_dir / "folds")

