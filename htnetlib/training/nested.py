"""Nested selection's inner fits: per outer LOSO fold, an inner leave-subjects-out split of its
training subjects (GroupKFold, 5 groups), each inner fit predicting its held-out group after
every epoch. The inner store ``<run>/inner/`` is one kind of result of the one store
(:mod:`htnetlib.training.store`) and resumes like a run's folds; the rule that reads it is
:func:`htnetlib.evaluation.selection.nested_rule`.
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
from ..errors import RunError
from ..io import atomic_write, read_json
from .fold import fold_seed, later_fields, pick_device
from .jobs import JobArrays, produce
from .loso import fold_subjects, run_loso
from .store import (INNER, Run, check_training_allowed, data_fingerprint, is_complete,
                    load_stored, read_fold, record)


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
    """One :func:`htnetlib.training.fold.train_fold` job per inner fit of ``splits``
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
               progress: bool = False, trainer: str = "auto", device: str | None = None
               ) -> Path:
    """The outer LOSO run (:func:`htnetlib.run_loso` with ``trainer``, reused or trained) and
    its inner store ``<run>/inner/``; returns the run folder.

    The inner store is a :data:`~htnetlib.training.store.INNER` result of the one store
    (:func:`htnetlib.training.jobs.produce`): each inner fit is stored as it finishes
    (``inner/NN_G.npz``), so a killed call resumes; then ``inner/epochs.npz`` (``pred``
    (folds, epochs, N): every training sample's inner held-out prediction after each epoch, -1
    for the outer held-out subject; ``prob_final`` (folds, N, 3) float16: the inner held-out
    probabilities after the final epoch, NaN for the outer held-out subject, in stores trained
    since probabilities are kept, N the release's rows in its order, named by ``dataset``,
    ``subject``, ``sample`` with their ``label``; ``groups`` (folds, N); ``seconds``
    (folds, groups)) and ``inner/config.json`` (written last, with ``n_fits``) replace them.
    A finished store of another ``n_groups`` is trained again. Training obeys
    ``HTNET_TRAIN_PROFILES`` as :func:`htnetlib.run_loso` does. On ``device`` (default: the
    first available, :func:`~htnetlib.training.fold.pick_device`) the inner fits train as the
    outer run's folds do: grouped on a GPU (:func:`inner_trainer`), one after another in
    ``workers`` processes on a CPU.
    """
    run_dir = run_loso(data, config, seed=seed, runs_dir=runs_dir, profile=profile,
                       retrain=retrain, workers=workers, trainer=trainer, progress=progress,
                       device=device)
    store = run_dir / INNER_DIR
    if nested_complete(run_dir, n_groups) and not retrain:
        return run_dir
    check_training_allowed(profile, f"{run_dir.name} has no finished inner store "
                                    f"({store})")
    retrain = retrain or _finished_inner_meta(run_dir) is not None  # of other n_groups
    dev = pick_device(device)
    meta = {"outer_run_id": run_dir.name, "n_groups": n_groups,
            "split": "sklearn GroupKFold by subject over each outer fold's training subjects",
            "inner_seed": "10_000_000 + (seed * 1000 + fold) * 10 + group",
            **record(data, config, seed, data_fingerprint(data), dev, dirty=False, root=False),
            "workers": workers, "trainer": inner_trainer(config, dev),
            "recompute": "htnetlib.training.nested.run_nested(data, config, seed=seed, "
                         "runs_dir=..., profile=..., retrain=True)"}
    splits = inner_splits(data, config, n_groups)
    start = time.perf_counter()

    def assemble(meta: dict, jobs: list[dict]) -> dict:
        n, epochs = len(data.table), config.epochs
        pred = np.full((len(splits), epochs, n), -1, dtype=np.int8)
        seconds = np.zeros((len(splits), n_groups))
        fits = [read_fold(job["path"]) for job in jobs]
        final = np.full((len(splits), n, 3), np.nan, dtype=np.float16)
        for job, f in zip(jobs, fits):
            k, g = map(int, job["path"].stem.split("_"))
            pred[k][:, splits[k]["groups"] == g] = f["pred"]
            if "prob" in f:
                final[k][splits[k]["groups"] == g] = f["prob"][-1]
            seconds[k, g] = float(f["seconds"])
        probs = {"prob_final": final} if all("prob" in f for f in fits) else {}
        keys = {k: np.asarray(data.table[k].astype(str), dtype=str) for k in metrics.KEY}
        atomic_write(store / "epochs.npz", lambda p: np.savez_compressed(
            p, pred=pred, groups=np.stack([s["groups"] for s in splits]),
            subjects=np.array([s["subject"] for s in splits]), seconds=seconds,
            label=data.table["label"].to_numpy(), **keys, **probs))
        return {**meta, "n_fits": len(jobs), "n_folds": len(splits), "epochs": epochs,
                "train_seconds": round(float(seconds.sum()), 1),
                "wall_seconds_this_call": round(time.perf_counter() - start, 1)}

    produce(INNER, store, meta=meta, retrain=retrain, assemble=assemble,
            jobs=lambda: inner_jobs(data, config, seed, store, splits, dev), device=dev,
            trainer=inner_trainer(config, dev),
            workers=workers, threads=1, progress=progress, desc=f"inner fits of {run_dir.name}")
    return run_dir


def inner_trainer(config: Config, device: torch.device) -> str:
    """How extra fits (nested inner fits, leave-one-dataset-out) train on ``device``: grouped
    on a GPU where the grouped trainer implements the configuration (HTNet without the later
    training fields), else the one-fold loop."""
    grouped = device.type == "cuda" and config.model == "htnet" and not later_fields(config)
    return "grouped" if grouped else "loop"


def nested_complete(run_dir: Path, n_groups: int = INNER_GROUPS) -> bool:
    """Whether ``run_dir`` holds a finished inner store of ``n_groups`` groups."""
    return _finished_inner_meta(run_dir, n_groups) is not None


def _finished_inner_meta(run_dir: Path, n_groups: int | None = None) -> dict | None:
    """The inner store's config.json if the store is finished (of ``n_groups`` groups, where
    given), else None."""
    store = Path(run_dir) / INNER_DIR
    if not is_complete(store, INNER):
        return None
    meta = read_json(store / "config.json")
    return meta if n_groups in (None, meta.get("n_groups")) else None


def load_inner(run_dir: Path | str) -> dict:
    """A run's finished inner store: ``meta`` and the arrays of ``inner/epochs.npz``
    (:func:`htnetlib.training.store.load_stored`)."""
    store = Path(run_dir) / INNER_DIR
    if not is_complete(store, INNER):
        raise RunError(f"{store}: no finished inner store; run "
                       "htnetlib.training.nested.run_nested for this run")
    stored = load_stored(store, INNER)
    return {**stored["epochs.npz"], "meta": stored["meta"]}


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

