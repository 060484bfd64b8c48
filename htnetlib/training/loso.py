"""Leave-one-subject-out training (paper section 4.2): one run of one configuration and seed.

For every held-out subject a fresh model is trained on all other subjects and the held-out
subject is predicted after every epoch (:mod:`htnetlib.training.fold`); the run is stored,
resumed and read back through :mod:`htnetlib.training.store`.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from ..config import Config, check_seed
from ..data import Composite
from ..errors import ConfigError, TrainingError
from ..evaluation import metrics
from ..io import atomic_write, read_json, write_json
from . import trainer as trainer_mod
from .fold import fold_seed, later_fields, pick_device
from .jobs import JobArrays, produce
from .store import (RUN, smoke_folder, check_training_allowed, data_fingerprint, is_complete,
                    joined_probabilities, read_fold, record, reusable, run_id, train_command)


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
        many folds as one batched computation (:mod:`htnetlib.training.parallel`), as many as
        fit in memory; the fast path on a GPU.

    ``auto`` picks ``grouped`` for HTNet on CUDA; on a CPU it measures both on a few folds and
    epochs of this configuration and picks the faster (:func:`htnetlib.training.trainer.choose`,
    cached per configuration and machine); other models and the later training fields always
    train with ``loop``. config.json records the choice (``trainer``) and, when measured,
    ``trainer_timing``. Every fold is seeded on its own, so neither the trainer nor the order
    folds finish in changes what a fold computes, nor the run id.

    The configuration and seed are checked before any folder is made (:class:`ConfigError`).
    Training holds the run's lock (:func:`~htnetlib.training.store.run_lock`): a second process on the same run waits and
    then reuses the finished run. Stored folds are checked before they are kept; a damaged one
    is set aside and trained again (:func:`htnetlib.training.jobs.produce`).
    """
    config.check()
    seed = check_seed(seed)
    if trainer not in ("auto", "loop", "grouped"):
        raise ValueError(f"unknown trainer {trainer!r}; expected auto, loop or grouped")
    if trainer == "grouped" and later_fields(config):
        raise ConfigError(f"the grouped trainer does not implement {', '.join(later_fields(config))}"
                          "; train with --trainer loop")
    fingerprint = data_fingerprint(data)
    rid = run_id(config, seed, fingerprint, profile)
    runs_dir = smoke_folder(runs_dir, profile)  # smoke runs: the git-ignored smoke folder
    run_dir = runs_dir / rid
    if reusable(run_dir, RUN, retrain):
        return run_dir  # a finished run is read without taking the lock
    if retrain or not is_complete(run_dir):
        check_training_allowed(profile, f"run {rid} is not stored under {runs_dir}")
    dev = pick_device(device)
    if trainer == "auto" and (dev.type != "cpu" or not trainer_mod.grouped_supported(config)):
        trainer = "grouped" if (dev.type == "cuda" and trainer_mod.grouped_supported(config)) \
            else "loop"
    choice = trainer if trainer != "auto" else (  # measured on the folds left to train
        lambda todo: trainer_mod.choose(config, todo, workers, threads))
    meta = {"run_id": rid, "profile": profile, **record(data, config, seed, fingerprint, dev),
            "command": train_command(config, seed, profile), "trainer": trainer,
            "workers": workers, "threads": threads}
    manifest = getattr(data, "manifest_status", None)
    if manifest is not None:
        meta["data_manifest"] = manifest
    folds = fold_subjects(data, config)

    def finish(meta: dict, jobs: list[dict]) -> dict:
        extra = {}
        if dev.type == "cuda":
            extra["gpu_peak_memory_gib"] = round(torch.cuda.max_memory_allocated(dev) / 2**30, 2)
        return assemble(run_dir, data, folds, extra, meta)

    return produce(RUN, run_dir, meta=meta, retrain=retrain,
                   jobs=lambda: fold_jobs(data, config, seed, run_dir / "folds", dev),
                   assemble=finish, trainer=choice, device=dev, workers=workers,
                   threads=threads, progress=progress, desc=f"LOSO {rid}")


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


def assemble(run_dir: Path, data: Composite, folds: list[str], extra: dict | None = None,
             meta: dict | None = None) -> dict:
    """Join the finished folds into predictions.csv, epochs.npz and metrics.json, each written
    atomically, and return the final config.json: ``meta`` (the run's unfinished config.json
    if None) with ``n_folds``, which :func:`htnetlib.training.store.is_complete` requires.
    :func:`htnetlib.training.jobs.produce` writes it last: a run killed before that step is
    assembled again by the next :func:`run_loso`, never reused half-written.
    """
    run_dir = Path(run_dir)
    table = data.table
    held = table[table["subject"].isin(folds)]
    order = held.index.to_numpy()  # rows of the predictions, in table order
    position = {row: i for i, row in enumerate(order)}
    fold_files = [read_fold(run_dir / "folds" / f"{k:02d}.npz") for k in range(len(folds))]
    n_epochs = fold_files[0]["pred"].shape[0]
    pred = np.empty((n_epochs, len(order)), dtype=np.int8)
    columns = []
    for k, subject in enumerate(folds):
        f = fold_files[k]
        if str(f["subject"]) != subject:
            raise TrainingError(f"{run_dir}/folds/{k:02d}.npz holds subject {f['subject']}, "
                                f"expected {subject}")
        rows = [position[r] for r in table.index[table["subject"] == subject]]
        pred[:, rows] = f["pred"]
        columns.append(rows)
    out = held[["dataset", "subject", "sample", "label"]].reset_index(drop=True)
    out["honest"] = metrics.honest_predictions(pred)
    out["oracle"] = metrics.oracle_predictions(pred, out["label"], out["subject"])
    per_fold = {key: np.stack([f[key] for f in fold_files])
                for key in ("train_loss", "train_acc", "test_acc")}
    seconds = float(sum(float(f["seconds"]) for f in fold_files))
    atomic_write(run_dir / "epochs.npz", lambda p: np.savez_compressed(
        p, pred=pred, epoch=np.arange(1, n_epochs + 1), subjects=np.array(folds),
        fold_seconds=np.array([float(f["seconds"]) for f in fold_files]), **per_fold,
        **joined_probabilities(fold_files, n_epochs, len(order), columns)))
    atomic_write(run_dir / "predictions.csv", lambda p: out.to_csv(p, index=False))
    write_json(run_dir / "metrics.json",
               {proto: metrics.scores(out, proto) for proto in metrics.PROTOCOLS})
    meta = dict(meta if meta is not None else read_json(run_dir / "config.json"))
    meta["train_seconds"] = round(seconds, 1)
    meta["n_samples"], meta["n_folds"], meta["epochs"] = len(out), len(folds), n_epochs
    meta.update(extra or {})
    return meta
