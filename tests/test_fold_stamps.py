"""Fold provenance: each fold's commit, source hash and time, gathered in a run's folds.json, a
resume across commits named, and the check a reviewer calls (store.folds_trained_after)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest

from htnetlib import io
from htnetlib.config import Config
from htnetlib.errors import StoreWarning
from htnetlib.training import jobs, loso
from htnetlib.training import stamps as stamps_mod
from htnetlib.training import store
from htnetlib.training.loso import run_loso

TINY = Config(dim=8, heads=1, block_repeats=(1, 1, 1), epochs=4, lr=1e-3, max_folds=3)
RESULTS = Path(__file__).resolve().parents[1] / "results"
COMMITTED = sorted((RESULTS / "runs").glob("*/config.json"))
NEW_RUN_FILES = sorted(store.RUN_FILES + (store.STAMPS_NAME,))
needs_git = pytest.mark.skipif(shutil.which("git") is None, reason="git is not installed")


@pytest.fixture(autouse=True)
def own_cache(tmp_path_factory, monkeypatch):
    """The trainer choice's cache in a folder of this module, not the user's."""
    monkeypatch.setenv("HTNET_CACHE", str(tmp_path_factory.getbasetemp() / "cache"))


class Killed(Exception):
    """Stands for the process being killed at that point."""


# --------------------------------------------------------------------------- a tiny repository


def git(repo: Path, *args: str, date: str | None = None) -> str:
    env = {**os.environ, "GIT_AUTHOR_NAME": "t", "GIT_AUTHOR_EMAIL": "t@t",
           "GIT_COMMITTER_NAME": "t", "GIT_COMMITTER_EMAIL": "t@t"}
    if date:
        env.update(GIT_AUTHOR_DATE=date, GIT_COMMITTER_DATE=date)
    return subprocess.run(["git", *args], cwd=repo, env=env, check=True, capture_output=True,
                          text=True).stdout.strip()


@pytest.fixture(scope="module")
def history(tmp_path_factory) -> dict:
    """A repository of three commits A, B, C made on 1 January, February and March 2026, and
    a shallow clone of its last two (B, C)."""
    repo = tmp_path_factory.mktemp("history") / "repo"
    repo.mkdir()
    git(repo, "init", "-q")
    out = {"repo": repo}
    for name, month in (("A", 1), ("B", 2), ("C", 3)):
        (repo / "f.txt").write_text(name)
        git(repo, "add", "f.txt")
        git(repo, "commit", "-q", "-m", name, date=f"2026-{month:02d}-01T00:00:00+00:00")
        out[name] = git(repo, "rev-parse", "HEAD")
    out["shallow"] = repo.parent / "shallow"
    git(repo.parent, "clone", "-q", "--depth", "2", f"file://{repo}", str(out["shallow"]))
    return out


def fake_run(folder: Path, folds: list[dict]) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    io.write_json(folder / store.STAMPS_NAME, {"folds": folds})
    return folder


def stamp(k: int, commit: str | None, trained_at: str | None) -> dict:
    return {"fold": k, "subject": f"s{k}", "commit": commit, "source_hash": None,
            "trained_at": trained_at}


def answers(rows: list[dict]) -> list:
    return [r["after"] for r in rows]


@needs_git
def test_git_helpers_answer_in_a_full_and_a_shallow_clone(history):
    repo, shallow, a, b, c = (history[k] for k in ("repo", "shallow", "A", "B", "C"))
    assert io.resolve_commit(b[:8], repo) == b and io.resolve_commit("e" * 40, repo) is None
    assert io.commit_time(b, repo).isoformat() == "2026-02-01T00:00:00+00:00"
    assert io.is_ancestor(a, c + "+dirty", repo) is True and io.is_ancestor(c, a, repo) is False
    assert io.is_ancestor(a, c, "/") is None  # no repository: git cannot say
    assert not io.is_shallow(repo) and io.is_shallow(shallow)
    assert io.resolve_commit(a, shallow) is None  # cut off by --depth 2
    assert io.is_ancestor(b, c, shallow) is True
    assert io.is_ancestor(c, b, shallow) is None  # a shallow clone cannot deny it


@needs_git
def test_check_answers_by_ancestry_then_commit_time_then_unknown(history, tmp_path):
    repo, a, b, c = (history[k] for k in ("repo", "A", "B", "C"))
    run = fake_run(tmp_path / "run", [
        stamp(0, a, "2026-01-02T00:00:00+00:00"),         # trained at A: before B
        stamp(1, c + "+dirty", "2026-03-02T00:00:00+00:00"),  # at C with changes: after B
        stamp(2, "f" * 40, "2026-02-15T00:00:00+00:00"),  # a commit this clone lacks
        stamp(3, None, None)])                             # no stamp
    rows = store.folds_trained_after(run, b, repo=repo)
    assert answers(rows) == [False, True, True, None]
    assert [r["how"].split(":")[0] for r in rows[:2]] == ["git", "git"]
    assert "commit time" in rows[2]["how"] and rows[3]["how"].startswith("unknown")
    assert [r["subject"] for r in rows] == ["s0", "s1", "s2", "s3"]
    # a branch name, and a time instead of a commit
    assert answers(store.folds_trained_after(run, "HEAD", repo=repo)) == [False, True, False,
                                                                          None]
    assert answers(store.folds_trained_after(run, "2026-02-10T00:00:00Z", repo=repo)) == \
        [False, True, True, None]
    # a commit nobody holds, and no time: unknown, honestly
    rows = store.folds_trained_after(run, "e" * 40, repo=repo)
    assert answers(rows) == [None] * 4 and "not a commit this checkout holds" in rows[0]["how"]


@needs_git
def test_check_in_a_shallow_clone_falls_back_to_the_commit_time(history, tmp_path):
    shallow, a, b, c = (history[k] for k in ("shallow", "A", "B", "C"))
    run = fake_run(tmp_path / "run", [
        stamp(0, b, "2026-02-02T00:00:00+00:00"),  # git cannot deny C is in B's history here
        stamp(1, a, "2026-01-02T00:00:00+00:00"),  # A is cut off
        stamp(2, c, "2026-03-02T00:00:00+00:00"),
        stamp(3, a, None)])                        # cut off, and no time: unknown
    rows = store.folds_trained_after(run, c, repo=shallow)
    assert answers(rows) == [False, False, True, None]
    assert "git could not relate" in rows[0]["how"] and rows[2]["how"].startswith("git")
    # the reference itself cut off: nothing gives its time
    assert answers(store.folds_trained_after(run, a, repo=shallow)) == [None] * 4


# --------------------------------------------------------------------------- the source tree


def test_source_hash_covers_every_source_file_but_caches(tmp_path):
    pkg = tmp_path / "pkg"
    (pkg / "data").mkdir(parents=True)
    (pkg / "a.py").write_text("x = 1\n")
    (pkg / "data" / "manifest.sha256").write_text("abc\n")
    first = io.source_hash(pkg)
    (pkg / "__pycache__").mkdir()
    (pkg / "__pycache__" / "a.cpython-311.pyc").write_bytes(b"\0")
    assert io.source_hash(pkg) == first  # byte-code is no source
    (pkg / "readouts.py").write_text("")  # a new, untracked module
    second = io.source_hash(pkg)
    assert second != first
    (pkg / "data" / "manifest.sha256").write_text("abd\n")  # package data
    assert io.source_hash(pkg) not in (first, second)
    assert io.source_hash() == io.source_hash(Path(io.__file__).parent)


@needs_git
def test_untracked_files_under_the_package_make_the_tree_dirty(tmp_path, monkeypatch):
    repo = tmp_path / "repo"
    (repo / "htnetlib" / "study").mkdir(parents=True)
    (repo / "htnetlib" / "study" / "x.py").write_text("")
    (repo / ".gitignore").write_text("__pycache__/\n")
    git(repo, "init", "-q")
    git(repo, "add", ".")
    git(repo, "commit", "-q", "-m", "x")
    real = io.git
    monkeypatch.setattr(io, "git", lambda *a, repo=None: real(*a, repo=repo or
                                                          tmp_path / "repo" / "htnetlib"))
    (repo / "notes.txt").write_text("")  # untracked, but not under the package
    (repo / "htnetlib" / "__pycache__").mkdir()
    (repo / "htnetlib" / "__pycache__" / "x.pyc").write_bytes(b"")  # ignored
    assert io.git_dirty_files() == [] and not io.git_commit().endswith("+dirty")
    (repo / "htnetlib" / "study" / "readouts.py").write_text("")
    assert io.git_dirty_files() == ["htnetlib/study/readouts.py"]
    assert io.git_commit().endswith("+dirty")


# --------------------------------------------------------------------------- runs on the store


def test_a_smoke_run_stamps_every_fold_and_a_resume_across_commits_says_so(
        synthetic, tmp_path, monkeypatch):
    real, calls = jobs.train_fold, []

    def killed_at_second_fold(*args, **kwargs):
        calls.append(1)
        if len(calls) == 2:
            raise Killed
        return real(*args, **kwargs)

    with monkeypatch.context() as m:
        m.setattr(jobs, "train_fold", killed_at_second_fold)
        with pytest.raises(Killed):
            run_loso(synthetic, TINY, runs_dir=tmp_path, profile="smoke", trainer="loop",
                     progress=False)
    (run_dir,) = tmp_path.iterdir()
    first = stamps_mod.fold_stamps(run_dir)  # written as soon as the fold was stored
    assert [(s["fold"], s["subject"]) for s in first] == [(0, loso.fold_subjects(
        synthetic, TINY)[0])]
    assert first[0]["commit"] == io.git_commit()
    assert first[0]["source_hash"] == io.source_hash()
    assert first[0]["trainer"] == "loop" and first[0]["device"].startswith("cpu")
    assert stamps_mod.as_time(first[0]["trained_at"]).tzinfo is not None  # ISO, with its zone
    # the next start is at another commit: it says so, and fold 0 keeps its own stamp
    other = "f" * 40
    monkeypatch.setattr(stamps_mod, "git_commit", lambda: other)
    with pytest.warns(StoreWarning, match="resumed across commits") as caught:
        run_loso(synthetic, TINY, runs_dir=tmp_path, profile="smoke", trainer="loop",
                 progress=False)
    (line,) = [str(w.message) for w in caught if "resumed" in str(w.message)]
    assert f"2 commits ({first[0]['commit']}, {other})" in line and "\n" not in line
    assert sorted(p.name for p in run_dir.iterdir()) == NEW_RUN_FILES  # folds/ is gone
    written = json.loads((run_dir / store.STAMPS_NAME).read_text())
    assert written["folds"][0] == first[0]
    assert [s["commit"] for s in written["folds"]] == [first[0]["commit"], other, other]
    assert written["commits"] == [first[0]["commit"], other]
    assert store.is_complete(run_dir) and store.damage(run_dir) is None
    # the check reads the stamps, not config.json's last start
    rows = store.folds_trained_after(run_dir, "HEAD")
    if io.resolve_commit("HEAD") is None:
        pytest.skip("not a git checkout: the rest needs the project's history")
    assert answers(rows) == [True, True, True]
    assert rows[0]["how"].startswith("git") and "commit time" in rows[1]["how"]
    assert answers(store.folds_trained_after(run_dir, "2099-01-01")) == [False] * 3
    # reading and reusing the finished run writes nothing
    before = {p.name: p.stat().st_mtime_ns for p in run_dir.iterdir()}
    store.load_run(run_dir)
    run_loso(synthetic, TINY, runs_dir=tmp_path, profile="smoke", progress=False)
    assert {p.name: p.stat().st_mtime_ns for p in run_dir.iterdir()} == before


def test_a_fold_stored_before_stamps_is_recorded_as_unknown(synthetic, tmp_path, monkeypatch):
    with monkeypatch.context() as m:
        m.setattr(loso, "assemble", lambda *a, **k: (_ for _ in ()).throw(Killed()))
        with pytest.raises(Killed):
            run_loso(synthetic, TINY, runs_dir=tmp_path, profile="smoke", trainer="loop",
                     progress=False)
    (run_dir,) = tmp_path.iterdir()
    fold = run_dir / "folds" / "01.npz"
    with np.load(fold) as npz:
        arrays = {k: npz[k] for k in npz.files if k != "stamp"}
    np.savez(fold, **arrays)  # as a fold stored before stamps
    (run_dir / store.STAMPS_NAME).unlink()
    with pytest.warns(StoreWarning, match=r"resumed across commits: its folds were trained at "
                                          r"2 commits \(.*, unknown\)"):
        run_loso(synthetic, TINY, runs_dir=tmp_path, profile="smoke", progress=False)
    folds = stamps_mod.fold_stamps(run_dir)
    assert [f["commit"] is None for f in folds] == [False, True, False]
    rows = store.folds_trained_after(run_dir, "HEAD")
    assert rows[1]["after"] is None and rows[1]["how"] == "unknown: the fold holds no stamp"


@pytest.fixture(scope="module")
def old_run(synthetic, tmp_path_factory) -> Path:
    """A finished run as one stored before fold stamps: without folds.json."""
    run = run_loso(synthetic, TINY, runs_dir=tmp_path_factory.mktemp("old"), profile="smoke",
                   progress=False)
    (run / store.STAMPS_NAME).unlink()
    return run


def test_a_run_stored_before_stamps_stays_complete_and_answers_unknown(synthetic, old_run):
    before = {p.name: p.stat().st_mtime_ns for p in old_run.iterdir()}
    assert store.is_complete(old_run) and store.reusable(old_run)
    assert store.load_run(old_run).meta["n_folds"] == 3
    assert run_loso(synthetic, TINY, runs_dir=old_run.parent, profile="smoke",
                    progress=False) == old_run
    rows = store.folds_trained_after(old_run, "HEAD")
    assert answers(rows) == [None] * 3 and "no fold stamps" in rows[0]["how"]
    assert [r["subject"] for r in rows] == loso.fold_subjects(synthetic, TINY)
    assert {p.name: p.stat().st_mtime_ns for p in old_run.iterdir()} == before  # nothing written


@pytest.mark.parametrize("path", COMMITTED[:3], ids=lambda p: p.parent.name)
def test_a_committed_run_answers_the_check_without_writing(path):
    folder = path.parent
    before = sorted(p.name for p in folder.iterdir())
    rows = store.folds_trained_after(folder, "HEAD")
    assert len(rows) == json.loads(path.read_text())["n_folds"]
    if store.STAMPS_NAME not in before:
        assert answers(rows) == [None] * len(rows)
    assert sorted(p.name for p in folder.iterdir()) == before


@needs_git
def test_folds_json_is_committed_and_folds_are_not():
    root = Path(__file__).resolve().parents[1]
    if not (root / ".git").exists():
        pytest.skip("not a git checkout")
    ignored = subprocess.run(["git", "check-ignore", "results/runs/x/folds.json",
                              "results/runs/x/folds/00.npz"], cwd=root, capture_output=True,
                             text=True).stdout.split()
    assert ignored == ["results/runs/x/folds/00.npz"]
