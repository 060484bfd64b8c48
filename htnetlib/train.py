"""Leave-one-subject-out training (paper section 4.2) and the run store.

One *run* is one LOSO training of one configuration with one seed. For every held-out subject a
fresh model is trained on all other subjects (Adam, cross-entropy, the official code's
unshuffled batches of raw 0..255 inputs) and the held-out subject is predicted after **every**
epoch, so a single run yields both protocols of :mod:`htnetlib.metrics`: ``honest`` (the final
epoch) and ``oracle`` (per subject the epoch that scores best on its test labels).

A run lives in ``<runs>/<run-id>/``::

    config.json      configuration, profile, seed, data fingerprint, git commit, device,
                     library versions, wall time
    predictions.csv  dataset, subject, sample, label, honest, oracle (one row per sample)
    epochs.npz       pred (epochs, N) per-epoch predictions in predictions.csv order, epoch,
                     and per fold: subjects, train_loss, train_acc, test_acc (folds, epochs)
    metrics.json     UF1 and UAR of both protocols for full, smic, casme2, samm

Finished folds are stored in ``folds/`` as they complete, each file written atomically, so a
killed run resumes where it stopped and ends with the same predictions; ``folds/`` is removed
once the run is assembled. The run id is derived from the configuration, the data and the seed,
so a notebook finds a stored run instead of training again.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from torch import nn

from . import metrics
from .config import (BASELINES, PROFILES, Config, ConfigError, FoldResult,  # noqa: F401
                     TrainingError, profile_config)
from .data import Composite
from .model import build_model


def pick_device(preferred: str | None = None) -> torch.device:
    """``preferred`` if given, else cuda, then mps, then cpu."""
    if preferred:
        return torch.device(preferred)
    if torch.cuda.is_available():
        return torch.device("cuda")
    if getattr(torch.backends, "mps", None) and torch.backends.mps.is_available():
        return torch.device("mps")
    return torch.device("cpu")


# --------------------------------------------------------------------------- inputs


def model_inputs(data: Composite, config: Config) -> np.ndarray:
    """(N, 3, S, S) float32 network inputs of every sample for ``config``."""
    from .regions import region_inputs

    x = region_inputs(data, config.regions, size=config.image_size)
    return np.ascontiguousarray(x.transpose(0, 3, 1, 2), dtype=np.float32) * config.input_scale


def data_fingerprint(data: Composite) -> str:
    """A short hash of the flow maps, labels and subjects: which data a run saw."""
    h = hashlib.sha256(np.ascontiguousarray(data.flows).tobytes())
    h.update(data.table[["dataset", "subject", "sample", "label"]].to_csv(index=False).encode())
    return h.hexdigest()[:12]


def fold_subjects(data: Composite, config: Config) -> list[str]:
    """Held-out subjects in run order (sorted), cut to ``max_folds`` if set."""
    subjects = sorted(data.table["subject"].unique())
    return subjects[: config.max_folds] if config.max_folds else subjects


def run_id(config: Config, seed: int, fingerprint: str, profile: str | None = None) -> str:
    """``<model>-<profile>-s<seed>-<hash>``, the hash over configuration, data and seed."""
    blob = json.dumps({"config": config.to_dict(), "seed": seed, "data": fingerprint},
                      sort_keys=True)
    digest = hashlib.sha256(blob.encode()).hexdigest()[:10]
    return f"{config.model}-{profile or 'custom'}-s{seed}-{digest}"


# --------------------------------------------------------------------------- one fold


def fold_seed(seed: int, fold: int) -> int:
    return seed * 1000 + fold


def train_fold(config: Config, x_train: np.ndarray, y_train: np.ndarray, x_test: np.ndarray,
               y_test: np.ndarray, *, seed: int, device: torch.device, name: str = "fold",
               progress: bool = False) -> FoldResult:
    """Train a fresh model on one fold and predict the test samples after every epoch."""
    if config.model == "logreg":
        from .baselines import logreg_fold
        return logreg_fold(x_train, y_train, x_test, y_test, seed=seed)
    torch.manual_seed(seed)
    rng = np.random.default_rng(seed)
    if config.permute_labels:
        y_train = rng.permutation(y_train)
    model = build_model(config).to(device)
    optimizer = torch.optim.Adam(model.parameters(), lr=config.lr)
    loss_fn = nn.CrossEntropyLoss()
    xtr = torch.from_numpy(x_train).to(device)
    ytr = torch.from_numpy(np.asarray(y_train, dtype=np.int64)).to(device)
    xte = torch.from_numpy(x_test).to(device)
    yte = np.asarray(y_test)
    n, bs = len(xtr), config.batch_size
    pred = np.empty((config.epochs, len(xte)), dtype=np.int8)
    train_loss = np.empty(config.epochs)
    train_acc = np.empty(config.epochs)
    test_acc = np.empty(config.epochs)
    epochs = range(config.epochs)
    if progress:
        from tqdm.auto import tqdm
        epochs = tqdm(epochs, desc=name, unit="epoch", leave=False)
    start = time.perf_counter()
    for epoch in epochs:
        model.train()
        order = rng.permutation(n) if config.shuffle else np.arange(n)
        total, correct = 0.0, 0
        for lo in range(0, n, bs):
            idx = torch.from_numpy(order[lo:lo + bs]).to(device)
            xb, yb = xtr[idx], ytr[idx]
            optimizer.zero_grad(set_to_none=True)
            logits = model(xb)
            loss = loss_fn(logits, yb)
            if not torch.isfinite(loss):
                raise TrainingError(f"{name}: loss is {loss.item()} at epoch {epoch + 1}")
            loss.backward()
            optimizer.step()
            total += loss.item() * len(yb)
            correct += int((logits.argmax(1) == yb).sum())
        train_loss[epoch], train_acc[epoch] = total / n, correct / n
        model.eval()
        with torch.no_grad():
            pred[epoch] = model(xte).argmax(1).cpu().numpy()
        test_acc[epoch] = float((pred[epoch] == yte).mean())
    seconds = time.perf_counter() - start
    with torch.no_grad():
        logits = model(xte).float().cpu().numpy()
    return FoldResult(pred, train_loss, train_acc, test_acc, seconds, logits)


# --------------------------------------------------------------------------- run store


def atomic_write(path: Path, write) -> None:
    """Call ``write(tmp_path)`` and move the result onto ``path`` in one step."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=path.suffix, dir=path.parent)
    os.close(fd)
    try:
        write(Path(tmp))
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def write_json(path: Path, obj) -> None:
    atomic_write(path, lambda p: p.write_text(json.dumps(obj, indent=2, sort_keys=True) + "\n"))


def git_commit() -> str:
    """The project's commit, with ``+dirty`` if the working tree differs; ``unknown`` outside git."""
    here = Path(__file__).resolve().parent
    try:
        head = subprocess.run(["git", "rev-parse", "HEAD"], cwd=here, capture_output=True,
                              text=True, check=True).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"],
                               cwd=here, capture_output=True, text=True).stdout.strip()
        return head + ("+dirty" if dirty else "")
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


def versions() -> dict:
    import cv2
    import sklearn

    return {"python": platform.python_version(), "torch": torch.__version__,
            "numpy": np.__version__, "scikit-learn": sklearn.__version__, "opencv": cv2.__version__}


def device_name(device: torch.device) -> str:
    if device.type == "cuda":
        return f"cuda ({torch.cuda.get_device_name(device)})"
    return f"{device.type} ({platform.processor() or platform.machine()}, "\
           f"{os.cpu_count()} cores)"


def is_complete(run_dir: Path) -> bool:
    return all((Path(run_dir) / f).is_file()
               for f in ("config.json", "predictions.csv", "epochs.npz", "metrics.json"))


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
    """
    fingerprint = data_fingerprint(data)
    rid = run_id(config, seed, fingerprint, profile)
    run_dir = Path(runs_dir) / rid
    if retrain and run_dir.exists():
        shutil.rmtree(run_dir)
    if is_complete(run_dir):
        return run_dir
    allowed = os.environ.get("HTNET_TRAIN_PROFILES")
    if allowed and (profile or "custom") not in allowed.split(","):
        raise TrainingError(f"run {rid} is not stored under {runs_dir}, and training the "
                            f"{profile!r} profile is switched off here "
                            f"(HTNET_TRAIN_PROFILES={allowed})")
    dev = pick_device(device)
    if trainer == "auto":
        trainer = "grouped" if dev.type == "cuda" and config.model == "htnet" else "loop"
    if trainer not in ("loop", "grouped"):
        raise ValueError(f"unknown trainer {trainer!r}; expected auto, loop or grouped")
    meta = {"run_id": rid, "profile": profile, "seed": seed, "config": config.to_dict(),
            "data_fingerprint": fingerprint, "data_root": str(data.root),
            "git_commit": git_commit(), "device": device_name(dev), "versions": versions(),
            "command": " ".join(sys.argv), "trainer": trainer, "workers": workers,
            "threads": threads}
    write_json(run_dir / "config.json", meta)

    folds = fold_subjects(data, config)
    # finished folds of an interrupted run are kept
    jobs = [j for j in fold_jobs(data, config, seed, run_dir / "folds", dev)
            if not j["path"].is_file()]
    bar = None
    if progress:
        from tqdm.auto import tqdm
        bar = tqdm(total=len(folds), initial=len(folds) - len(jobs), desc=f"LOSO {rid}",
                   unit="fold")
    for done in _train_jobs(jobs, trainer, dev, workers, threads, progress):
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
    x = model_inputs(data, config)
    y = data.table["label"].to_numpy()
    subjects = data.table["subject"].to_numpy()
    folds = fold_subjects(data, config)
    jobs = []
    for k, subject in enumerate(folds):
        test = subjects == subject
        jobs.append(dict(config=config, x_train=x[~test], y_train=y[~test], x_test=x[test],
                         y_test=y[test], seed=fold_seed(seed, k), device=str(device),
                         name=f"fold {k + 1}/{len(folds)} (subject {subject})", subject=subject,
                         path=Path(fold_dir) / f"{k:02d}.npz"))
    return jobs


def _save_fold(path: Path, subject: str, res: FoldResult) -> None:
    atomic_write(path, lambda p: np.savez(p, subject=subject, **dataclasses.asdict(res)))


def _train_jobs(jobs: list[dict], trainer: str, dev: torch.device, workers: int,
                threads: int | None, progress: bool):
    """Train and store every job; yield the number of folds finished at each step."""
    if trainer == "grouped":
        from .parallel import group_size, train_group

        if threads and dev.type == "cpu":
            torch.set_num_threads(threads)
        size = group_size(jobs[0]["config"], dev, len(jobs)) if jobs else 1
        for lo in range(0, len(jobs), size):
            group = jobs[lo:lo + size]
            for job, res in zip(group, train_group(group[0]["config"], group, device=dev,
                                                   progress=progress)):
                _save_fold(job["path"], job["subject"], res)
            yield len(group)
        return
    workers = max(1, min(workers, len(jobs)))
    if workers == 1:
        for job in jobs:
            _fold_job(job, threads, progress=progress)
            yield 1
        return
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor, as_completed

    ctx = multiprocessing.get_context("spawn")
    with ProcessPoolExecutor(workers, mp_context=ctx) as pool:
        for fut in as_completed([pool.submit(_fold_job, job, threads) for job in jobs]):
            fut.result()
            yield 1


def _fold_job(job: dict, threads: int | None, progress: bool = False) -> None:
    """Train one fold and store it atomically (runs in a worker process when workers > 1)."""
    if threads and torch.get_num_threads() != threads:
        torch.set_num_threads(threads)
    res = train_fold(job["config"], job["x_train"], job["y_train"], job["x_test"], job["y_test"],
                     seed=job["seed"], device=torch.device(job["device"]), name=job["name"],
                     progress=progress)
    _save_fold(job["path"], job["subject"], res)


def assemble(run_dir: Path, data: Composite, folds: list[str], extra: dict | None = None) -> None:
    """Join the finished folds into predictions.csv, epochs.npz and metrics.json."""
    run_dir = Path(run_dir)
    table = data.table
    held = table[table["subject"].isin(folds)]
    order = held.index.to_numpy()  # rows of the predictions, in table order
    position = {row: i for i, row in enumerate(order)}
    fold_files = [np.load(run_dir / "folds" / f"{k:02d}.npz") for k in range(len(folds))]
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
    meta = json.loads((run_dir / "config.json").read_text())
    meta["train_seconds"] = round(seconds, 1)
    meta["n_samples"], meta["n_folds"], meta["epochs"] = len(out), len(folds), n_epochs
    meta.update(extra or {})
    write_json(run_dir / "config.json", meta)
    shutil.rmtree(run_dir / "folds")


# --------------------------------------------------------------------------- reading runs


@dataclass
class Run:
    """A stored run, read back."""

    path: Path
    meta: dict
    predictions: pd.DataFrame
    epochs: dict = field(repr=False)
    metrics: dict = field(default_factory=dict)

    @property
    def config(self) -> Config:
        return Config.from_dict(self.meta["config"])


def load_run(run_dir: Path | str) -> Run:
    """Read a finished run folder; a missing file is a clear error."""
    run_dir = Path(run_dir)
    if not is_complete(run_dir):
        missing = [f for f in ("config.json", "predictions.csv", "epochs.npz", "metrics.json")
                   if not (run_dir / f).is_file()]
        raise FileNotFoundError(f"{run_dir}: not a finished run (missing {', '.join(missing)})")
    with np.load(run_dir / "epochs.npz") as npz:
        epochs = {k: npz[k] for k in npz.files}
    return Run(run_dir, json.loads((run_dir / "config.json").read_text()),
               pd.read_csv(run_dir / "predictions.csv", dtype={"subject": str, "sample": str}),
               epochs, json.loads((run_dir / "metrics.json").read_text()))
