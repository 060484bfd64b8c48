"""Calibration of the class probabilities: expected calibration error and temperature scaling.

A classifier is **calibrated** when its probabilities are frequencies: of the answers given
with top-class probability 0.8, eight in ten are right. A network trained with cross-entropy
to (near) zero training loss usually is not: its softmax is *overconfident* (Guo, Pleiss, Sun
and Weinberger, "On calibration of modern neural networks", ICML 2017).

**Expected calibration error** (ECE, Guo et al. 2017, eq. 3; Naeini et al. 2015): the
top-class probability (confidence) of every sample is put in one of ``bins`` equal-width bins
of [0, 1] (bin b holds confidences in (b/bins, (b+1)/bins], the first also 0); per bin the
gap between the accuracy and the mean confidence, averaged with the bins' sample counts as
weights: :func:`ece`. :func:`reliability` gives the bins as a table (the reliability diagram).

**Temperature scaling** (Guo et al. 2017, section 4.2): one scalar T > 0 divides the logits
before the softmax, ``softmax(z / T)``; T > 1 softens overconfident probabilities. It never
changes the argmax, so the predicted class, UF1 and UAR stay as they are. Stored runs keep
probabilities, not logits (float16), so ``z = log(max(p, 1e-6))``: the log of a softmax is
the logits minus a constant per row, which the softmax ignores. T is the one that minimises
the negative log-likelihood on held-out probabilities (:func:`fit_temperature`, bounded search
of log T in [log 0.05, log 20]).

**Without the held-out subject's labels.** To score calibrated probabilities of a LOSO run
honestly, each outer fold's temperature is fitted on that fold's *inner* held-out
probabilities (the nested store of :mod:`htnetlib.training.nested`: the fold's training
subjects, each predicted by a network that did not train on it); the outer held-out subject's
rows are NaN there, and :func:`fold_temperatures` reads labels of non-NaN rows only, so the
held-out subject's labels never enter its temperature. :func:`calibrated_final_epoch` then
tempers each held-out subject's final-epoch probabilities with its own fold's temperature.

**A fitted model's calibration** (``htnet calibrate``, :func:`htnetlib.predict.calibrate`): one
temperature fitted on the pooled final-epoch held-out probabilities of stored LOSO runs of the
model's configuration (:func:`pooled_held_out`), written with ECE and NLL before and after
(:func:`write_calibration`) as the model folder's calibration.json, read back by
:func:`model_calibration`; :func:`answer_probabilities` gives an answer's probabilities. The
figures after that fit are in-sample (T was fitted on the same probabilities);
:func:`out_of_sample` adds two that are not: each held-out subject tempered by a T fitted on the
other subjects, and each run by a T fitted on the other runs.

numpy and scipy only (no torch): the evaluation layer.
"""

from __future__ import annotations

import math
import time
import warnings
from pathlib import Path

import numpy as np
import pandas as pd
from scipy.optimize import minimize_scalar

from ..errors import RunError
from ..io import git_commit, read_json, write_json

CLIP = 1e-6  # probabilities come as float16: clipped before the log
LOG_T_BOUNDS = (math.log(0.05), math.log(20.0))
BINS = 10
RELIABILITY_COLUMNS = ["low", "high", "confidence", "accuracy", "samples"]
METHOD = ("temperature scaling (NLL) on the held-out final-epoch probabilities of stored LOSO "
          "runs with the model's configuration")  # calibration.json's method


def check_probabilities(prob, y=None) -> tuple[np.ndarray, np.ndarray | None]:
    """``prob`` as float64 (N, C) and ``y`` as int (N,); ValueError (one line) for another
    shape, a row holding NaN (callers drop those: an inner store marks non-test rows NaN) or
    a label out of range."""
    p = np.asarray(prob, dtype=np.float64)
    if p.ndim != 2 or p.shape[0] == 0 or p.shape[1] < 2:
        raise ValueError(f"probabilities of shape {p.shape}; expected (N, classes), N >= 1")
    bad = np.isnan(p).any(axis=1)
    if bad.any():
        raise ValueError(f"{int(bad.sum())} of {len(p)} probability row(s) hold NaN (e.g. row "
                         f"{int(np.argmax(bad))}); drop them first")
    if y is None:
        return p, None
    labels = np.asarray(y)
    if labels.shape != (len(p),):
        raise ValueError(f"{labels.shape} labels for {len(p)} probability rows")
    labels = labels.astype(np.int64)
    if ((labels < 0) | (labels >= p.shape[1])).any():
        raise ValueError(f"labels must lie in 0..{p.shape[1] - 1}")
    return p, labels


def reliability(prob, y, bins: int = BINS) -> pd.DataFrame:
    """The reliability diagram's table: per equal-width confidence bin of [0, 1], its
    ``low`` and ``high`` edges, mean ``confidence``, ``accuracy`` and ``samples``; an empty
    bin is kept (NaN confidence and accuracy, 0 samples) so that a plot is regular."""
    p, labels = check_probabilities(prob, y)
    edges = np.linspace(0.0, 1.0, bins + 1)
    conf = p.max(axis=1)
    right = (p.argmax(axis=1) == labels).astype(np.float64)
    which = np.searchsorted(edges[1:-1], conf, side="left")  # bin b: (edge b, edge b+1]
    n = np.bincount(which, minlength=bins).astype(np.float64)
    with np.errstate(invalid="ignore", divide="ignore"):
        mean_conf = np.bincount(which, conf, minlength=bins) / n
        accuracy = np.bincount(which, right, minlength=bins) / n
    return pd.DataFrame({"low": edges[:-1], "high": edges[1:], "confidence": mean_conf,
                         "accuracy": accuracy, "samples": n.astype(np.int64)},
                        columns=RELIABILITY_COLUMNS)


def ece(prob, y, bins: int = BINS) -> float:
    """Expected calibration error of the top-class probability: ``bins`` equal-width bins on
    [0, 1], |accuracy - mean confidence| per bin weighted by its share of the samples."""
    table = reliability(prob, y, bins)
    full = table[table["samples"] > 0]
    gap = (full["accuracy"] - full["confidence"]).abs()
    return float((gap * full["samples"]).sum() / full["samples"].sum())


def softmax(logits) -> np.ndarray:
    """softmax over the last axis, float64 (a model's logits to probabilities)."""
    z = np.asarray(logits, dtype=np.float64)
    e = np.exp(z - z.max(axis=-1, keepdims=True))
    return e / e.sum(axis=-1, keepdims=True)


def _log_probs(p: np.ndarray) -> np.ndarray:
    return np.log(np.clip(p, CLIP, None))


def nll(prob, y) -> float:
    """Mean negative log-likelihood of the labels (probabilities clipped at :data:`CLIP`)."""
    p, labels = check_probabilities(prob, y)
    return float(-_log_probs(p)[np.arange(len(p)), labels].mean())


def _tempered(z: np.ndarray, temperature: float) -> np.ndarray:
    """log softmax(z / T), row by row."""
    s = z / temperature
    s = s - s.max(axis=1, keepdims=True)
    return s - np.log(np.exp(s).sum(axis=1, keepdims=True))


def apply_temperature(prob, temperature: float) -> np.ndarray:
    """softmax(log(max(prob, 1e-6)) / T) as float64, rows summing to 1; the argmax of every
    row stays where it was."""
    t = float(temperature)
    if not (math.isfinite(t) and t > 0):
        raise ValueError(f"temperature {temperature!r}: must be a positive number")
    p, _ = check_probabilities(prob)
    return np.exp(_tempered(_log_probs(p), t))


def fit_temperature(prob, y) -> float:
    """The temperature T > 0 that minimises the negative log-likelihood of
    softmax(log(prob) / T) on labels ``y`` (Guo et al. 2017, section 4.2): a bounded scalar
    search of log T in [log 0.05, log 20] (:func:`scipy.optimize.minimize_scalar`)."""
    p, labels = check_probabilities(prob, y)
    z, rows = _log_probs(p), np.arange(len(p))

    def loss(log_t: float) -> float:
        return float(-_tempered(z, math.exp(log_t))[rows, labels].mean())

    best = minimize_scalar(loss, bounds=LOG_T_BOUNDS, method="bounded",
                           options={"xatol": 1e-6})
    return float(math.exp(best.x))


def fold_temperatures(inner_prob_final, labels, fold_subjects) -> dict[str, float]:
    """Per outer fold k, the temperature fitted on the rows of ``inner_prob_final[k]`` that
    are not NaN, with ``labels`` (the release's labels, rows in the release's order).

    ``inner_prob_final`` is an inner store's ``prob_final`` (folds, N, 3): each training
    subject's inner held-out probability; the outer held-out subject's rows are NaN. Only the
    labels of non-NaN rows are read, so the held-out subject's own labels never enter the
    temperature it is scored with. Returns ``{fold subject: T}`` in ``fold_subjects``' order."""
    inner = np.asarray(inner_prob_final, dtype=np.float64)
    labels = np.asarray(labels)
    subjects = [str(s) for s in fold_subjects]
    if inner.ndim != 3 or inner.shape[0] != len(subjects) or inner.shape[1] != len(labels):
        raise ValueError(f"inner probabilities of shape {inner.shape} for {len(subjects)} "
                         f"fold(s) and {len(labels)} labels; expected (folds, N, classes)")
    out = {}
    for k, subject in enumerate(subjects):
        known = ~np.isnan(inner[k]).any(axis=1)
        if not known.any():
            raise ValueError(f"fold {subject}: no inner held-out probability (every row NaN)")
        out[subject] = fit_temperature(inner[k][known], labels[known])
    return out


def calibrated_final_epoch(final_prob, subjects, temperatures: dict) -> np.ndarray:
    """(N, 3) float64: the final-epoch probabilities ``final_prob`` (rows of a predictions
    table, e.g. ``run.epochs["prob"][-1]``), each row tempered by the temperature of its
    held-out subject (``subjects``: the predictions' subject column; ``temperatures``:
    :func:`fold_temperatures`, fitted without that subject's labels)."""
    p, _ = check_probabilities(final_prob)
    subjects = np.asarray(subjects).astype(str)
    if subjects.shape != (len(p),):
        raise ValueError(f"{subjects.shape} subjects for {len(p)} probability rows")
    temps = {str(k): float(v) for k, v in temperatures.items()}
    missing = sorted(set(subjects) - set(temps))
    if missing:
        raise ValueError(f"no temperature for subject(s) {', '.join(missing[:5])}")
    out = np.empty_like(p)
    for subject in np.unique(subjects):
        rows = subjects == subject
        out[rows] = apply_temperature(p[rows], temps[subject])
    return out


def calibration_summary(prob, y) -> dict:
    """The temperature fitted on pooled held-out probabilities and what it does:
    ``temperature``, ``samples``, ``ece_before``, ``ece_after``, ``nll_before``,
    ``nll_after`` (ECE with :data:`BINS` bins; NLL with probabilities clipped at 1e-6)."""
    p, labels = check_probabilities(prob, y)
    t = fit_temperature(p, labels)
    after = apply_temperature(p, t)
    return {"temperature": round(t, 6), "samples": int(len(p)),
            "ece_before": round(ece(p, labels), 6), "ece_after": round(ece(after, labels), 6),
            "nll_before": round(nll(p, labels), 6), "nll_after": round(nll(after, labels), 6)}


# --------------------------------------------------------------------------- a model's calibration


def cross_fitted(prob, y, groups) -> tuple[np.ndarray, np.ndarray]:
    """``prob`` with each group's rows tempered by the temperature fitted on every other
    group's rows (their labels only), and the temperatures (one per group, sorted by group)."""
    p, labels = check_probabilities(prob, y)
    groups = np.asarray(groups)
    if groups.shape != (len(p),):
        raise ValueError(f"{groups.shape} groups for {len(p)} probability rows")
    out, temps = np.empty_like(p), []
    for g in np.unique(groups):
        rows = groups == g
        if rows.all():
            raise ValueError("out-of-sample calibration needs at least two groups")
        temps.append(fit_temperature(p[~rows], labels[~rows]))
        out[rows] = apply_temperature(p[rows], temps[-1])
    return out, np.array(temps)


def out_of_sample(prob, y, subjects, runs) -> dict:
    """Temperature scaling measured on probabilities it was not fitted on:
    ``by_subject`` (each held-out subject's rows, of every run, tempered by the T fitted on the
    other subjects' rows) and, with two runs or more, ``by_run`` (each run's rows tempered by the
    T fitted on the other runs'). Each: ``ece``, ``nll``, ``groups`` and the temperatures'
    median, min and max."""
    p, labels = check_probabilities(prob, y)
    out = {}
    for key, groups in (("by_subject", subjects), ("by_run", runs)):
        if len(np.unique(np.asarray(groups))) < 2:
            continue
        tempered, temps = cross_fitted(p, labels, groups)
        out[key] = {"ece": round(ece(tempered, labels), 6), "nll": round(nll(tempered, labels), 6),
                    "groups": int(len(temps)),
                    "temperature_median": round(float(np.median(temps)), 6),
                    "temperature_min": round(float(temps.min()), 6),
                    "temperature_max": round(float(temps.max()), 6)}
    return out


def pooled_held_out(runs, config: dict, fingerprint: str, *, groups: bool = False):
    """The final-epoch probabilities (``epochs["prob"][-1]``, float64) and labels of stored
    LOSO runs (:class:`htnetlib.training.store.Run`: ``path``, ``meta``, ``config``,
    ``predictions``, ``epochs``), pooled, and the runs' names; with ``groups``, also each row's
    subject and run name (for :func:`out_of_sample`). :class:`RunError` (one line,
    naming the run) for a run of another configuration (``Config.to_dict()``) or data
    fingerprint, one given twice, or one without ``prob`` (trained before it was kept)."""
    probs, labels, names, subjects, of_run = [], [], [], [], []
    for run in runs:
        where, have = Path(run.path), run.config.to_dict()
        differ = sorted(k for k in set(config) | set(have) if config.get(k) != have.get(k))
        if differ:
            raise RunError(f"{where}: its configuration differs from the model's in "
                           f"{', '.join(differ)}; calibrate with runs of the model's")
        if run.meta.get("data_fingerprint", fingerprint) != fingerprint:
            raise RunError(f"{where}: data {run.meta['data_fingerprint']}, the model's is "
                           f"{fingerprint}; calibrate with runs on the model's data")
        if where.name in names:
            raise RunError(f"{where}: given twice")
        if "prob" not in run.epochs:
            raise RunError(f"{where}: epochs.npz holds no prob (the run was trained before "
                           "probabilities were kept); train it again")
        final = np.asarray(run.epochs["prob"][-1], dtype=np.float64)
        if final.ndim != 2 or len(final) != len(run.predictions) or np.isnan(final).any():
            raise RunError(f"{where}: epochs.npz prob[-1] (shape {final.shape}) does not hold "
                           f"one row without NaN per prediction ({len(run.predictions)})")
        probs.append(final)
        labels.append(run.predictions["label"].to_numpy())
        names.append(where.name)
        subjects.append(run.predictions["subject"].astype(str).to_numpy())
        of_run.append(np.full(len(final), where.name))
    if not names:
        raise RunError("no run to calibrate with: give at least one stored LOSO run")
    pooled = np.concatenate(probs), np.concatenate(labels), names
    return pooled + (np.concatenate(subjects), np.concatenate(of_run)) if groups else pooled


def write_calibration(path: Path | str, prob, y, *, subjects=None, runs_of=None,
                      **fields) -> dict:
    """calibration.json, written atomically: :func:`calibration_summary` of ``prob`` and
    ``y``, ``method`` (:data:`METHOD`), with each row's ``subjects`` and ``runs_of`` (run
    names) the :func:`out_of_sample` figures as ``out_of_sample``, ``fields`` (runs, config,
    data_fingerprint, ...), the git commit and the time. Returns the record."""
    oos = ({} if subjects is None else
           {"out_of_sample": out_of_sample(prob, y, subjects,
                                           np.zeros(len(y)) if runs_of is None else runs_of)})
    record = {**calibration_summary(prob, y), **oos, "method": METHOD, **fields,
              "git_commit": git_commit(), "created": time.strftime("%Y-%m-%dT%H:%M:%S%z")}
    write_json(Path(path), record)
    return record


def read_calibration(path: Path | str, config: dict | None = None) -> dict:
    """A calibration.json as a dict; :class:`htnetlib.errors.RunError` naming the file if it
    is not a JSON object, its ``temperature`` is not a number in [0.05, 20], or (``config``
    given) its ``config`` is not that configuration."""
    path = Path(path)
    record = read_json(path)
    t = record.get("temperature")
    lo, hi = (math.exp(b) for b in LOG_T_BOUNDS)
    if isinstance(t, bool) or not isinstance(t, (int, float)) or not (
            lo * (1 - 1e-6) <= t <= hi * (1 + 1e-6)):
        raise RunError(f"{path}: temperature {t!r} is not a number in [{lo:g}, {hi:g}]")
    if config is not None and record.get("config") != config:
        raise RunError(f"{path}: fitted for another configuration than the model's (run "
                       "htnet calibrate again, or delete the file)")
    return record


def model_calibration(path: Path | str, config: dict, *, remove_stale: bool = False
                      ) -> dict | None:
    """A model folder's calibration.json (:func:`read_calibration`), None where there is none.
    ``remove_stale`` (a model of ``config`` has just been saved into the folder): a damaged
    file or one of another configuration is deleted, with a warning, and None returned."""
    path = Path(path)
    if not path.is_file():
        return None
    try:
        return read_calibration(path, config)
    except RunError as exc:
        if not remove_stale:
            raise
        path.unlink()
        warnings.warn(f"{exc}; removed it", stacklevel=3)
        return None


def answer_probabilities(prob, classes: list, calibration: dict | None) -> dict:
    """An answer's probabilities (:mod:`htnetlib.predict`), rounded to 6 digits by class:
    ``probabilities`` (tempered by the calibration's temperature where there is one),
    ``calibrated``, ``temperature`` (None without calibration) and
    ``probabilities_uncalibrated`` (``prob`` itself, whose argmax the temperature keeps)."""
    raw = np.asarray(prob, dtype=np.float64)
    t = None if calibration is None else float(calibration["temperature"])
    shown = raw if t is None else apply_temperature(raw[None], t)[0]
    named = lambda p: {c: round(float(v), 6) for c, v in zip(classes, p)}  # noqa: E731
    return {"probabilities": named(shown), "calibrated": t is not None, "temperature": t,
            "probabilities_uncalibrated": named(raw)}
