"""Honest model selection, and leave-one-dataset-out evaluation (beyond the paper's section 4.2).

The official code reports, per held-out subject, the epoch that scores best on that subject's
test labels (the ``oracle`` of :mod:`htnetlib.metrics`). Every rule here chooses without the
held-out subject's labels, and returns one prediction per sample, in a run's predictions.csv
order, scored like ``honest`` and ``oracle`` (UF1 of eq. 8, UAR of eq. 9). A rule is a function
``rule(pred, y, subjects) -> (N,)`` of a run's per-epoch predictions ``pred`` (epochs, N), the
labels and the subjects. The leak test (:func:`leaked_subjects`, ``tests/test_protocols.py``)
replaces one subject's labels at a time: that subject's predictions must not move (the
oracle's do). :func:`selection_table` scores every variant under every rule (notebook 12).

* :func:`cross_subject_predictions`: for subject s, the epoch that scores best on the *other*
  subjects' held-out predictions of the same run (costs no training).
* :func:`last_epochs_vote` and :func:`vote`: majority votes over the last k epochs, over seeds,
  or both.
* :func:`nested_predictions`: the reference rule. Inside each outer fold the number of epochs is
  chosen by an inner leave-subjects-out split of the training subjects only (GroupKFold, 5
  groups); the outer model's prediction at that epoch is kept. The inner fits are stored in
  ``<run>/inner/`` and resume like folds (:func:`run_nested`).
* :func:`run_lodo`: leave-one-dataset-out: train on two of SMIC, CASME II and SAMM, test on the
  third, final epoch only; stored as a run-like folder (:func:`load_lodo`), tabled beside LOSO
  by :func:`lodo_table` (notebook 13).
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import shutil
import time
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from . import metrics, train
from .config import Config, check_seed
from .data import Composite

CLASSES = 3  # negative, positive, surprise


# --------------------------------------------------------------------------- scores per epoch


def confusion_by_epoch(pred: np.ndarray, y, groups) -> tuple[np.ndarray, np.ndarray]:
    """Group ids and confusion counts (epochs, groups, true, predicted) of ``pred`` (epochs, N).

    Entries of ``pred`` below 0 (no prediction) are left out."""
    pred, y, groups = np.asarray(pred), np.asarray(y, dtype=np.int64), np.asarray(groups)
    ids, gi = np.unique(groups, return_inverse=True)
    cm = np.zeros((pred.shape[0], len(ids), CLASSES * CLASSES))
    e, n = np.nonzero(pred >= 0)
    np.add.at(cm, (e, gi[n], y[n] * CLASSES + pred[e, n]), 1)
    return ids, cm.reshape(pred.shape[0], len(ids), CLASSES, CLASSES)


def scores_from_confusion(cm: np.ndarray, metric: str = "uf1") -> np.ndarray:
    """UF1 (eq. 8), UAR (eq. 9) or accuracy of confusion matrices (..., true, predicted), macro
    over the classes present in the true labels, as :func:`htnetlib.metrics.uf1` computes."""
    tp = np.diagonal(cm, axis1=-2, axis2=-1)
    support, predicted = cm.sum(-1), cm.sum(-2)
    present = support > 0
    if metric == "accuracy":
        return tp.sum(-1) / np.maximum(support.sum(-1), 1)
    with np.errstate(invalid="ignore", divide="ignore"):
        per_class = (2 * tp / (support + predicted) if metric == "uf1"
                     else tp / np.where(present, support, 1))
    per_class = np.where(present, per_class, 0.0)
    return per_class.sum(-1) / np.maximum(present.sum(-1), 1)


def best_epoch(scores: np.ndarray) -> int:
    """Index of the best score; ties go to the later epoch (as the oracle breaks them)."""
    scores = np.asarray(scores)
    return int(len(scores) - 1 - np.argmax(scores[::-1]))


def at_epochs(pred: np.ndarray, subjects, chosen: dict) -> np.ndarray:
    """Each subject's predictions at its chosen epoch index ``chosen[subject]``."""
    pred, subjects = np.asarray(pred), np.asarray(subjects)
    out = np.empty(pred.shape[1], dtype=pred.dtype)
    for s, e in chosen.items():
        idx = subjects == s
        out[idx] = pred[e, idx]
    return out


# --------------------------------------------------------------------------- rules on one run


def cross_subject_epochs(pred: np.ndarray, y, subjects, metric: str = "uf1") -> dict:
    """Per subject s, the epoch index that scores best on every *other* subject's held-out
    predictions of the same run (``metric``: uf1 or accuracy); s's labels are never read."""
    ids, cm = confusion_by_epoch(pred, y, subjects)
    total = cm.sum(1)  # (epochs, true, predicted)
    return {s: best_epoch(scores_from_confusion(total - cm[:, i], metric))
            for i, s in enumerate(ids)}


def cross_subject_predictions(pred: np.ndarray, y, subjects, metric: str = "uf1") -> np.ndarray:
    """Each subject's predictions at its :func:`cross_subject_epochs` epoch."""
    return at_epochs(pred, subjects, cross_subject_epochs(pred, y, subjects, metric))


def vote(stack: np.ndarray) -> np.ndarray:
    """Majority class per column of ``stack`` (members, N); a tie goes to the tied class voted
    by the latest member (the last epoch, or the last seed listed)."""
    stack = np.asarray(stack)
    counts = np.stack([(stack == c).sum(0) for c in range(CLASSES)], axis=1)  # (N, classes)
    latest = np.zeros_like(counts)
    for m in range(len(stack)):
        latest[np.arange(stack.shape[1]), stack[m]] = m + 1
    return np.argmax(counts * (len(stack) + 1) + latest, axis=1).astype(stack.dtype)


def last_epochs_vote(pred: np.ndarray, k: int) -> np.ndarray:
    """Majority vote of the predictions after the last ``k`` epochs (ties: the later epoch)."""
    pred = np.asarray(pred)
    if not 1 <= k <= len(pred):
        raise ValueError(f"k={k} must lie between 1 and the {len(pred)} epochs")
    return vote(pred[-k:])


def fraction_of_epochs(epochs: int, fraction: float) -> int:
    """How many final epochs a vote over ``fraction`` of them takes (at least 1)."""
    return max(1, int(round(epochs * fraction)))


def honest_rule(pred, y, subjects) -> np.ndarray:
    """The plain honest protocol: the final epoch."""
    return metrics.honest_predictions(pred)


def oracle_rule(pred, y, subjects) -> np.ndarray:
    """The official (oracle) protocol: each subject's best epoch by its own test labels."""
    return metrics.oracle_predictions(pred, y, subjects)


# The rules on one run's epochs, fixed before any variant was trained (notebook 12): name ->
# rule(pred, y, subjects). The nested rules need the inner store (:func:`nested_rule`).
RULES = {
    "final epoch": honest_rule,
    "cross-subject epoch (UF1)": lambda p, y, s: cross_subject_predictions(p, y, s, "uf1"),
    "cross-subject epoch (accuracy)":
        lambda p, y, s: cross_subject_predictions(p, y, s, "accuracy"),
    "vote of the last 10% of epochs":
        lambda p, y, s: last_epochs_vote(p, fraction_of_epochs(len(p), 0.10)),
    "vote of the last 25% of epochs":
        lambda p, y, s: last_epochs_vote(p, fraction_of_epochs(len(p), 0.25)),
}
# Rules over several seeds of one configuration: list of (epochs, N) arrays -> (N,).
SEED_RULES = {
    "vote of seeds, final epoch": lambda preds: vote(np.stack([p[-1] for p in preds])),
    "vote of seeds x last 25% of epochs": lambda preds: vote(np.concatenate(
        [p[-fraction_of_epochs(len(p), 0.25):] for p in preds])),
}


def leaked_subjects(rule, pred, y, subjects) -> list:
    """The leak test: subjects whose *own* predictions under ``rule`` change when their labels
    are replaced (each subject in turn; labels shifted by one class, then by two), the
    predictions of every epoch staying as they are. An honest rule gives []; the oracle does not.

    Other subjects' predictions may move: for them this subject is training data, and a rule
    may read its labels when it chooses for them.
    """
    pred, y, subjects = np.asarray(pred), np.asarray(y), np.asarray(subjects)
    base = rule(pred, y, subjects)
    moved = []
    for s in dict.fromkeys(subjects):
        idx = subjects == s
        for shift in (1, 2):
            y2 = np.where(idx, (y + shift) % CLASSES, y)
            if not np.array_equal(rule(pred, y2, subjects)[idx], base[idx]):
                moved.append(s)
                break
    return moved


# --------------------------------------------------------------------------- nested selection


INNER_DIR = "inner"
INNER_GROUPS = 5


def inner_seed(seed: int, fold: int, group: int) -> int:
    """The seed of inner fit ``group`` of outer fold ``fold`` (distinct from every fold seed)."""
    return 10_000_000 + train.fold_seed(seed, fold) * 10 + group


def inner_splits(data: Composite, config: Config, n_groups: int = INNER_GROUPS) -> list[dict]:
    """Per outer fold (held-out subject, in run order) the inner split of its training subjects:
    ``{"subject", "groups"}`` with ``groups`` (N,) the inner group of every training sample and
    -1 for the held-out subject's (scikit-learn's GroupKFold by subject, no randomness)."""
    from sklearn.model_selection import GroupKFold

    subjects = data.table["subject"].to_numpy()
    out = []
    for s in train.fold_subjects(data, config):
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
    arrays = train.JobArrays(data, config)
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
    """The outer LOSO run (:func:`htnetlib.train.run_loso`, reused or trained) and its inner
    store ``<run>/inner/``; returns the run folder.

    Each inner fit is stored as it finishes (``inner/NN_G.npz``), so a killed call resumes; then
    ``inner/epochs.npz`` (``pred`` (folds, epochs, N): every training sample's inner held-out
    prediction after each epoch, -1 for the outer held-out subject, N the release's rows in its
    order, named by ``dataset``, ``subject``, ``sample`` with their ``label``; ``groups``
    (folds, N); ``seconds`` (folds, groups)) and ``inner/config.json`` (written last) replace
    them. Training obeys ``HTNET_TRAIN_PROFILES`` as :func:`htnetlib.train.run_loso` does.
    """
    run_dir = train.run_loso(data, config, seed=seed, runs_dir=runs_dir, profile=profile,
                             retrain=retrain, workers=workers, progress=progress)
    store = run_dir / INNER_DIR
    if nested_complete(run_dir, n_groups) and not retrain:
        return run_dir
    train.check_training_allowed(profile, f"{run_dir.name} has no finished inner store "
                                          f"({store})")
    with train.run_lock(store):
        if retrain:
            for path in store.iterdir():
                if path.name != train.LOCK_NAME:
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
        meta = train.read_json(store / "config.json")
    except train.RunError:
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
            "config": config.stored_dict(), "data_fingerprint": train.data_fingerprint(data),
            "git_commit": train.git_commit(), "device": train.device_name(dev),
            "versions": train.versions(), "workers": workers,
            "recompute": "htnetlib.protocols.run_nested(data, config, seed=seed, "
                         "runs_dir=..., profile=..., retrain=True)"}
    train.write_json(store / "config.json", meta)  # without n_fits: unfinished
    splits = inner_splits(data, config, n_groups)
    jobs = inner_jobs(data, config, seed, store, splits, dev)
    todo = [j for j in jobs if not train._stored_fold_ok(j)]
    start = time.perf_counter()
    for _ in train._train_jobs(todo, "loop", dev, workers, 1, progress):
        pass
    n, epochs = len(data.table), config.epochs
    pred = np.full((len(splits), epochs, n), -1, dtype=np.int8)
    seconds = np.zeros((len(splits), n_groups))
    for job in jobs:
        k, g = map(int, job["path"].stem.split("_"))
        f = train.read_npz(job["path"], train.FOLD_KEYS)
        pred[k][:, splits[k]["groups"] == g] = f["pred"]
        seconds[k, g] = float(f["seconds"])
    keys = {k: np.asarray(data.table[k].astype(str), dtype=str) for k in metrics.KEY}
    train.atomic_write(store / "epochs.npz", lambda p: np.savez_compressed(
        p, pred=pred, groups=np.stack([s["groups"] for s in splits]),
        subjects=np.array([s["subject"] for s in splits]), seconds=seconds,
        label=data.table["label"].to_numpy(), **keys))
    meta.update(n_fits=len(jobs), n_folds=len(splits), epochs=epochs,
                train_seconds=round(float(seconds.sum()), 1),
                wall_seconds_this_call=round(time.perf_counter() - start, 1))
    train.write_json(store / "config.json", meta)
    for job in jobs:
        job["path"].unlink()


def load_inner(run_dir: Path | str) -> dict:
    """A run's finished inner store: ``meta`` and the arrays of ``inner/epochs.npz``."""
    meta = _finished_inner_meta(run_dir)
    if meta is None:
        raise train.RunError(f"{Path(run_dir) / INNER_DIR}: no finished inner store; run "
                             "htnetlib.protocols.run_nested for this run")
    inner = train.read_npz(Path(run_dir) / INNER_DIR / "epochs.npz")
    inner["meta"] = meta
    return inner


def nested_epochs(inner_pred: np.ndarray, y, fold_subjects, metric: str = "uf1") -> dict:
    """Per outer fold's subject, the epoch index whose pooled inner held-out predictions score
    best (``inner_pred`` (folds, epochs, N), -1 where a sample is not an inner test sample);
    only the training subjects' labels are read."""
    chosen = {}
    for k, s in enumerate(fold_subjects):
        _, cm = confusion_by_epoch(inner_pred[k], y, np.zeros(len(y), dtype=int))
        chosen[s] = best_epoch(scores_from_confusion(cm[:, 0], metric))
    return chosen


def nested_rule(inner: dict, row_order, labels, metric: str = "uf1"):
    """The nested rule as ``rule(pred, y, subjects)`` for a run whose predictions.csv rows are
    the release rows ``row_order`` (columns of ``inner["pred"]``).

    The inner fits are scored with the labels ``y`` handed to the rule for the run's own rows,
    and with ``labels`` (the release's, every row) for training-only subjects, which no fold of
    the run holds out (a run with ``max_folds``)."""
    row_order = np.asarray(row_order)
    folds = [str(s) for s in inner["subjects"]]

    def rule(pred, y, subjects):
        y_all = np.asarray(labels, dtype=np.int64).copy()
        y_all[row_order] = np.asarray(y)
        return at_epochs(pred, subjects, nested_epochs(inner["pred"], y_all, folds, metric))
    return rule


def nested_predictions(run: train.Run, metric: str = "uf1") -> np.ndarray:
    """The nested rule's predictions for ``run``, from its finished inner store alone."""
    inner = load_inner(run.path)
    release = pd.DataFrame({k: inner[k] for k in metrics.KEY})
    rule = nested_rule(inner, table_rows(release, run.predictions), inner["label"], metric)
    p = run.predictions
    return rule(run.epochs["pred"], p["label"].to_numpy(), p["subject"].to_numpy())


def nested_chosen_epochs(run: train.Run, metric: str = "uf1") -> dict:
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


# --------------------------------------------------------------------------- the plan of notebook 12

# The training variants, fixed before any was trained: name -> changes to the profile's
# configuration (notebook 12 states the plan). Single changes are trained with the first seed,
# the plain model and the two combinations with every seed; the nested rule runs for
# NESTED_VARIANTS (first seed), leave-one-dataset-out for LODO_MODELS.
VARIANTS = {
    "plain": {},
    "class-balanced loss (eq. 7)": {"class_weights": "balanced"},
    "mirror augmentation": {"mirror": True},
    "cosine schedule": {"lr_schedule": "cosine"},
    "all three": {"class_weights": "balanced", "mirror": True, "lr_schedule": "cosine"},
    "all three, whole map": {"regions": "whole", "class_weights": "balanced", "mirror": True,
                             "lr_schedule": "cosine"},
}
EVERY_SEED = ("plain", "all three", "all three, whole map")
NESTED_VARIANTS = ("plain", "all three")
LODO_MODELS = {"HTNet": ("htnet", {}), "HTNet, all three": ("htnet", VARIANTS["all three"]),
               "STSTNet": ("ststnet", {}), "Logistic regression": ("logreg", {})}


def variant_config(name: str, profile: str) -> Config:
    """The configuration of training variant ``name`` (:data:`VARIANTS`) in ``profile``."""
    return dataclasses.replace(train.profile_config(profile), **VARIANTS[name])


def variant_seeds(name: str, seeds) -> list[int]:
    """The seeds variant ``name`` is trained with: every seed, or the first for a single change."""
    return list(seeds) if name in EVERY_SEED else list(seeds)[:1]


def lodo_config(name: str, profile: str) -> Config:
    """The configuration of leave-one-dataset-out model ``name`` (:data:`LODO_MODELS`)."""
    model, changes = LODO_MODELS[name]
    return dataclasses.replace(train.profile_config(profile, model), **changes)


# --------------------------------------------------------------------------- tables of rules


def rule_tables(runs: list[train.Run], rule) -> list[pd.DataFrame]:
    """Per run, its predictions table with the ``rule``'s predictions in column ``pred``."""
    out = []
    for r in runs:
        p = r.predictions
        out.append(p[metrics.KEY + ["label"]].assign(
            pred=rule(r.epochs["pred"], p["label"].to_numpy(), p["subject"].to_numpy())))
    return out


def seed_rule_table(runs: list[train.Run], rule) -> pd.DataFrame:
    """One predictions table (column ``pred``) of a rule over the seeds ``runs``."""
    base = runs[0].predictions
    for r in runs[1:]:
        if not r.predictions[metrics.KEY].equals(base[metrics.KEY]):
            raise ValueError(f"{r.path.name} lists its samples in another order than "
                             f"{runs[0].path.name}")
    return base[metrics.KEY + ["label"]].assign(pred=rule([r.epochs["pred"] for r in runs]))


def score_row(tables: list[pd.DataFrame], baseline: list[pd.DataFrame], *,
              n_boot: int = 1000) -> dict:
    """Scores of predictions tables (column ``pred``; the mean over ``tables``, i.e. seeds): UF1
    and UAR of the composite and each dataset, the 95 % subject-bootstrap interval of the
    composite UF1 and UAR, and the paired bootstrap difference of the composite UF1 from
    ``baseline`` (tables with column ``pred``) on the same subjects."""
    from .data import DATASET_NAMES

    row = {}
    for g in metrics.GROUPS:
        per_table = [metrics.scores(t, "pred").get(g) for t in tables]
        for m in ("uf1", "uar"):
            row[f"{DATASET_NAMES[g]} {m.upper()}"] = (
                float(np.mean([x[m] for x in per_table])) if per_table[0] else float("nan"))
    ci = metrics.bootstrap_ci(tables, "pred", n_boot=n_boot)
    row["Full UF1 95% CI"] = "%.3f-%.3f" % ci["uf1"]
    row["Full UAR 95% CI"] = "%.3f-%.3f" % ci["uar"]
    diff = metrics.paired_bootstrap(tables, "pred", baseline, "pred", n_boot=n_boot)
    row["UF1 - plain honest"] = diff["diff"]
    row["difference 95% CI"] = "%+.3f to %+.3f" % diff["ci"]
    row["p(difference <= 0)"] = diff["p_le_zero"]
    return row


def selection_table(runs: dict[str, list[train.Run]], *, n_boot: int = 1000) -> pd.DataFrame:
    """Every variant under every rule: one row each, scored by :func:`score_row` against the
    plain variant's final epoch on the same seeds (``runs["plain"]``, by seed).

    Per-run rules (:data:`RULES`, the oracle for reference, and the nested rules where the run
    has an inner store) are scored per seed and averaged; seed rules (:data:`SEED_RULES`) give
    one ensemble over a variant's seeds, where it has two or more.
    """
    plain = {r.meta["seed"]: r for r in runs["plain"]}
    rows = []

    def add(name, rule, honest, rs, tables):
        base = rule_tables([plain[r.meta["seed"]] for r in rs], honest_rule)
        rows.append({"variant": name, "rule": rule, "honest": honest,
                     "seeds": ",".join(str(r.meta["seed"]) for r in rs),
                     **score_row(tables, base, n_boot=n_boot)})

    for name, rs in runs.items():
        for rule, fn in RULES.items():
            add(name, rule, True, rs, rule_tables(rs, fn))
        nested = [r for r in rs if nested_complete(r.path)]
        for metric in ("uf1", "accuracy"):
            if nested:
                add(name, f"nested epoch ({'UF1' if metric == 'uf1' else metric})", True, nested,
                    [r.predictions[metrics.KEY + ["label"]].assign(
                        pred=nested_predictions(r, metric)) for r in nested])
        if len(rs) > 1:
            for rule, fn in SEED_RULES.items():
                add(name, rule, True, rs, [seed_rule_table(rs, fn)])
        add(name, "oracle (test labels; not honest)", False, rs, rule_tables(rs, oracle_rule))
    return pd.DataFrame(rows)


# --------------------------------------------------------------------------- leave one dataset out


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
    fingerprint = train.data_fingerprint(data)
    out = Path(store_dir) / lodo_id(config, seed, fingerprint, profile)
    if all((out / f).is_file() for f in LODO_FILES) and not retrain:
        return out
    train.check_training_allowed(profile, f"{out.name} is not stored under {store_dir}")
    table = data.table
    held = [d for d in LODO_DATASETS if d in set(table["dataset"])]
    if len(held) < 2:
        raise ValueError(f"leave-one-dataset-out needs two datasets or more; the release holds "
                         f"{held}")
    arrays = train.JobArrays(data, config)
    dev = torch.device("cpu")
    with train.run_lock(out):
        if retrain:
            shutil.rmtree(out / "folds", ignore_errors=True)
        jobs = []
        for k, d in enumerate(held):
            test = (table["dataset"] == d).to_numpy()
            jobs.append(arrays.job(~test, test, seed=train.fold_seed(seed, k), device="cpu",
                                   name=f"held-out dataset {d}", subject=d,
                                   path=out / "folds" / f"{k:02d}.npz"))
        todo = [j for j in jobs if not train._stored_fold_ok(j)]
        for _ in train._train_jobs(todo, "loop", dev, workers, 1, False):
            pass
        _assemble_lodo(out, data, config, seed, profile, fingerprint, held, jobs)
    return out


def _assemble_lodo(out, data, config, seed, profile, fingerprint, held, jobs) -> None:
    folds = [train.read_npz(j["path"], train.FOLD_KEYS) for j in jobs]
    table = data.table
    order = np.concatenate([np.flatnonzero((table["dataset"] == d).to_numpy()) for d in held])
    pred = np.concatenate([f["pred"] for f in folds], axis=1)
    p = table.iloc[order][["dataset", "subject", "sample", "label"]].reset_index(drop=True)
    p["honest"] = metrics.honest_predictions(pred)
    scores = {d: {"uf1": metrics.uf1(part["label"], part["honest"]),
                  "uar": metrics.uar(part["label"], part["honest"]), "n": int(len(part))}
              for d, part in p.groupby("dataset", sort=False)}
    train.atomic_write(out / "epochs.npz", lambda f: np.savez_compressed(
        f, pred=pred, epoch=np.arange(1, pred.shape[0] + 1), datasets=np.array(held),
        **{key: np.stack([x[key] for x in folds]) for key in ("train_loss", "train_acc",
                                                                "test_acc")},
        fold_seconds=np.array([float(x["seconds"]) for x in folds])))
    train.atomic_write(out / "predictions.csv", lambda f: p.to_csv(f, index=False))
    train.write_json(out / "metrics.json", {"honest": scores})
    meta = {"lodo_id": out.name, "protocol": "leave one dataset out (final epoch)",
            "profile": profile, "seed": seed, "config": config.stored_dict(),
            "data_fingerprint": fingerprint, "data_root": Path(data.root).resolve().name,
            "git_commit": train.git_commit(), "device": train.device_name(torch.device("cpu")),
            "versions": train.versions(), "held_out": held, "n_samples": len(p),
            "epochs": int(pred.shape[0]),
            "train_seconds": round(float(sum(float(x["seconds"]) for x in folds)), 1),
            "recompute": "htnetlib.protocols.run_lodo(data, Config.from_dict(config), "
                         "seed=seed, profile=profile, retrain=True)"}
    dirty = train.git_dirty_files()
    if dirty:
        meta["git_dirty_files"] = dirty
    train.write_json(out / "config.json", meta)
    shutil.rmtree(out / "folds", ignore_errors=True)


def load_lodo(path: Path | str) -> dict:
    """A stored leave-one-dataset-out result: ``meta``, ``predictions``, ``epochs``, ``metrics``."""
    path = Path(path)
    missing = [f for f in LODO_FILES if not (path / f).is_file()]
    if missing:
        raise train.RunError(f"{path}: not a finished leave-one-dataset-out result (missing "
                             f"{', '.join(missing)})")
    return {"path": path, "meta": train.read_json(path / "config.json"),
            "predictions": pd.read_csv(path / "predictions.csv",
                                       dtype={"subject": str, "sample": str}),
            "epochs": train.read_npz(path / "epochs.npz"),
            "metrics": train.read_json(path / "metrics.json")}


def lodo_table(lodo: dict[str, list[dict]], loso: dict[str, list[train.Run]], *,
               n_boot: int = 1000) -> pd.DataFrame:
    """Per model and held-out dataset: leave-one-dataset-out UF1 and UAR (final epoch, mean over
    seeds, sd, 95 % subject-bootstrap interval) beside the same model's honest LOSO scores on
    that dataset within the composite (``loso``, the stored LOSO runs, mean over seeds), and the
    paired difference where the LOSO runs hold every sample of the dataset. The last row per
    model pools the three held-out datasets, beside the composite LOSO score."""
    from .data import DATASET_NAMES

    rows = []
    for name, results in lodo.items():
        held = results[0]["meta"]["held_out"]
        for d in held + ["pooled"]:
            def part(t, column):
                t = t if d == "pooled" else t[t["dataset"] == d]
                return t[metrics.KEY + ["label"]].assign(pred=t[column].to_numpy())
            tables = [part(r["predictions"], "honest") for r in results]
            f1 = [metrics.uf1(t["label"], t["pred"]) for t in tables]
            ci = metrics.bootstrap_ci(tables, "pred", n_boot=n_boot)
            row = {"model": name, "seeds": ",".join(str(r["meta"]["seed"]) for r in results),
                   "trained on": ("each pair" if d == "pooled" else " + ".join(
                       DATASET_NAMES[o] for o in held if o != d)),
                   "tested on": "all three (pooled)" if d == "pooled" else DATASET_NAMES[d],
                   "LODO UF1": float(np.mean(f1)),
                   "LODO UAR": float(np.mean([metrics.uar(t["label"], t["pred"])
                                              for t in tables])),
                   "LODO UF1 sd": float(np.std(f1, ddof=1)) if len(f1) > 1 else float("nan"),
                   "LODO UF1 95% CI": "%.3f-%.3f" % ci["uf1"]}
            runs = loso.get(name, [])
            within = [part(r.predictions, "honest") for r in runs]
            same = bool(within) and all(
                len(w) == len(tables[0]) and set(map(tuple, w[metrics.KEY].to_numpy()))
                == set(map(tuple, tables[0][metrics.KEY].to_numpy())) for w in within)
            row["LOSO honest UF1"] = float(np.mean([metrics.uf1(w["label"], w["pred"])
                                                    for w in within])) if same else float("nan")
            row["LOSO honest UAR"] = float(np.mean([metrics.uar(w["label"], w["pred"])
                                                    for w in within])) if same else float("nan")
            row["LOSO seeds"] = ",".join(str(r.meta["seed"]) for r in runs) if same else "-"
            if same:
                diff = metrics.paired_bootstrap(tables, "pred", within, "pred", n_boot=n_boot)
                row["LODO - LOSO UF1"] = diff["diff"]
                row["difference 95% CI"] = "%+.3f to %+.3f" % diff["ci"]
            else:
                row["LODO - LOSO UF1"], row["difference 95% CI"] = float("nan"), "-"
            rows.append(row)
    return pd.DataFrame(rows)
