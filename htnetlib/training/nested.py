"""Nested selection's inner fits: per outer LOSO fold, an inner leave-subjects-out split of its
training subjects (GroupKFold, 5 groups), each inner fit predicting its held-out group after
every epoch. The inner store ``<run>/inner/`` resumes like a run's folds; the rule that reads
it is :func:`htnetlib.evaluation.selection.nested_rule`.
"""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from ..config import Config
from ..data import Composite
from ..evaluation import metrics
from ..evaluation.selection import nested_epochs, nested_rule
from ..io import atomic_write, provenance, read_json, read_npz, write_json
from ..errors import RunError
from .fold import fold_seed
from .jobs import JobArrays, train_jobs
from .loso import fold_subjects, run_loso
from .store import (FOLD_KEYS, LOCK_NAME, Run, check_training_allowed, data_fingerprint, run_lock,
                    stored_fold_ok)


INNER_DIR = "inner"


INNER_GROUPS = 5


def inner_seed(seed: int, fold: int, group: int) -> int:
    """The seed of inner fit ``group`` of outer fold ``fold`` (distinct from every fold seed)."""
    return 10_000_000 + fold_seed(seed, fold) * 10 + group


def inner_splits(data: Composite, config: Config, n_groups: int = INNER_GROUPS) -> list[dict]:
    """Per outer fold (held-out subject, in run order) the inner split of its training subjects:
    ``{"subject", "groups"}`` with ``groups`` (N,) the inner group of every training sample and
    -1 for the held-out subject's (scikit-learn's GroupKFold by subject, no randomness)."""
    from sklearn.model_selection import GroupKFold

    subjects = data.table["subject"].to_numpy()
    out = []
    for s in fold_subjects(data, config):
        groups = np.full(len(subjects), -1, dtype=np.int8)
        rows = np.flatnonzero(subjects != s)
        k = min(n_groups, len(np.unique(subjects[rows])))
        for g, (_, val) in enumerate(GroupKFold(n_splits=k).split(rows, groups=subjects[rows])):
            groups[rows[val]] = g
        out.append({"subject": s, "groups": groups})
    return out


def inner_jobs(data: Composite, config: Config, seed: int, store: Path, splits: list[dict],
               device="cpu") -> list[dict]:
    """One :func:`htnetlib.train.train_fold` job per inner fit of ``splits``
    (:func:`inner_splits`): train on the outer fold's training subjects outside inner group g,
    predict group g after every epoch."""
    arrays = JobArrays(data, config)
    jobs = []
    for k, split in enumerate(splits):
        groups = split["groups"]
        for g in range(int(groups.max()) + 1):
            jobs.append(arrays.job(
                (groups >= 0) & (groups != g), groups == g, seed=inner_seed(seed, k, g),
                device=str(device),
                name=f"inner fit {g + 1} of fold {k + 1} (subject {split['subject']})",
                subject=f"{split['subject']}/{g}", path=Path(store) / f"{k:02d}_{g}.npz"))
    return jobs


def run_nested(data: Composite, config: Config, *, seed: int = 0,
               runs_dir: Path | str = "results/runs", profile: str | None = None,
               n_groups: int = INNER_GROUPS, workers: int = 1, retrain: bool = False,
               progress: bool = False) -> Path:
    """The outer LOSO run (:func:`htnetlib.run_loso`, reused or trained) and its inner
    store ``<run>/inner/``; returns the run folder.

    Each inner fit is stored as it finishes (``inner/NN_G.npz``), so a killed call resumes; then
    ``inner/epochs.npz`` (``pred`` (folds, epochs, N): every training sample's inner held-out
    prediction after each epoch, -1 for the outer held-out subject, N the release's rows in its
    order, named by ``dataset``, ``subject``, ``sample`` with their ``label``; ``groups``
    (folds, N); ``seconds`` (folds, groups)) and ``inner/config.json`` (written last) replace
    them. Training obeys ``HTNET_TRAIN_PROFILES`` as :func:`htnetlib.run_loso` does.
    """
    run_dir = run_loso(data, config, seed=seed, runs_dir=runs_dir, profile=profile,
                             retrain=retrain, workers=workers, progress=progress)
    store = run_dir / INNER_DIR
    if nested_complete(run_dir, n_groups) and not retrain:
        return run_dir
    check_training_allowed(profile, f"{run_dir.name} has no finished inner store "
                                          f"({store})")
    with run_lock(store):
        if retrain:
            for path in store.iterdir():
                if path.name != LOCK_NAME:
                    path.unlink()
        if not nested_complete(run_dir, n_groups):
            _train_inner(data, config, seed, run_dir, n_groups, workers, progress)
    return run_dir


def nested_complete(run_dir: Path, n_groups: int = INNER_GROUPS) -> bool:
    """Whether ``run_dir`` holds a finished inner store of ``n_groups`` groups."""
    return _finished_inner_meta(run_dir, n_groups) is not None


def _finished_inner_meta(run_dir: Path, n_groups: int | None = None) -> dict | None:
    """The inner store's config.json if the store is finished (of ``n_groups`` groups, where
    given), else None."""
    store = Path(run_dir) / INNER_DIR
    try:
        meta = read_json(store / "config.json")
    except RunError:
        return None
    finished = "n_fits" in meta and (store / "epochs.npz").is_file()
    return meta if finished and n_groups in (None, meta.get("n_groups")) else None


def _train_inner(data, config, seed, run_dir, n_groups, workers, progress) -> None:
    """Train the missing inner fits of ``run_dir`` and assemble its inner store."""
    store = run_dir / INNER_DIR
    dev = torch.device("cpu")
    meta = {"outer_run_id": run_dir.name, "seed": seed, "n_groups": n_groups,
            "split": "sklearn GroupKFold by subject over each outer fold's training subjects",
            "inner_seed": "10_000_000 + (seed * 1000 + fold) * 10 + group",
            "config": config.stored_dict(), "data_fingerprint": data_fingerprint(data),
            **provenance(dev, dirty=False), "workers": workers,
            "recompute": "htnetlib.training.nested.run_nested(data, config, seed=seed, "
                         "runs_dir=..., profile=..., retrain=True)"}
    write_json(store / "config.json", meta)  # without n_fits: unfinished
    splits = inner_splits(data, config, n_groups)
    jobs = inner_jobs(data, config, seed, store, splits, dev)
    todo = [j for j in jobs if not stored_fold_ok(j)]
    start = time.perf_counter()
    for _ in train_jobs(todo, "loop", dev, workers, 1, progress):
        pass
    n, epochs = len(data.table), config.epochs
    pred = np.full((len(splits), epochs, n), -1, dtype=np.int8)
    seconds = np.zeros((len(splits), n_groups))
    for job in jobs:
        k, g = map(int, job["path"].stem.split("_"))
        f = read_npz(job["path"], FOLD_KEYS)
        pred[k][:, splits[k]["groups"] == g] = f["pred"]
        seconds[k, g] = float(f["seconds"])
    keys = {k: np.asarray(data.table[k].astype(str), dtype=str) for k in metrics.KEY}
    atomic_write(store / "epochs.npz", lambda p: np.savez_compressed(
        p, pred=pred, groups=np.stack([s["groups"] for s in splits]),
        subjects=np.array([s["subject"] for s in splits]), seconds=seconds,
        label=data.table["label"].to_numpy(), **keys))
    meta.update(n_fits=len(jobs), n_folds=len(splits), epochs=epochs,
                train_seconds=round(float(seconds.sum()), 1),
                wall_seconds_this_call=round(time.perf_counter() - start, 1))
    write_json(store / "config.json", meta)
    for job in jobs:
        job["path"].unlink()


def load_inner(run_dir: Path | str) -> dict:
    """A run's finished inner store: ``meta`` and the arrays of ``inner/epochs.npz``."""
    meta = _finished_inner_meta(run_dir)
    if meta is None:
        raise RunError(f"{Path(run_dir) / INNER_DIR}: no finished inner store; run "
                             "htnetlib.protocols.run_nested for this run")
    inner = read_npz(Path(run_dir) / INNER_DIR / "epochs.npz")
    inner["meta"] = meta
    return inner


def nested_predictions(run: Run, metric: str = "uf1") -> np.ndarray:
    """The nested rule's predictions for ``run``, from its finished inner store alone."""
    inner = load_inner(run.path)
    release = pd.DataFrame({k: inner[k] for k in metrics.KEY})
    rule = nested_rule(inner, table_rows(release, run.predictions), inner["label"], metric)
    p = run.predictions
    return rule(run.epochs["pred"], p["label"].to_numpy(), p["subject"].to_numpy())


def nested_chosen_epochs(run: Run, metric: str = "uf1") -> dict:
    """Per held-out subject of ``run``, the epoch index the nested rule chooses."""
    inner = load_inner(run.path)
    return nested_epochs(inner["pred"], inner["label"], [str(s) for s in inner["subjects"]],
                         metric)


def table_rows(release: pd.DataFrame, predictions: pd.DataFrame) -> np.ndarray:
    """Index into the ``release`` table of every row of a predictions table (matched on
    dataset, subject and sample)."""
    index = pd.MultiIndex.from_frame(release[metrics.KEY].astype(str))
    rows = index.get_indexer(pd.MultiIndex.from_frame(predictions[metrics.KEY].astype(str)))
    if (rows < 0).any():
        raise ValueError(f"sample {predictions.iloc[int(np.argmax(rows < 0))][metrics.KEY].tolist()}"
                         " of the predictions is not in the release")
    return rows

