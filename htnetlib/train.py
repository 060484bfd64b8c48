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
killed run resumes where it stopped and ends with the same predictions; a damaged fold file is
set aside (``NN.npz.corrupt``) and trained again. Assembly writes config.json last, with
``n_folds``: a run counts as finished only then, so a kill during assembly means the next call
assembles again; ``folds/`` is removed after it. One process at a time trains a run: others wait
on its ``.lock`` file, which is removed when the run is done. The run id is derived from the
configuration, the data and the seed, so a notebook finds a stored run instead of training
again. config.json records a re-runnable ``htnet train`` command, the data folder's name (not
its path) and, for a dirty git tree, the changed files; :func:`load_run` reads a run back and
raises :class:`RunError` for a folder that is missing, unfinished or damaged.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import platform
import shlex
import shutil
import subprocess
import sys
import tempfile
import time
import zipfile
import zlib
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from torch import nn

from . import metrics
from .config import (BASELINES, LATER_FIELDS, PROFILES, Config, ConfigError,  # noqa: F401
                     FoldResult, TrainingError, check_seed, profile_config)
from .data import Composite, DataError
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


def mirrored_inputs(data: Composite, config: Config) -> np.ndarray:
    """(N, 3, S, S) inputs of every sample's left-right mirrored face (``Config.mirror``).

    The mirror is taken *before* the four-region mosaic, so a mirrored sample is what the
    pipeline makes of the mirrored face: the flow map's columns are flipped and its u channel
    negated (channels are (strain, v, u), :mod:`htnetlib.data`; the release min-max stretches
    each channel to 0..255, so -u is 255 - u), MTCNN's landmarks are mirrored (x -> W - x) and
    renamed left for right (MTCNN names eyes and mouth corners by image side), and the crops and
    mosaic follow as for any face (a face MTCNN missed keeps the fallback landmarks, as the
    mirrored image would). Flipping the finished mosaic instead would swap the left and right
    crops in the ``corrected`` mode, where it agrees, but not in the ``official`` mode, whose
    crops read (x, y) as (row, col): there a mirrored face moves the crops' rows.
    """
    import cv2

    from .regions import Landmarks, crop_centres, find_landmarks, mosaic

    flows, size = data.flows, config.image_size
    if size != flows.shape[1]:  # as htnetlib.regions.region_inputs resizes
        interp = cv2.INTER_AREA if size < flows.shape[1] else cv2.INTER_LINEAR
        flows = np.stack([cv2.resize(f, (size, size), interpolation=interp) for f in flows])
    flows = flows[:, :, ::-1].copy()  # (N, rows, cols, channels): columns flipped
    flows[..., 2] = 255 - flows[..., 2]  # u, the horizontal flow, changes sign
    if config.regions != "whole":
        found = find_landmarks(data, config.regions)
        points = found.points.copy()
        points[..., 0] = found.image_size[:, None, 0] - points[..., 0]
        mirrored = Landmarks(points[:, [1, 0, 2, 4, 3]], found.image_size)
        flows = mosaic(flows, crop_centres(mirrored, config.regions, size))
    return np.ascontiguousarray(flows.transpose(0, 3, 1, 2), dtype=np.float32) * config.input_scale


def class_weights(config: Config, y_train: np.ndarray, classes: int = 3) -> np.ndarray | None:
    """Per-class loss weights: eq. 7's sample weights w_i (section 3.4) by class.

    ``balanced`` gives class c the weight n / (classes * n_c) on the fold's training labels, so
    every class carries the same total weight; ``none`` (the official code passes no weights)
    returns None, every sample weighing 1.
    """
    if config.class_weights == "none":
        return None
    counts = np.bincount(np.asarray(y_train, dtype=np.int64), minlength=classes)
    return np.where(counts > 0, len(y_train) / (classes * np.maximum(counts, 1)), 0.0)


def later_fields(config: Config) -> list[str]:
    """The fields of :data:`LATER_FIELDS` that ``config`` sets away from their defaults."""
    return [k for k, default in LATER_FIELDS.items() if getattr(config, k) != default]


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
               progress: bool = False, x_train_mirror: np.ndarray | None = None) -> FoldResult:
    """Train a fresh model on one fold and predict the test samples after every epoch.

    ``x_train_mirror`` (the mirrored training inputs, :func:`mirrored_inputs`) is needed when
    ``config.mirror``: each epoch every training sample is shown mirrored with chance 1/2.
    """
    if config.model == "logreg":
        from .baselines import logreg_fold
        return logreg_fold(x_train, y_train, x_test, y_test, seed=seed)
    torch.manual_seed(seed)
    rng = np.random.default_rng(seed)
    if config.permute_labels:
        y_train = rng.permutation(y_train)
    model = build_model(config).to(device)
    optimizer = torch.optim.Adam(model.parameters(), lr=config.lr)
    weight = class_weights(config, y_train)
    loss_fn = nn.CrossEntropyLoss(
        weight=None if weight is None else torch.tensor(weight, dtype=torch.float32, device=device))
    schedule = (torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=config.epochs)
                if config.lr_schedule == "cosine" else None)
    if config.mirror and (x_train_mirror is None or x_train_mirror.shape != x_train.shape):
        raise ValueError(f"{name}: mirror=true needs x_train_mirror of shape {x_train.shape}")
    xmr = torch.from_numpy(x_train_mirror).to(device) if config.mirror else None
    xtr = torch.from_numpy(x_train).to(device)
    ytr = torch.from_numpy(np.array(y_train, dtype=np.int64)).to(device)  # a writable copy
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
        xep = xtr
        if xmr is not None:  # each sample mirrored with chance 1/2 this epoch
            flip = torch.from_numpy(rng.random(n) < 0.5).to(device)
            xep = torch.where(flip[:, None, None, None], xmr, xtr)
        total, correct = 0.0, 0
        for lo in range(0, n, bs):
            idx = torch.from_numpy(order[lo:lo + bs]).to(device)
            xb, yb = xep[idx], ytr[idx]
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
        if schedule is not None:
            schedule.step()
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


def _git(*args: str) -> str | None:
    """The output of ``git ARGS`` run in the package's folder; None outside a git checkout."""
    try:
        return subprocess.run(["git", *args], cwd=Path(__file__).resolve().parent,
                              capture_output=True, text=True, check=True).stdout
    except (OSError, subprocess.CalledProcessError):
        return None


def git_dirty_files() -> list[str]:
    """Tracked files that differ from the commit, as ``git status`` names them ([] if none)."""
    out = _git("status", "--porcelain", "--untracked-files=no") or ""
    return [line[3:] for line in out.splitlines() if line.strip()]


def git_commit() -> str:
    """The project's commit, with ``+dirty`` if the working tree differs; ``unknown`` outside git."""
    head = _git("rev-parse", "HEAD")
    if head is None:
        return "unknown"
    return head.strip() + ("+dirty" if git_dirty_files() else "")


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


def train_command(config: Config, seed: int, profile: str | None) -> str:
    """The ``htnet train`` command line that trains this run again.

    Every field that differs from the profile's configuration for the model becomes a
    ``--set KEY=VALUE``. A run without a profile (``custom``) is written against the ``paper``
    profile, whose configuration is :class:`Config`'s defaults: the same training, stored under
    a ``paper`` run id.
    """
    base_profile = profile if profile in PROFILES else "paper"
    base = profile_config(base_profile, config.model).to_dict()
    args = ["htnet", "train", "--profile", base_profile, "--model", config.model,
            "--seed", str(seed)]
    for key, value in config.to_dict().items():
        if value != base.get(key, LATER_FIELDS.get(key)):
            text = value if isinstance(value, str) else json.dumps(value, separators=(",", ":"))
            args += ["--set", f"{key}={text}"]
    return shlex.join(args)


class RunError(DataError):
    """A run folder that is missing, unfinished or damaged; the message names the file."""


RUN_FILES = ("config.json", "predictions.csv", "epochs.npz", "metrics.json")
PREDICTION_COLUMNS = ["dataset", "subject", "sample", "label", "honest", "oracle"]
FOLD_KEYS = ("subject", "pred", "train_loss", "train_acc", "test_acc", "seconds")
LOCK_NAME = ".lock"


def _why(exc: BaseException) -> str:
    """An exception as one line: its type and message."""
    return " ".join(f"{type(exc).__name__}: {exc}".split())


def read_json(path: Path) -> dict:
    """A JSON object from ``path``; :class:`RunError` if the file is missing or damaged."""
    path = Path(path)
    try:
        obj = json.loads(path.read_text())
    except FileNotFoundError:
        raise RunError(f"{path}: missing") from None
    except (OSError, ValueError) as exc:  # ValueError: bad JSON or bad UTF-8
        raise RunError(f"{path}: not readable as JSON ({_why(exc)})") from None
    if not isinstance(obj, dict):
        raise RunError(f"{path}: holds a JSON {type(obj).__name__}, expected an object")
    return obj


def read_npz(path: Path, keys: tuple[str, ...] | None = None) -> dict:
    """The arrays ``keys`` (every array if None) of an ``.npz`` file, read into memory.

    :class:`RunError` if the file is missing, damaged or lacks one of them.
    """
    path = Path(path)
    try:
        with np.load(path) as npz:
            missing = [k for k in keys or () if k not in npz.files]
            if missing:
                raise RunError(f"{path}: lacks {', '.join(missing)}")
            return {k: npz[k] for k in (keys or npz.files)}
    except RunError:
        raise
    except FileNotFoundError:
        raise RunError(f"{path}: missing") from None
    except (OSError, EOFError, ValueError, zipfile.BadZipFile, zlib.error) as exc:
        raise RunError(f"{path}: not a readable .npz file ({_why(exc)})") from None


def read_predictions(path: Path) -> pd.DataFrame:
    """A run's predictions.csv; :class:`RunError` if it is missing, damaged or lacks a column."""
    path = Path(path)
    try:
        table = pd.read_csv(path, dtype={"subject": str, "sample": str})
    except FileNotFoundError:
        raise RunError(f"{path}: missing") from None
    except (OSError, ValueError) as exc:  # ValueError: pandas' parser and empty-file errors
        raise RunError(f"{path}: not a readable CSV file ({_why(exc)})") from None
    missing = [c for c in PREDICTION_COLUMNS if c not in table.columns]
    if missing:
        raise RunError(f"{path}: lacks column(s) {', '.join(missing)}")
    return table


def finished_meta(run_dir: Path) -> dict:
    """The config.json of a finished run.

    :class:`RunError` if it is missing, damaged, or was written before the run finished (it
    lacks ``n_folds``, which :func:`assemble` adds in its last write).
    """
    path = Path(run_dir) / "config.json"
    meta = read_json(path)
    if "n_folds" not in meta:
        raise RunError(f"{path}: the run is not finished (no n_folds); train it again to "
                       "finish it")
    return meta


def is_complete(run_dir: Path) -> bool:
    """Whether ``run_dir`` is a finished run: its four files exist and config.json, written last
    by :func:`assemble`, is the final one (it holds ``n_folds``)."""
    run_dir = Path(run_dir)
    if not all((run_dir / f).is_file() for f in RUN_FILES):
        return False
    try:
        finished_meta(run_dir)
    except RunError:
        return False
    return True


def fold_problem(path: Path, subject: str, epochs: int, n_test: int) -> str | None:
    """What makes a stored fold file unusable for this fold (one line), or None if it is fine."""
    try:
        f = read_npz(path, FOLD_KEYS)
    except RunError as exc:
        return str(exc)
    if str(f["subject"]) != subject:
        return f"{path}: holds subject {f['subject']}, expected {subject}"
    if f["pred"].shape != (epochs, n_test):
        return f"{path}: predictions of shape {f['pred'].shape}, expected {(epochs, n_test)}"
    for key in ("train_loss", "train_acc", "test_acc"):
        if f[key].shape != (epochs,):
            return f"{path}: {key} of shape {f[key].shape}, expected ({epochs},)"
    return None


def _stored_fold_ok(job: dict) -> bool:
    """Whether ``job``'s fold is stored and usable.

    A damaged file is moved aside (``NN.npz.corrupt``) with a one-line warning on stderr, so the
    fold is trained again.
    """
    path = job["path"]
    if not path.is_file():
        return False
    problem = fold_problem(path, job["subject"], job["config"].epochs, len(job["y_test"]))
    if problem is None:
        return True
    os.replace(path, path.with_name(path.name + ".corrupt"))
    print(f"warning: {problem}; moved to {path.name}.corrupt, training the fold again",
          file=sys.stderr, flush=True)
    return False


@contextmanager
def run_lock(run_dir: Path):
    """Hold the lock of one run, so one process at a time trains or assembles it.

    The lock is ``fcntl.flock`` on ``<run_dir>/.lock``. A second process says once that it
    waits, then blocks until the first is done. The file is removed on release, so a finished
    run holds only its four files; a waiter left holding the removed file retries on the new
    one. Without ``fcntl`` (Windows) nothing is locked.
    """
    try:
        import fcntl
    except ImportError:
        yield
        return
    path = Path(run_dir) / LOCK_NAME
    path.parent.mkdir(parents=True, exist_ok=True)
    said = False
    while True:
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            if not said:
                print(f"{Path(run_dir).name}: another process is training this run; waiting for "
                      "it to finish", file=sys.stderr, flush=True)
                said = True
            fcntl.flock(fd, fcntl.LOCK_EX)
        try:
            current = os.stat(path).st_ino == os.fstat(fd).st_ino
        except FileNotFoundError:
            current = False
        if current:
            break
        os.close(fd)
    try:
        yield
    finally:
        path.unlink(missing_ok=True)
        os.close(fd)


def check_training_allowed(profile: str | None, missing: str) -> None:
    """TrainingError when ``HTNET_TRAIN_PROFILES`` (comma-separated profiles; ``none``: train
    nothing) leaves ``profile`` out; ``missing`` says what would have been trained."""
    allowed = os.environ.get("HTNET_TRAIN_PROFILES")
    if allowed and (profile or "custom") not in allowed.split(","):
        raise TrainingError(f"{missing}, and training the {profile!r} profile is switched off "
                            f"here (HTNET_TRAIN_PROFILES={allowed})")


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
            "git_commit": git_commit(), "device": device_name(dev), "versions": versions(),
            "command": train_command(config, seed, profile), "trainer": trainer,
            "workers": workers, "threads": threads}
    dirty = git_dirty_files()
    if dirty:
        meta["git_dirty_files"] = dirty
    manifest = getattr(data, "manifest_status", None)
    if manifest is not None:
        meta["data_manifest"] = manifest
    write_json(run_dir / "config.json", meta)

    folds = fold_subjects(data, config)
    # finished folds of an interrupted run are kept; a damaged one is set aside and retrained
    jobs = [j for j in fold_jobs(data, config, seed, run_dir / "folds", dev)
            if not _stored_fold_ok(j)]
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


class JobArrays:
    """The model inputs, mirrored inputs (``config.mirror``, else None) and labels of every
    sample, from which :meth:`job` cuts one :func:`train_fold` job."""

    def __init__(self, data: Composite, config: Config):
        self.config = config
        self.x = model_inputs(data, config)
        self.mirror = mirrored_inputs(data, config) if config.mirror else None
        self.y = data.table["label"].to_numpy()

    def job(self, fit: np.ndarray, test: np.ndarray, **job) -> dict:
        """A job training on the rows ``fit`` and testing on the rows ``test`` (masks);
        ``job`` adds seed, device, name, subject and path."""
        out = dict(config=self.config, x_train=self.x[fit], y_train=self.y[fit],
                   x_test=self.x[test], y_test=self.y[test], **job)
        if self.mirror is not None:
            out["x_train_mirror"] = self.mirror[fit]
        return out


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


def _save_fold(path: Path, subject: str, res: FoldResult) -> None:
    atomic_write(path, lambda p: np.savez(p, subject=subject, **dataclasses.asdict(res)))


def _train_jobs(jobs: list[dict], trainer: str, dev: torch.device, workers: int,
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
                     progress=progress, x_train_mirror=job.get("x_train_mirror"))
    _save_fold(job["path"], job["subject"], res)


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
    """Read a finished run folder.

    A folder that is not a run, a missing file, a damaged one, or a run that never finished is a
    :class:`RunError` naming the folder or file and what is wrong.
    """
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise RunError(f"{run_dir}: no such run folder")
    missing = [f for f in RUN_FILES if not (run_dir / f).is_file()]
    if missing:
        raise RunError(f"{run_dir}: not a finished run (missing {', '.join(missing)})")
    meta = finished_meta(run_dir)
    predictions = read_predictions(run_dir / "predictions.csv")
    epochs = read_npz(run_dir / "epochs.npz")
    shape = getattr(epochs.get("pred"), "shape", None)
    if shape is None or len(shape) != 2 or shape[1] != len(predictions):
        raise RunError(f"{run_dir / 'epochs.npz'}: pred (shape {shape}) does not hold one "
                       f"column per row of predictions.csv ({len(predictions)})")
    return Run(run_dir, meta, predictions, epochs, read_json(run_dir / "metrics.json"))
