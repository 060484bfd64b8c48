"""The run store: one layout for LOSO runs, nested inner fits and leave-one-dataset-out results.

A *run* is one LOSO training of one configuration with one seed. It lives in
``<runs>/<run-id>/``::

    config.json      configuration, profile, seed, data fingerprint, git commit, device,
                     library versions, wall time
    predictions.csv  dataset, subject, sample, label, honest, oracle (one row per sample)
    epochs.npz       pred (epochs, N) per-epoch predictions in predictions.csv order, epoch,
                     and per fold: subjects, train_loss, train_acc, test_acc (folds, epochs)
    metrics.json     UF1 and UAR of both protocols for full, smic, casme2, samm

Finished folds are stored in ``folds/`` as they complete, each file written atomically, so a
killed run resumes where it stopped and ends with the same predictions; a damaged fold file is
set aside (``NN.npz.corrupt``) and trained again (:func:`stored_fold_ok`). Assembly writes
config.json last, with ``n_folds``: a run counts as finished only then. One process at a time
trains a run: others wait on its ``.lock`` file (:func:`run_lock`). The run id is derived from
the configuration, the data and the seed (:func:`run_id`), so a notebook finds a stored run
instead of training again. :func:`load_run` reads a run back and raises
:class:`~htnetlib.errors.RunError` for a folder that is missing, unfinished or damaged.
The nested rule's inner fits (:mod:`htnetlib.training.nested`) and leave-one-dataset-out
results (:mod:`htnetlib.training.lodo`) use the same fold files, lock and completion rule.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import shlex
import sys
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from ..config import LATER_FIELDS, PROFILES, Config, FoldResult, profile_config
from ..data import Composite
from ..errors import RunError, TrainingError, one_line
from ..io import atomic_write, read_json, read_npz


def data_fingerprint(data: Composite) -> str:
    """A short hash of the flow maps, labels and subjects: which data a run saw."""
    h = hashlib.sha256(np.ascontiguousarray(data.flows).tobytes())
    h.update(data.table[["dataset", "subject", "sample", "label"]].to_csv(index=False).encode())
    return h.hexdigest()[:12]


def run_id(config: Config, seed: int, fingerprint: str, profile: str | None = None) -> str:
    """``<model>-<profile>-s<seed>-<hash>``, the hash over configuration, data and seed."""
    blob = json.dumps({"config": config.to_dict(), "seed": seed, "data": fingerprint},
                      sort_keys=True)
    digest = hashlib.sha256(blob.encode()).hexdigest()[:10]
    return f"{config.model}-{profile or 'custom'}-s{seed}-{digest}"


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


RUN_FILES = ("config.json", "predictions.csv", "epochs.npz", "metrics.json")


PREDICTION_COLUMNS = ["dataset", "subject", "sample", "label", "honest", "oracle"]


FOLD_KEYS = ("subject", "pred", "train_loss", "train_acc", "test_acc", "seconds")


LOCK_NAME = ".lock"


def read_predictions(path: Path) -> pd.DataFrame:
    """A run's predictions.csv; :class:`RunError` if it is missing, damaged or lacks a column."""
    path = Path(path)
    try:
        table = pd.read_csv(path, dtype={"subject": str, "sample": str})
    except FileNotFoundError:
        raise RunError(f"{path}: missing") from None
    except (OSError, ValueError) as exc:  # ValueError: pandas' parser and empty-file errors
        raise RunError(f"{path}: not a readable CSV file ({one_line(exc)})") from None
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


def stored_fold_ok(job: dict) -> bool:
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


def save_fold(path: Path, subject: str, res: FoldResult) -> None:
    atomic_write(path, lambda p: np.savez(p, subject=subject, **dataclasses.asdict(res)))


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

