"""The tests write nothing tracked, and the committed model renders the same on every machine.

``.ci/run`` fails when ``make test`` leaves ``git status`` dirty; this test shows the same on a
clean clone, so a developer sees it before CI does: nbval over notebooks that write figures,
tables and findings (04, 13) and the one that reads the committed fitted model (14), executed in
a fresh clone of the committed tree, leave that clone's ``git status`` empty.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from htnetlib import predict

ROOT = Path(__file__).resolve().parents[1]
RELEASE = os.environ.get("HTNET_DATA")
NOTEBOOKS = ("04_training_loso.ipynb", "13_cross_dataset.ipynb",
             "14_from_frames_to_prediction.ipynb")


@pytest.mark.slow
@pytest.mark.notebooks
@pytest.mark.release
@pytest.mark.skipif(not (RELEASE and Path(RELEASE, "combined_3_class2_for_optical_flow.csv")
                         .is_file()), reason="the notebooks read the official release "
                                             "(HTNET_DATA)")
@pytest.mark.skipif(not (ROOT / ".git").exists(), reason="needs the git checkout to clone")
def test_nbval_in_a_clean_clone_leaves_git_status_empty(tmp_path):
    clone = tmp_path / "clone"
    subprocess.run(["git", "clone", "-q", "--no-hardlinks", str(ROOT), str(clone)], check=True)
    env = {k: v for k, v in os.environ.items() if k != "HTNET_RESULTS_DIR"}
    env["PYTHONPATH"] = str(clone)  # the clone's package, in pytest and in every kernel
    done = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "--nbval-lax",
         "--nbval-current-env", "--nbval-sanitize-with", "tests/nbval_sanitize.cfg",
         *[f"notebooks/{nb}" for nb in NOTEBOOKS]],
        cwd=clone, env=env, capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-2000:]
    status = subprocess.run(["git", "status", "--porcelain"], cwd=clone, capture_output=True,
                            text=True, check=True).stdout
    assert status == "", f"nbval changed the clone:\n{status}"


@pytest.mark.parametrize("folder", sorted(predict.STORED_MODELS.glob("*/")) or [None],
                         ids=lambda p: p.name if p else "none")
def test_committed_models_load_and_match_their_recorded_sha256(folder):
    """Every committed model folder loads (which checks the weights against model.json's
    SHA-256, strictly against the configuration), names the data it was fitted on and holds
    its current model card (MODEL_CARD.md)."""
    if folder is None:
        pytest.skip("no model is committed under results/models")
    model = predict.Model.load(folder)
    meta = json.loads((folder / predict.META).read_text())
    assert meta["weights"]["sha256"] == predict.sha256(folder / predict.WEIGHTS)
    assert folder.name == predict.model_name(meta["profile"], meta["seed"],
                                             meta["data_fingerprint"], model.config)
    files = sorted(p.name for p in folder.iterdir())
    assert files == sorted([predict.META, predict.WEIGHTS, predict.CARD]
                           + (["calibration.json"] if "calibration.json" in files else []))
    if "calibration.json" in files:  # fitted on stored runs of the model's configuration
        assert model.calibration["runs"] and model.calibration["temperature"] > 0
        for run_id in model.calibration["runs"]:
            run = predict.ROOT / "results" / "runs" / run_id
            assert json.loads((run / "config.json").read_text())["config"] == meta["config"]
    # the card is the one htnet fit writes, with the stored run's score as it is now
    from htnetlib.study.card import card_text

    assert (folder / predict.CARD).read_text() == card_text(model)


def test_only_the_stored_models_folder_may_hold_a_model_inside_the_repository(tmp_path):
    from htnetlib.errors import ConfigError

    predict.check_out_dir(predict.STORED_MODELS / "cpu-s0-0123456789ab")  # allowed
    predict.check_out_dir(tmp_path / "elsewhere")  # outside the repository: allowed
    if (ROOT / ".git").exists():
        with pytest.raises(ConfigError, match="inside the repository"):
            predict.check_out_dir(ROOT / "notebooks" / "a-model")
