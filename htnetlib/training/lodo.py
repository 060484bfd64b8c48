"""Leave one dataset out (beyond the paper): train on two of SMIC, CASME II and SAMM, test on the
third, final epoch only; stored like a run (:mod:`htnetlib.training.store`)."""

from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from ..config import Config, check_seed
from ..data import Composite
from ..errors import RunError
from ..evaluation import metrics
from ..io import atomic_write, provenance, read_json, read_npz, write_json
from .fold import fold_seed
from .jobs import JobArrays, train_jobs
from .store import FOLD_KEYS, check_training_allowed, data_fingerprint, run_lock, stored_fold_ok


LODO_DATASETS = ("smic", "casme2", "samm")


LODO_FILES = ("config.json", "predictions.csv", "epochs.npz", "metrics.json")


def lodo_id(config: Config, seed: int, fingerprint: str, profile: str | None = None) -> str:
    """``lodo-<model>-<profile>-s<seed>-<hash>``, the hash over configuration, data and seed."""
    blob = json.dumps({"protocol": "lodo", "config": config.to_dict(), "seed": seed,
                       "data": fingerprint}, sort_keys=True)
    digest = hashlib.sha256(blob.encode()).hexdigest()[:10]
    return f"lodo-{config.model}-{profile or 'custom'}-s{seed}-{digest}"


def run_lodo(data: Composite, config: Config, *, seed: int = 0,
             store_dir: Path | str = "results/tables/lodo", profile: str | None = None,
             workers: int = 1, retrain: bool = False) -> Path:
    """Leave one dataset out: for each of SMIC, CASME II and SAMM present, train ``config`` on
    the other datasets' samples and predict this one's after every epoch; stored like a run in
    ``<store_dir>/<lodo id>/``: config.json (configuration, seed, data fingerprint, commit,
    device, versions), predictions.csv (``honest`` = the final epoch: no choice is made),
    epochs.npz (``pred`` (epochs, N), per held-out dataset curves) and metrics.json (UF1 and UAR
    per held-out dataset). ``max_folds`` is ignored: every sample of each dataset is tested.
    """
    config.check()
    seed = check_seed(seed)
    fingerprint = data_fingerprint(data)
    out = Path(store_dir) / lodo_id(config, seed, fingerprint, profile)
    if all((out / f).is_file() for f in LODO_FILES) and not retrain:
        return out
    check_training_allowed(profile, f"{out.name} is not stored under {store_dir}")
    table = data.table
    held = [d for d in LODO_DATASETS if d in set(table["dataset"])]
    if len(held) < 2:
        raise ValueError(f"leave-one-dataset-out needs two datasets or more; the release holds "
                         f"{held}")
    arrays = JobArrays(data, config)
    dev = torch.device("cpu")
    with run_lock(out):
        if retrain:
            shutil.rmtree(out / "folds", ignore_errors=True)
        jobs = []
        for k, d in enumerate(held):
            test = (table["dataset"] == d).to_numpy()
            jobs.append(arrays.job(~test, test, seed=fold_seed(seed, k), device="cpu",
                                   name=f"held-out dataset {d}", subject=d,
                                   path=out / "folds" / f"{k:02d}.npz"))
        todo = [j for j in jobs if not stored_fold_ok(j)]
        for _ in train_jobs(todo, "loop", dev, workers, 1, False):
            pass
        _assemble_lodo(out, data, config, seed, profile, fingerprint, held, jobs)
    return out


def _assemble_lodo(out, data, config, seed, profile, fingerprint, held, jobs) -> None:
    folds = [read_npz(j["path"], FOLD_KEYS) for j in jobs]
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
        fold_seconds=np.array([float(x["seconds"]) for x in folds])))
    atomic_write(out / "predictions.csv", lambda f: p.to_csv(f, index=False))
    write_json(out / "metrics.json", {"honest": scores})
    meta = {"lodo_id": out.name, "protocol": "leave one dataset out (final epoch)",
            "profile": profile, "seed": seed, "config": config.stored_dict(),
            "data_fingerprint": fingerprint, "data_root": Path(data.root).resolve().name,
            **provenance(torch.device("cpu")), "held_out": held, "n_samples": len(p),
            "epochs": int(pred.shape[0]),
            "train_seconds": round(float(sum(float(x["seconds"]) for x in folds)), 1),
            "recompute": "htnetlib.training.lodo.run_lodo(data, Config.from_dict(config), "
                         "seed=seed, profile=profile, retrain=True)"}
    write_json(out / "config.json", meta)
    shutil.rmtree(out / "folds", ignore_errors=True)


def load_lodo(path: Path | str) -> dict:
    """A stored leave-one-dataset-out result: ``meta``, ``predictions``, ``epochs``, ``metrics``."""
    path = Path(path)
    missing = [f for f in LODO_FILES if not (path / f).is_file()]
    if missing:
        raise RunError(f"{path}: not a finished leave-one-dataset-out result (missing "
                             f"{', '.join(missing)})")
    return {"path": path, "meta": read_json(path / "config.json"),
            "predictions": pd.read_csv(path / "predictions.csv",
                                       dtype={"subject": str, "sample": str}),
            "epochs": read_npz(path / "epochs.npz"),
            "metrics": read_json(path / "metrics.json")}

