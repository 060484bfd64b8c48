import pandas as pd
import pytest

from htnetlib import paper
from htnetlib.study import figures
from htnetlib.study import tables as report
from htnetlib.study.readme import END, START, update_readme


@pytest.fixture(scope="module")
def runs(synthetic, tmp_path_factory):
    return report.variant_runs(synthetic, "smoke", [0, 1],
                               runs_dir=tmp_path_factory.mktemp("runs"))


def test_table2_full_rows(runs):
    t = report.table2_full(runs, n_boot=50)
    cited = t[t.source != "measured"]
    assert list(cited.approach) == list(paper.TABLE2)
    assert cited.loc[cited.approach == "HTNet", "Full UF1"].item() == 0.8603
    measured = t[t.source == "measured"]
    assert list(zip(measured.approach, measured.protocol)) == [
        ("HTNet", "honest"), ("HTNet", "oracle"),
        ("HTNet without regions (whole map)", "honest"),
        ("HTNet without regions (whole map)", "oracle"),
        ("STSTNet", "honest"), ("STSTNet", "oracle"), ("Logistic regression", "honest")]
    assert list(measured.seeds) == [2, 2, 2, 2, 2, 2, 1]
    row = measured.iloc[0]
    seed_mean = sum(r.metrics["honest"]["full"]["uf1"] for r in runs["HTNet"]) / 2
    assert row["Full UF1"] == pytest.approx(seed_mean)
    lo, hi = map(float, row["Full UF1 95% CI"].split("-"))
    assert lo <= hi


def test_readme_block_is_generated(runs, tmp_path):
    t = report.table2_full(runs, n_boot=20)
    (tmp_path / "tables").mkdir()
    t.to_csv(tmp_path / "tables" / "table2_smoke.csv", index=False)
    readme = tmp_path / "README.md"
    readme.write_text(f"intro\n{START}\nold\n{END}\noutro\n")
    assert update_readme(readme, tmp_path, "smoke")
    text = readme.read_text()
    assert "old" not in text and text.startswith("intro") and text.endswith("outro\n")
    assert "| HTNet (paper) | cited (paper, Table 2) | oracle |" in text
    assert "| Logistic regression | measured | honest | smoke | 1 |" in text


def test_save_table_and_figure_carry_provenance(tmp_path):
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    md = figures.save_table(pd.DataFrame({"a": [1.23456]}), "t", tmp_path, item="Table 9",
                           profile="cpu", protocol="honest", device="cpu")
    assert md.read_text().startswith("Reproduces Table 9; profile cpu; protocol honest; device cpu")
    assert (tmp_path / "tables" / "t.csv").read_text() == "a\n1.23456\n"
    fig, _ = plt.subplots()
    png = figures.save_figure(fig, "f", tmp_path, item="Figure 9", profile="cpu")
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
