"""The run store: one layout for LOSO runs, nested inner fits and leave-one-dataset-out results.

Three kinds of stored result (:class:`Kind`) share one set of rules here; the protocols only
say what to train and how to join it (:mod:`~htnetlib.training.loso`,
:mod:`~htnetlib.training.nested`, :mod:`~htnetlib.training.lodo`).

A *run* (:data:`RUN`) is one LOSO training of one configuration with one seed (paper section
4.2). It lives in ``<runs>/<run-id>/``::

    config.json      configuration, profile, seed, data fingerprint, git commit, device,
                     library versions, trainer, wall time
    predictions.csv  dataset, subject, sample, label, honest, oracle (one row per sample)
    epochs.npz       pred (epochs, N) per-epoch predictions in predictions.csv order, epoch,
                     and per fold: subjects, train_loss, train_acc, test_acc (folds, epochs);
                     prob (epochs, N, 3) float16 softmax probabilities in runs trained since
                     they are stored (older runs lack it; their ids are unchanged)
    metrics.json     UF1 and UAR of both protocols for full, smic, casme2, samm
    folds.json       each fold's stamp: index, held-out subject, commit, source hash, time
                     trained, device, trainer (runs trained since folds are stamped; older
                     runs lack it, and nothing requires it: :func:`folds_trained_after`)

A run's nested inner fits (:data:`INNER`) live in ``<run>/inner/`` (config.json, epochs.npz); a
leave-one-dataset-out result (:data:`LODO`) in ``<store>/<lodo-id>/`` with a run's four files.

The rules, the same for every kind:

* **ids** (:func:`hash_id`): a prefix and the first ten hex digits of the SHA-256 of the
  configuration, seed and data fingerprint, so a notebook finds a stored result instead of
  training again. The trainer and the machine never enter an id.
* **resume**: every job (:mod:`~htnetlib.training.jobs`) is stored as it finishes, each file
  written atomically, so a killed call resumes where it stopped and ends with the same
  predictions; a damaged job file is set aside (``NN.npz.corrupt``) with a
  :class:`~htnetlib.errors.StoreWarning` and trained again (:func:`stored_fold_ok`).
* **finished**: assembly writes config.json last, holding the kind's completion keys
  (``n_folds``; ``n_fits``; ``lodo_id`` and ``n_samples``): a result counts as finished only
  then (:func:`is_complete`), and an unfinished one is assembled or trained again.
* **lock**: one process at a time trains a result; others wait on its ``.lock`` file
  (:func:`run_lock`). :func:`produce` is the whole procedure under the lock.
* **reading**: :func:`load_stored` reads a finished result back and raises
  :class:`~htnetlib.errors.RunError` naming the folder or file that is missing, unfinished or
  damaged; :func:`load_run` is its form for runs.
* **provenance**: :func:`record` is what every kind's config.json says about how it was made;
  a kind with a stamps file (``folds.json`` of a run) records each job's commit, source hash
  and time as it was trained (:func:`~htnetlib.training.stamps.training_stamp`), kept when a
  later start reuses it, and :func:`folds_trained_after` answers per fold whether it
  postdates a commit or a time.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import shlex
import shutil
import warnings
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from ..config import LATER_FIELDS, PROFILES, Config, FoldResult, is_user_model, profile_config
from ..data import Composite
from ..errors import RunError, StoreWarning, TrainingError, one_line
from ..io import ROOT, atomic_write, now_iso, provenance, read_json, read_npz
from .stamps import STAMPS_NAME, folds_trained_after  # noqa: F401 (the check, read here)


# --------------------------------------------------------------------------- kinds and ids


RUN_FILES = ("config.json", "predictions.csv", "epochs.npz", "metrics.json")


PREDICTION_COLUMNS = ["dataset", "subject", "sample", "label", "honest", "oracle"]


FOLD_KEYS = ("subject", "pred", "train_loss", "train_acc", "test_acc", "seconds")


LOCK_NAME = ".lock"




@dataclass(frozen=True)
class Kind:
    """One kind of stored result: what it is called in messages, its files, the keys its final
    config.json holds (written last by assembly: the completion marker), the columns its
    predictions.csv must have, and where its job files wait for assembly (a subfolder, or None
    for the folder itself, matched by ``job_glob``)."""

    what: str
    files: tuple[str, ...]
    finished: tuple[str, ...]
    columns: tuple[str, ...] = ()
    job_dir: str | None = "folds"
    job_glob: str = "*.npz"
    stamps: str | None = None  # the file gathering each job's stamp (None: not kept)

    def job_files(self, folder: Path) -> list[Path]:
        """The job files (and set-aside damaged ones) waiting in ``folder`` for assembly."""
        if self.job_dir is not None:
            return []
        return [p for p in Path(folder).glob(self.job_glob + "*") if p.name not in self.files]


RUN = Kind("run", RUN_FILES, ("n_folds",), tuple(PREDICTION_COLUMNS), stamps=STAMPS_NAME)


# An inner store's job files are NN_G.npz next to its two files.
INNER = Kind("inner store", ("config.json", "epochs.npz"), ("n_fits",), job_dir=None,
             job_glob="[0-9][0-9]_*.npz")


# Results stored before the one store end with lodo_id and n_samples in their last write, and
# have no other marker: those two keys are the marker.
LODO = Kind("leave-one-dataset-out result", RUN_FILES, ("lodo_id", "n_samples"),
            tuple(PREDICTION_COLUMNS[:5]))


# Where smoke-profile results aimed at the repository's own results/ go instead: the git-ignored
# smoke folder (.gitignore: results/notebooks/smoke/), beside a smoke run's figures and tables
# (htnetlib.study.figures.results_dir), so a smoke run leaves no untracked file behind.
SMOKE_RESULTS = ROOT / "results" / "notebooks" / "smoke" / "results"


def smoke_folder(folder: Path | str, profile: str | None) -> Path:
    """``folder``, or for the ``smoke`` profile a folder inside the repository's ``results/``
    (``results/runs``, ``results/tables/lodo``) moved to the same place under
    :data:`SMOKE_RESULTS`; every run and result of the store is found and written through it."""
    path = Path(folder)
    if profile != "smoke":
        return path
    where, results = path.resolve(), (ROOT / "results").resolve()
    if where.is_relative_to(SMOKE_RESULTS.resolve()) or not where.is_relative_to(results):
        return path
    return SMOKE_RESULTS / where.relative_to(results)


def hash_id(prefix: str, payload: dict) -> str:
    """``<prefix>-<hash>``: the first ten hex digits of the SHA-256 of ``payload`` as key-sorted
    JSON. Every stored result's id is made here, so equal inputs find the same folder."""
    blob = json.dumps(payload, sort_keys=True)
    return f"{prefix}-{hashlib.sha256(blob.encode()).hexdigest()[:10]}"


def data_fingerprint(data: Composite) -> str:
    """A short hash of the flow maps, labels and subjects: which data a run saw."""
    h = hashlib.sha256(np.ascontiguousarray(data.flows).tobytes())
    h.update(data.table[["dataset", "subject", "sample", "label"]].to_csv(index=False).encode())
    return h.hexdigest()[:12]


def model_tag(model: str) -> str:
    """The model's part of an id: its name, or ``user-<callable>`` for a user's
    ``package.module:callable`` (the full string is in the hashed configuration)."""
    return f"user-{model.partition(':')[2]}" if is_user_model(model) else model


def run_id(config: Config, seed: int, fingerprint: str, profile: str | None = None) -> str:
    """``<model>-<profile>-s<seed>-<hash>``, the hash over configuration, data and seed;
    ``<model>`` is :func:`model_tag` of the configuration's model."""
    return hash_id(f"{model_tag(config.model)}-{profile or 'custom'}-s{seed}",
                   {"config": config.to_dict(), "seed": seed, "data": fingerprint})


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


def record(data: Composite, config: Config, seed: int, fingerprint: str, device=None, *,
           dirty: bool = True, root: bool = True) -> dict:
    """The provenance block of a stored result's config.json: configuration (as stored), seed,
    data fingerprint, the release folder's name (``root``) and :func:`htnetlib.io.provenance`
    (commit, changed files where ``dirty``, device, library versions)."""
    out = {"seed": seed, "config": config.stored_dict(), "data_fingerprint": fingerprint}
    if root:
        out["data_root"] = Path(data.root).resolve().name
    return {**out, **provenance(device, dirty=dirty)}


# --------------------------------------------------------------------------- finished or not


def read_predictions(path: Path, columns=PREDICTION_COLUMNS) -> pd.DataFrame:
    """A predictions.csv; :class:`RunError` if it is missing, damaged or lacks a column."""
    path = Path(path)
    try:
        table = pd.read_csv(path, dtype={"subject": str, "sample": str})
    except FileNotFoundError:
        raise RunError(f"{path}: missing") from None
    except (OSError, ValueError) as exc:  # ValueError: pandas' parser and empty-file errors
        raise RunError(f"{path}: not a readable CSV file ({one_line(exc)})") from None
    missing = [c for c in columns if c not in table.columns]
    if missing:
        raise RunError(f"{path}: lacks column(s) {', '.join(missing)}")
    return table


def finished_meta(folder: Path, kind: Kind = RUN) -> dict:
    """The config.json of a finished result of ``kind``.

    :class:`RunError` if it is missing, damaged, or was written before the result finished (it
    lacks a completion key, which assembly adds in its last write).
    """
    path = Path(folder) / "config.json"
    meta = read_json(path)
    lacking = [k for k in kind.finished if k not in meta]
    if lacking:
        raise RunError(f"{path}: the {kind.what} is not finished (no {', '.join(lacking)}); "
                       "train it again to finish it")
    return meta


def damage(folder: Path, kind: Kind = RUN) -> str | None:
    """What keeps a result of ``kind`` whose files all exist from being a complete one (one
    line naming the file), or None. The one completeness check of grid, the plan and
    training (:func:`is_complete`): config.json is the final one (:func:`finished_meta`);
    every JSON file parses and holds only finite numbers; every CSV file reads with its
    columns and no empty cell (a truncated last row); the predictions of epochs.npz read; and
    they agree: one row of predictions.csv per sample of config.json (``n_samples``), one
    column of epochs.npz's ``pred`` per row, one row of it per epoch (``epochs``)."""
    folder = Path(folder)
    try:
        meta = finished_meta(folder, kind)
        rows = pred = None
        for name in kind.files:
            path = folder / name
            if name == "config.json":
                continue
            if name.endswith(".json"):
                bad = non_finite(read_json(path))
                if bad:
                    return f"{path}: {bad} is not a finite number"
            elif name.endswith(".csv"):
                table = read_predictions(path, kind.columns)
                empty = table[list(kind.columns)].isna().any(axis=1)
                if empty.any():
                    return (f"{path}: row {int(empty.to_numpy().argmax()) + 2} has an empty "
                            "cell (a truncated or edited file)")
                rows = len(table)
            elif name.endswith(".npz"):
                pred = read_npz(path, ("pred",))["pred"]
    except RunError as exc:
        return str(exc)
    n, epochs = meta.get("n_samples"), meta.get("epochs")
    csv, npz = folder / "predictions.csv", folder / "epochs.npz"
    if rows is not None and n is not None and rows != n:
        return f"{csv}: {rows} rows, but config.json records {n} samples"
    if pred is not None and pred.ndim < 2:
        return f"{npz}: pred of shape {pred.shape}, expected (epochs, samples)"
    if pred is not None and rows is not None and pred.shape[-1] != rows:
        return f"{npz}: pred holds {pred.shape[-1]} samples, predictions.csv {rows} rows"
    if pred is not None and epochs is not None and pred.shape[-2] != epochs:
        return f"{npz}: pred holds {pred.shape[-2]} epochs, config.json records {epochs}"
    return None


def non_finite(obj, where: str = "") -> str | None:
    """The first key path (``honest.full.uf1``) of a JSON value that is NaN or infinite, or
    None."""
    if isinstance(obj, float) and not np.isfinite(obj):
        return where or "the value"
    items = obj.items() if isinstance(obj, dict) else enumerate(obj) if isinstance(
        obj, list) else ()
    for key, value in items:
        found = non_finite(value, f"{where}.{key}" if where else str(key))
        if found:
            return found
    return None


def is_complete(folder: Path, kind: Kind = RUN) -> bool:
    """Whether ``folder`` is a finished, undamaged result of ``kind``: its files exist and
    :func:`damage` finds nothing (config.json, written last by assembly, is the final one; a
    truncated predictions.csv or metrics.json is not a finished run)."""
    folder = Path(folder)
    if not all((folder / f).is_file() for f in kind.files):
        return False
    return damage(folder, kind) is None


def set_aside(folder: Path, kind: Kind = RUN) -> str | None:
    """Where a finished result of ``kind`` is damaged (:func:`damage`), move the damaged file
    aside (``<name>.corrupt``) and say so in one :class:`StoreWarning`, so that it is trained
    again; returns the problem, or None where there is none."""
    folder = Path(folder)
    if not all((folder / f).is_file() for f in kind.files):
        return None
    try:
        finished_meta(folder, kind)
    except RunError:  # unfinished (a killed assembly): assembled again, nothing is damaged
        return None
    problem = damage(folder, kind)
    if problem is None:
        return None
    path = Path(problem.split(": ", 1)[0])
    moved = ""
    if path.parent == folder and path.name in kind.files and path.name != "config.json":
        os.replace(path, path.with_name(path.name + ".corrupt"))
        moved = f"; moved to {path.name}.corrupt"
    warnings.warn(f"{problem}{moved}; training the {kind.what} again", StoreWarning,
                  stacklevel=3)
    return problem


def temp_files(folder: Path) -> list[Path]:
    """Temporary files :func:`htnetlib.io.atomic_write` left in ``folder`` when its process was
    killed mid-write (``.<name>.<random><suffix>``); the lock file ``.lock`` is none."""
    return [p for p in Path(folder).glob(".*.*") if p.is_file()]


def has_leftovers(folder: Path, kind: Kind = RUN) -> bool:
    """Whether a lock file, job files or temporary files remain in ``folder`` (a killed or
    running training)."""
    folder = Path(folder)
    return ((folder / LOCK_NAME).exists() or bool(kind.job_files(folder))
            or (kind.job_dir is not None and (folder / kind.job_dir).exists())
            or bool(temp_files(folder)))


def clear_jobs(folder: Path, kind: Kind = RUN) -> None:
    """Remove the job files of an assembled result, and temporary files of killed writes
    (called under the result's lock, so no write of another process is under way)."""
    folder = Path(folder)
    if kind.job_dir is not None:
        shutil.rmtree(folder / kind.job_dir, ignore_errors=True)
    for path in kind.job_files(folder) + temp_files(folder):
        path.unlink(missing_ok=True)


def load_stored(folder: Path | str, kind: Kind = RUN) -> dict:
    """Read a finished result of ``kind``: ``path``, ``meta`` (config.json) and every other file
    by its name (.json as a dict, .csv as a checked table, .npz as a dict of arrays).

    A folder that is missing, a missing file, a damaged one, or a result that never finished is
    a :class:`RunError` naming the folder or file and what is wrong.
    """
    folder = Path(folder)
    if not folder.is_dir():
        raise RunError(f"{folder}: no such {kind.what} folder")
    missing = [f for f in kind.files if not (folder / f).is_file()]
    if missing:
        raise RunError(f"{folder}: not a finished {kind.what} (missing {', '.join(missing)})")
    out = {"path": folder, "meta": finished_meta(folder, kind)}
    for name in kind.files:
        path = folder / name
        if name == "config.json":
            continue
        if name.endswith(".csv"):
            out[name] = read_predictions(path, kind.columns)
        elif name.endswith(".npz"):
            out[name] = read_npz(path)
        else:
            out[name] = read_json(path)
    return out


# --------------------------------------------------------------------------- jobs and the lock


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

    A damaged file is moved aside (``NN.npz.corrupt``) with a one-line :class:`StoreWarning`,
    so the fold is trained again.
    """
    path = job["path"]
    if not path.is_file():
        return False
    problem = fold_problem(path, job["subject"], job["config"].epochs, len(job["y_test"]))
    if problem is None:
        return True
    os.replace(path, path.with_name(path.name + ".corrupt"))
    warnings.warn(f"{problem}; moved to {path.name}.corrupt, training the fold again",
                  StoreWarning, stacklevel=2)
    return False


def save_fold(path: Path, subject: str, res: FoldResult, stamp: dict | None = None) -> None:
    """Store one job's result atomically; with ``stamp``
    (:func:`~htnetlib.training.stamps.training_stamp`), that stamp
    and the time now (``trained_at``) as the JSON string ``stamp`` beside the arrays."""
    arrays = {k: v for k, v in dataclasses.asdict(res).items() if v is not None}
    if stamp is not None:
        arrays["stamp"] = np.array(json.dumps({**stamp, "trained_at": now_iso()},
                                              sort_keys=True))
    atomic_write(path, lambda p: np.savez(p, subject=subject, **arrays))


# The probability arrays a job may store (epochs, n_test, classes), float16: ``prob`` (jobs
# trained before probabilities were stored lack it) and the readouts of Config.readouts.
PROB_KEYS = ("prob", "prob_mirror", "prob_swa", "prob_swa_mirror")


def read_fold(path: Path) -> dict:
    """A stored job file: the arrays of :data:`FOLD_KEYS`, with those of :data:`PROB_KEYS` the
    job stored."""
    f = read_npz(path, FOLD_KEYS)
    with np.load(path) as npz:
        for key in PROB_KEYS:
            if key in npz.files:
                f[key] = npz[key]
    return f


def joined_probabilities(folds: list[dict], epochs: int, n: int, columns: list) -> dict:
    """Each key of :data:`PROB_KEYS` that every job stored, as one (epochs, n, classes) float16
    array: job k's probabilities in the columns ``columns[k]`` (NaN elsewhere); ``{}`` when a
    job lacks ``prob``."""
    out = {}
    for key in PROB_KEYS:
        if not folds or any(key not in f for f in folds):
            continue
        prob = np.full((epochs, n, folds[0][key].shape[-1]), np.nan, dtype=np.float16)
        for f, cols in zip(folds, columns):
            prob[:, cols] = f[key]
        out[key] = prob
    return out if "prob" in out else {}


@contextmanager
def run_lock(folder: Path):
    """Hold the lock of one stored result, so one process at a time trains or assembles it.

    The lock is ``fcntl.flock`` on ``<folder>/.lock``. A second process says once that it
    waits (a :class:`StoreWarning`), then blocks until the first is done. The file is removed on
    release, so a finished result holds only its files; a waiter left holding the removed file
    retries on the new one. Without ``fcntl`` (Windows) nothing is locked.
    """
    try:
        import fcntl
    except ImportError:
        yield
        return
    path = Path(folder) / LOCK_NAME
    path.parent.mkdir(parents=True, exist_ok=True)
    said = False
    while True:
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            if not said:
                warnings.warn(f"{Path(folder).name}: another process is training this run; "
                              "waiting for it to finish", StoreWarning, stacklevel=3)
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


def reusable(folder: Path, kind: Kind = RUN, retrain: bool = False) -> bool:
    """Whether ``folder`` holds a finished result to read as it is, without taking the lock."""
    return not retrain and is_complete(folder, kind) and not has_leftovers(folder, kind)


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
    """Read a finished run folder (:func:`load_stored` of :data:`RUN`), checking that
    epochs.npz holds one prediction column per row of predictions.csv. A metrics.json holding
    NaN or an infinity is recomputed from predictions.csv, with a :class:`StoreWarning`."""
    stored = load_stored(run_dir, RUN)
    run_dir, predictions, epochs = stored["path"], stored["predictions.csv"], stored["epochs.npz"]
    problem = damage(run_dir, RUN)  # the one completeness check names the damaged file
    if problem and not problem.startswith(f"{run_dir / 'metrics.json'}: "):
        raise RunError(problem)
    shape = getattr(epochs.get("pred"), "shape", None)
    if shape is None or len(shape) != 2 or shape[1] != len(predictions):
        raise RunError(f"{run_dir / 'epochs.npz'}: pred (shape {shape}) does not hold one "
                       f"column per row of predictions.csv ({len(predictions)})")
    scores = stored["metrics.json"]
    bad = non_finite(scores)
    if bad:  # recomputed from the predictions, as anyone can
        from ..evaluation import metrics

        scores = {proto: metrics.scores(predictions, proto) for proto in metrics.PROTOCOLS}
        warnings.warn(f"{run_dir / 'metrics.json'}: {bad} is not a finite number; every score "
                      "recomputed from predictions.csv", StoreWarning, stacklevel=2)
    return Run(run_dir, stored["meta"], predictions, epochs, scores)
