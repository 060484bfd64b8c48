"""Leave one dataset out (beyond the paper): train on two of SMIC, CASME II and SAMM, test on the
third, final epoch only; stored like a run (:mod:`htnetlib.training.store`)."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from ..config import Config, check_seed
from ..data import Composite
from ..evaluation import metrics
from ..io import atomic_write, write_json
from .fold import fold_seed, pick_device
from .jobs import JobArrays, produce
from .nested import inner_trainer
from .store import (LODO, RUN_FILES, check_training_allowed, data_fingerprint, hash_id,
                    is_complete, joined_probabilities, load_stored, model_tag, read_fold,
                    record, reusable, smoke_folder)


LODO_DATASETS = ("smic", "casme2", "samm")


LODO_FILES = RUN_FILES


def lodo_id(config: Config, seed: int, fingerprint: str, profile: str | None = None) -> str:
    """``lodo-<model>-<profile>-s<seed>-<hash>``, the hash over the protocol, configuration,
    data and seed (:func:`htnetlib.training.store.hash_id`)."""
    return hash_id(f"lodo-{model_tag(config.model)}-{profile or 'custom'}-s{seed}",
                   {"protocol": "lodo", "config": config.to_dict(), "seed": seed,
                    "data": fingerprint})


def lodo_complete(path: Path | str) -> bool:
    """Whether ``path`` is a finished leave-one-dataset-out result: its four files exist and
    its config.json, written last, holds ``lodo_id`` and ``n_samples``."""
    return is_complete(Path(path), LODO)


def run_lodo(data: Composite, config: Config, *, seed: int = 0,
             store_dir: Path | str = "results/tables/lodo", profile: str | None = None,
             workers: int = 1, retrain: bool = False, device: str | None = None) -> Path:
    """Leave one dataset out: for each of SMIC, CASME II and SAMM present, train ``config`` on
    the other datasets' samples and predict this one's after every epoch; stored like a run
    (:data:`htnetlib.training.store.LODO`, trained, resumed and reused by
    :func:`htnetlib.training.jobs.produce`) in ``<store_dir>/<lodo id>/``: config.json
    (configuration, seed, data fingerprint, commit, device, versions; written last, with
    ``lodo_id`` and ``n_samples``), predictions.csv (``honest`` = the final epoch: no choice is
    made), epochs.npz (``pred`` (epochs, N), per held-out dataset curves) and metrics.json (UF1
    and UAR per held-out dataset). ``max_folds`` is ignored: every sample of each dataset is
    tested. The fits train on ``device`` (default: the first available) as nested inner fits do
    (:func:`htnetlib.training.nested.inner_trainer`).
    """
    config.check()
    seed = check_seed(seed)
    fingerprint = data_fingerprint(data)
    store_dir = smoke_folder(store_dir, profile)  # smoke results: the git-ignored smoke folder
    out = store_dir / lodo_id(config, seed, fingerprint, profile)
    if reusable(out, LODO, retrain):
        return out
    if retrain or not is_complete(out, LODO):
        check_training_allowed(profile, f"{out.name} is not stored under {store_dir}")
    table = data.table
    held = [d for d in LODO_DATASETS if d in set(table["dataset"])]
    if len(held) < 2:
        raise ValueError(f"leave-one-dataset-out needs two datasets or more; the release holds "
                         f"{held}")
    dev = pick_device(device)

    def jobs() -> list[dict]:
        arrays = JobArrays(data, config)
        out_jobs = []
        for k, d in enumerate(held):
            test = (table["dataset"] == d).to_numpy()
            out_jobs.append(arrays.job(~test, test, seed=fold_seed(seed, k), device=str(dev),
                                       name=f"held-out dataset {d}", subject=d,
                                       path=out / "folds" / f"{k:02d}.npz"))
        return out_jobs

    meta = {"lodo_id": out.name, "protocol": "leave one dataset out (final epoch)",
            "profile": profile, **record(data, config, seed, fingerprint, dev),
            "held_out": held,
            "recompute": "htnetlib.training.lodo.run_lodo(data, Config.from_dict(config), "
                         "seed=seed, profile=profile, retrain=True)"}
    return produce(LODO, out, meta=meta, jobs=jobs, retrain=retrain, device=dev,
                   workers=workers, threads=1, trainer=inner_trainer(config, dev),
                   assemble=lambda meta, jobs: _assemble_lodo(out, data, held, jobs, meta))


def _assemble_lodo(out: Path, data: Composite, held: list[str], jobs: list[dict],
                   meta: dict) -> dict:
    """Join the held-out datasets' fits into predictions.csv, epochs.npz and metrics.json;
    return the final config.json (``meta`` with ``lodo_id``, ``n_samples``, ``epochs``)."""
    folds = [read_fold(j["path"]) for j in jobs]
    table = data.table
    order = np.concatenate([np.flatnonzero((table["dataset"] == d).to_numpy()) for d in held])
    pred = np.concatenate([f["pred"] for f in folds], axis=1)
    p = table.iloc[order][["dataset", "subject", "sample", "label"]].reset_index(drop=True)
    p["honest"] = metrics.honest_predictions(pred)
    scores = {d: {"uf1": metrics.uf1(part["label"], part["honest"]),
                  "uar": metrics.uar(part["label"], part["honest"]), "n": int(len(part))}
              for d, part in p.groupby("dataset", sort=False)}
    atomic_write(out / "epochs.npz", lambda f: np.savez_compressed(
        f, pred=pred, epoch=np.arange(1, pred.shape[0] + 1), datasets=np.array(held),
        **{key: np.stack([x[key] for x in folds]) for key in ("train_loss", "train_acc",
                                                                "test_acc")},
        fold_seconds=np.array([float(x["seconds"]) for x in folds]),
        **joined_probabilities(folds, pred.shape[0], pred.shape[1],
                               np.split(np.arange(pred.shape[1]),
                                        np.cumsum([f["pred"].shape[1] for f in folds])[:-1]))))
    atomic_write(out / "predictions.csv", lambda f: p.to_csv(f, index=False))
    write_json(out / "metrics.json", {"honest": scores})
    return {**meta, "lodo_id": out.name, "n_samples": len(p), "epochs": int(pred.shape[0]),
            "train_seconds": round(float(sum(float(x["seconds"]) for x in folds)), 1)}


def load_lodo(path: Path | str) -> dict:
    """A stored leave-one-dataset-out result: ``path``, ``meta``, ``predictions``, ``epochs``,
    ``metrics`` (:func:`htnetlib.training.store.load_stored`: a :class:`RunError` names the
    folder or file that is missing, unfinished or damaged)."""
    stored = load_stored(path, LODO)
    return {"path": stored["path"], "meta": stored["meta"],
            "predictions": stored["predictions.csv"], "epochs": stored["epochs.npz"],
            "metrics": stored["metrics.json"]}
