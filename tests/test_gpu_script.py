"""bench/gpu.sh on the CPU: its bench and run modes against the synthetic release, in seconds.

The GPU machine gets the same script; here ``GPU_DIR`` points at a folder laid out as
``gpu.sh prepare`` makes it (the release and its landmark cache) and ``PYTHON`` at this venv.
"""

import json
import os
import subprocess
import sys
import tarfile
from pathlib import Path

import pytest
import torch
from htnetlib import config as config_mod
from htnetlib.training import jobs as jobs_mod
from htnetlib.training import loso


ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "bench" / "gpu.sh"


def make_gpu_dir(path: Path, synthetic_root: Path, synthetic) -> Path:
    """A GPU_DIR as `gpu.sh prepare` leaves it: data/ (the release) and cache/ (landmarks)."""
    from htnetlib.data.regions import cache_dir, find_landmarks

    find_landmarks(synthetic, "official")  # into this session's HTNET_CACHE, once
    path.mkdir()
    (path / "data").symlink_to(synthetic_root)
    (path / "cache").symlink_to(cache_dir().resolve())
    return path


def gpu_sh(gpu_dir: Path, out: Path, *args: str, python: str = sys.executable, **env):
    environ = dict(os.environ, GPU_DIR=str(gpu_dir), OUT=str(out), PYTHON=python, **env)
    return subprocess.run(["bash", str(SCRIPT), *args], cwd=ROOT, env=environ,
                          capture_output=True, text=True, timeout=600)


def members(archive: Path) -> set[str]:
    with tarfile.open(archive) as tar:
        return {m.name.split("/", 1)[1] for m in tar.getmembers() if "/" in m.name}


def test_usage_names_every_mode():
    res = subprocess.run(["bash", str(SCRIPT)], capture_output=True, text=True)
    assert res.returncode == 2
    for mode in ("prepare", "bench [ARGS]", "run [ARGS]", "resume FILE"):
        assert f"bash bench/gpu.sh {mode}" in res.stdout
    assert "set -e" not in res.stdout  # the header comment only


@pytest.mark.slow
def test_bench_writes_a_summary(tmp_path, synthetic_root, synthetic):
    gpu_dir = make_gpu_dir(tmp_path / "gpu", synthetic_root, synthetic)
    out = tmp_path / "out"
    res = gpu_sh(gpu_dir, out, "bench", "--profile", "smoke", "--epochs", "2",
                 "--straight-epochs", "1")
    assert res.returncode == 0, res.stdout + res.stderr
    assert sorted(p.name for p in out.iterdir()) == ["bench.json", "bench.log"]
    summary = json.loads((out / "bench.json").read_text())
    assert summary["torch"] == torch.__version__
    assert summary["device"].startswith("cpu") and summary["gpu"] is None
    assert summary["n_folds"] == 3 and summary["group_size"] == 3  # all folds on a CPU
    assert summary["dry_run"]["group_size"] == 3 and summary["dry_run"]["seconds_per_step"] > 0
    for trainer in ("straightforward", "grouped"):
        assert summary[trainer]["samples_per_s"] > 0
    assert summary["projected_loso_seconds"] > 0
    assert summary["projected_straightforward_seconds"] > 0
    assert summary["speedup"] == pytest.approx(
        summary["grouped"]["samples_per_s"] / summary["straightforward"]["samples_per_s"])
    assert "projected LOSO" in (out / "bench.log").read_text()


class Killed(Exception):
    pass


@pytest.mark.slow
def test_run_cut_off_is_packed_and_continues(tmp_path, synthetic_root, synthetic, monkeypatch):
    """A run stopped by the time limit is packed with its finished folds; unpacked into a fresh
    GPU_DIR (as on the next machine), `run` trains only the missing folds and packs the run."""
    first = make_gpu_dir(tmp_path / "first", synthetic_root, synthetic)
    # one fold of the smoke run finished, then the process was killed
    real = jobs_mod.train_jobs

    def one_fold_then_killed(jobs, *args):
        yield from real(jobs[:1], *args)
        raise Killed

    monkeypatch.setattr(jobs_mod, "train_jobs", one_fold_then_killed)
    with pytest.raises(Killed):
        loso.run_loso(synthetic, config_mod.PROFILES["smoke"], runs_dir=first / "runs",
                       profile="smoke", trainer="loop", progress=False)
    monkeypatch.undo()
    (run_dir,) = [p for p in (first / "runs").iterdir() if p.is_dir()]
    # the trainer under gpu.sh: touches the run (as training does) and then outlives the limit
    slow = tmp_path / "slow-python"
    slow.write_text(f"""#!/usr/bin/env bash
if [ "$1" = -m ] && [ "$2" = htnetlib.cli ]; then touch "{run_dir}"; exec sleep 60; fi
exec "{sys.executable}" "$@"
""")
    slow.chmod(0o755)
    out = tmp_path / "out1"
    res = gpu_sh(first, out, "run", "--profile", "smoke", python=str(slow), GPU_TIME_LIMIT="2")
    assert res.returncode == 3, res.stdout + res.stderr
    archive = out / f"run-{run_dir.name}.tar.gz"
    assert sorted(p.name for p in out.iterdir()) == [archive.name, "run.log"]
    assert "cut off after 2 s" in (out / "run.log").read_text()
    assert members(archive) >= {"config.json", "folds/00.npz"}
    assert not any(name.startswith(("folds/01", "folds/02")) for name in members(archive))

    second = make_gpu_dir(tmp_path / "second", synthetic_root, synthetic)
    res = gpu_sh(second, tmp_path / "unused", "resume", str(archive))
    assert res.returncode == 0, res.stdout + res.stderr
    out = tmp_path / "out2"
    res = gpu_sh(second, out, "run", "--profile", "smoke", HTNET_DRY_RUN="1")
    assert res.returncode == 0, res.stdout + res.stderr
    log = (out / "run.log").read_text()
    assert "dry run: 2 folds at once" in log  # only the two missing folds were trained
    assert members(out / archive.name) >= {"config.json", "predictions.csv", "epochs.npz",
                                           "metrics.json"}
    with tarfile.open(out / archive.name) as tar:
        meta = json.load(tar.extractfile(f"{run_dir.name}/config.json"))
    assert meta["n_folds"] == 3 and meta["trainer"] == "grouped"
    assert meta["device"].startswith("cpu") and meta["versions"]["torch"] == torch.__version__
