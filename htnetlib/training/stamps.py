"""Fold stamps: when, at which commit and from which source each job of a stored result was
trained, and the check a reviewer calls on them.

:func:`~htnetlib.training.store.save_fold` stores a job's stamp (:func:`training_stamp` and the
time) inside its job file; :func:`~htnetlib.training.jobs.produce` gathers the stamps of a
run's stored folds into its committed ``folds.json`` (:func:`write_stamps`) whenever its folds
change, and says when a run resumes across commits (:func:`mixed_stamps`).
:func:`folds_trained_after` answers per fold whether it postdates a commit or a time.
"""

from __future__ import annotations

import datetime
import json
from pathlib import Path

import numpy as np

from ..errors import RunError
from ..io import (commit_time, device_name, git_commit, is_ancestor, read_json, read_npz,
                  resolve_commit, source_hash, write_json)


# A run's committed file of fold stamps; not one of the run's required files, so runs stored
# before it stay complete without it.
STAMPS_NAME = "folds.json"


def training_stamp(device=None, trainer: str | None = None) -> dict:
    """What a job trained now records about how (:func:`~htnetlib.training.store.save_fold`
    adds the time): the commit (``+dirty`` where the tree differs, untracked files under
    ``htnetlib/`` included), the hash of the package's source
    (:func:`htnetlib.io.source_hash`), device and trainer."""
    out = {"commit": git_commit(), "source_hash": source_hash()}
    if device is not None:
        out["device"] = device_name(device)
    if trainer is not None:
        out["trainer"] = trainer
    return out


# The stamp of a job stored before jobs were stamped: nothing is known of it.
NO_STAMP = {"commit": None, "source_hash": None, "trained_at": None}


def read_stamp(path: Path) -> dict:
    """The stamp a stored job file holds, or :data:`NO_STAMP` (a job stored before stamps, or
    a file that cannot be read)."""
    try:
        with np.load(path) as npz:
            if "stamp" in npz.files:
                return json.loads(str(npz["stamp"]))
    except (OSError, EOFError, ValueError, KeyError):
        pass
    return dict(NO_STAMP)


def write_stamps(path: Path, jobs: list[dict], stamps: dict[int, dict]) -> dict:
    """Write the stamps file ``path`` atomically: one entry per stored job ``k`` of
    ``stamps`` (its index, held-out ``subject``, then its stamp), and the distinct commits and
    source hashes among them in fold order (``commits``, ``source_hashes``; ``unknown`` for a
    job without a stamp). Returns what it wrote."""
    folds = [{"fold": k, "subject": str(jobs[k]["subject"]), **stamps[k]} for k in sorted(stamps)]
    out = {"folds": folds,
           "commits": list(dict.fromkeys(f.get("commit") or "unknown" for f in folds)),
           "source_hashes": list(dict.fromkeys(f.get("source_hash") or "unknown"
                                               for f in folds))}
    write_json(path, out)
    return out


def mixed_stamps(name: str, stamps: list[dict]) -> str | None:
    """One line saying that the jobs of ``name`` come from more than one commit (or, at one
    commit, from more than one source tree), naming them; None where they do not."""
    commits = list(dict.fromkeys(s.get("commit") or "unknown" for s in stamps))
    if len(commits) > 1:
        return (f"{name}: resumed across commits: its folds were trained at {len(commits)} "
                f"commits ({', '.join(commits)})")
    trees = list(dict.fromkeys(s.get("source_hash") or "unknown" for s in stamps))
    if len(trees) > 1:
        return (f"{name}: resumed on a changed source tree: its folds were trained at commit "
                f"{commits[0]} from {len(trees)} source trees ({', '.join(trees)})")
    return None


def fold_stamps(run_dir: Path | str) -> list[dict] | None:
    """The fold stamps of a run's ``folds.json`` (one dict a fold), or None for a run stored
    before folds were stamped; :class:`RunError` names a damaged file."""
    path = Path(run_dir) / STAMPS_NAME
    if not path.is_file():
        return None
    folds = read_json(path).get("folds")
    if not isinstance(folds, list) or not all(isinstance(f, dict) for f in folds):
        raise RunError(f"{path}: holds no list of folds")
    return folds


def as_time(value) -> datetime.datetime | None:
    """``value`` (a datetime or an ISO 8601 string) as a timezone-aware time, UTC where it
    names no zone; None where it is neither."""
    if isinstance(value, str):
        try:
            value = datetime.datetime.fromisoformat(value)
        except ValueError:
            return None
    if not isinstance(value, datetime.datetime):
        return None
    return value if value.tzinfo else value.replace(tzinfo=datetime.timezone.utc)


def folds_trained_after(run_dir: Path | str, ref, *, repo: Path | str | None = None
                        ) -> list[dict]:
    """Per fold of a stored run, whether it was trained after ``ref``, read from the fold
    stamps (``folds.json``), not from the run's last start (config.json's ``git_commit``).

    ``ref`` is a commit (a hash or a name git resolves in ``repo``, the package's checkout if
    None) or a time (a datetime or an ISO 8601 string). One dict a fold: ``fold``, ``subject``,
    ``commit``, ``trained_at``, ``after`` (True, False, or None for unknown) and ``how``, the
    reason in words. For a commit, git's ancestry answers where it can (the fold's commit
    descends from ``ref``, or is it: True; otherwise False; ``git merge-base --is-ancestor``);
    where it cannot (the fold's commit is not in this clone, or a shallow clone answers no),
    the fold's ``trained_at`` against ``ref``'s commit time; where neither is known, None. A
    run stored before folds were stamped answers None for every fold."""
    run_dir = Path(run_dir)
    stamps = fold_stamps(run_dir)
    if stamps is None:
        try:
            subjects = [str(s) for s in read_npz(run_dir / "epochs.npz", ("subjects",))["subjects"]]
        except RunError:
            subjects = [None] * int(read_json(run_dir / "config.json").get("n_folds", 0))
        return [{"fold": k, "subject": s, "commit": None, "trained_at": None, "after": None,
                 "how": f"no fold stamps: the run was stored before {STAMPS_NAME} was written"}
                for k, s in enumerate(subjects)]
    target = None if isinstance(ref, datetime.datetime) else resolve_commit(str(ref), repo)
    when = as_time(ref) if target is None else commit_time(target, repo)
    label = str(ref) if target is None else target[:12]
    out = []
    for stamp in stamps:
        commit, trained = stamp.get("commit"), as_time(stamp.get("trained_at"))
        after, how = None, None
        if target is not None and commit:
            after = is_ancestor(target, commit, repo)
            if after is not None:
                how = (f"git: {label} is {'' if after else 'neither '}the fold's commit "
                       f"{commit} {'or in' if after else 'nor in'} its history")
        if after is None and when is not None and trained is not None:
            after = trained >= when
            how = (f"trained at {trained.isoformat()}, {'after' if after else 'before'} "
                   + (f"the commit time of {label} ({when.isoformat()}); git could not "
                      "relate the two commits" if target is not None else when.isoformat()))
        if after is None:
            why = ("the fold holds no stamp" if not commit and trained is None else
                   f"{label} is not a commit this checkout holds, nor a time"
                   if target is None and when is None else
                   "git could not relate the commits and the fold records no training time")
            how = f"unknown: {why}"
        out.append({"fold": stamp.get("fold"), "subject": stamp.get("subject"),
                    "commit": commit, "trained_at": stamp.get("trained_at"), "after": after,
                    "how": how})
    return out
