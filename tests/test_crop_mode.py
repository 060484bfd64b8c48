"""Notebook 05's crop-mode comparison (htnetlib.study.crop_mode) on tiny smoke runs of the
synthetic release: the table's shape, a mode compared with itself, a missing run."""

import pytest

from htnetlib.errors import RunError
from htnetlib.evaluation import metrics
from htnetlib.study import crop_mode, experiments
from htnetlib.training import loso

SEEDS = [0, 1]


@pytest.fixture(scope="module")
def runs_dir(synthetic, tmp_path_factory):
    """Smoke runs (3 folds, 3 epochs) of both crop modes with two seeds."""
    out = tmp_path_factory.mktemp("crop") / "runs"
    for mode in experiments.CROP_MODES:
        for s in SEEDS:
            loso.run_loso(synthetic, experiments.crop_config(mode, "smoke"), seed=s,
                          profile="smoke", runs_dir=out, trainer="loop", progress=False)
    return out


def test_the_table_of_both_modes(synthetic, runs_dir):
    table = crop_mode.crop_mode_table(synthetic, "smoke", SEEDS, runs_dir, n_boot=200)
    assert list(zip(table["mode"], table["protocol"])) == [
        (m, p) for m in ("official", "corrected") for p in metrics.PROTOCOLS]
    assert set(table["seeds"]) == {"0,1"} and set(table["subjects"]) == {3}
    assert table[["Full UF1", "Full UAR"]].apply(lambda c: c.between(0, 1)).all().all()
    # the baseline compared with itself: exactly 0, every resample 0
    base = table[table["mode"] == "official"]
    assert (base["UF1 - official"] == 0).all() and (base["UAR - official"] == 0).all()
    assert set(base["UF1 difference 95% CI"]) == {"+0.000 to +0.000"}
    assert (base["UF1 p(difference <= 0)"] == 1).all()
    # the corrected mode's difference is its mean minus the official mode's
    for proto in metrics.PROTOCOLS:
        rows = table[table["protocol"] == proto].set_index("mode")
        assert rows.loc["corrected", "UF1 - official"] == pytest.approx(
            rows.loc["corrected", "Full UF1"] - rows.loc["official", "Full UF1"])
    text = crop_mode.findings_crop_mode(table)
    assert "smoke profile, seeds 0,1" in text and "corrected - official" in text
    assert text.count("95 % CI") == 2 and "interval" in text


def test_a_mode_compared_with_itself_differs_by_exactly_zero(synthetic, runs_dir):
    same = {"corrected": {"regions": "corrected"}, "corrected again": {"regions": "corrected"}}
    table = crop_mode.crop_mode_table(synthetic, "smoke", SEEDS, runs_dir, modes=same,
                                      baseline="corrected", n_boot=200)
    assert len(table) == 4
    assert (table["UF1 - corrected"] == 0).all() and (table["UAR - corrected"] == 0).all()
    assert (table["UF1 p(difference <= 0)"] == 1).all()
    assert "holds 0" in crop_mode.findings_crop_mode(table)


def test_a_missing_run_is_named(synthetic, runs_dir):
    with pytest.raises(RunError, match=r"htnet-smoke-s5-\w+: no finished run of crop mode "
                                       r"'corrected'.*--seed 5 --set regions=corrected`"):
        crop_mode.crop_mode_table(synthetic, "smoke", [0, 5], runs_dir,
                                  modes={"corrected": {"regions": "corrected"}},
                                  baseline="corrected")
