"""Smoke runs leave the repository as it was: a ``profile=smoke`` execution of a notebook writes
its runs, like its figures and tables, to the git-ignored smoke folder
(``htnetlib.training.store.SMOKE_RESULTS``, ``results/notebooks/smoke/results/``), never to
``results/runs/``. The papermill test depends only on notebook 04's ``profile`` parameter, not on
its cells. About 15 s with the release's landmarks cached."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from htnetlib.io import ROOT
from htnetlib.study import figures
from htnetlib.training import store


def test_smoke_folders_move_into_the_ignored_smoke_results(tmp_path):
    results = ROOT / "results"
    assert store.smoke_folder(results / "runs", "smoke") == store.SMOKE_RESULTS / "runs"
    assert (store.smoke_folder(results / "tables" / "lodo", "smoke")
            == store.SMOKE_RESULTS / "tables" / "lodo")
    for profile in ("cpu", "paper", None):  # other profiles: where they were aimed
        assert store.smoke_folder(results / "runs", profile) == results / "runs"
    assert store.smoke_folder(tmp_path / "runs", "smoke") == tmp_path / "runs"  # a test's folder
    inside = store.SMOKE_RESULTS / "runs"
    assert store.smoke_folder(inside, "smoke") == inside  # not moved twice
    assert figures.SMOKE_OUTPUTS == store.SMOKE_RESULTS  # runs beside the smoke figures
    ignored = subprocess.run(["git", "check-ignore", "-q", str(inside / "htnet-smoke-s0-x")],
                             cwd=ROOT)
    assert ignored.returncode == 0, "the smoke folder must be git-ignored"


def git_status() -> str:
    return subprocess.run(["git", "status", "--porcelain", "--untracked-files=all"], cwd=ROOT,
                          capture_output=True, text=True, check=True).stdout


@pytest.mark.notebooks
@pytest.mark.release
def test_a_papermill_smoke_run_of_notebook_04_leaves_git_status_unchanged(tmp_path):
    data = os.environ.get("HTNET_DATA")
    if not data or not Path(data).is_dir():
        pytest.skip("HTNET_DATA names no release folder (notebook 04 reads the release)")
    if subprocess.run(["git", "status"], cwd=ROOT, capture_output=True).returncode:
        pytest.skip("not a git checkout")
    before = git_status()
    out = subprocess.run([sys.executable, "-m", "papermill", "notebooks/04_training_loso.ipynb",
                          str(tmp_path / "04.ipynb"), "-p", "profile", "smoke", "--cwd",
                          "notebooks", "-k", "python3"], cwd=ROOT, capture_output=True,
                         text=True, timeout=600)
    assert out.returncode == 0, out.stderr[-3000:]
    assert git_status() == before
    assert list((store.SMOKE_RESULTS / "runs").glob("htnet-smoke-*"))
