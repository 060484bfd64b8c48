"""The numbered notebooks: structure of the committed files, and a papermill smoke run of each."""

import json
import os
from pathlib import Path

import pytest

from htnetlib.cli.reproduce import NOTEBOOKS, execute, notebooks, parameters_for
from htnetlib.study import experiments
from htnetlib.study import readme

ALL = notebooks()


def cells(nb: Path) -> list[dict]:
    return json.loads(nb.read_text())["cells"]


def test_the_walkthrough_is_there():
    names = [nb.name for nb in ALL]
    for expected in ("01_optical_flow.ipynb", "02_region_cropping.ipynb", "03_model.ipynb",
                     "04_training_loso.ipynb", "05_table2_confusion.ipynb",
                     "06_table4_block_size.ipynb", "07_fig5_dim.ipynb", "08_fig6_heads.ipynb",
                     "09_table5_layers.ipynb", "10_table3_casme3.ipynb",
                     "11_protocol_audit.ipynb", "12_honest_selection.ipynb",
                     "13_cross_dataset.ipynb", "14_from_frames_to_prediction.ipynb",
                     "15_toward_076.ipynb", "16_crossfit.ipynb"):
        assert expected in names


@pytest.mark.parametrize("nb", ALL, ids=lambda p: p.name)
def test_one_parameters_cell_and_clean_outputs(nb):
    data = json.loads(nb.read_text())
    assert data["metadata"]["kernelspec"]["name"] == "python3"
    tagged = [c for c in data["cells"] if "parameters" in c.get("metadata", {}).get("tags", [])]
    assert len(tagged) == 1, f"{nb.name}: {len(tagged)} cells tagged 'parameters'"
    for c in data["cells"]:
        for out in c.get("outputs", []):
            assert out["output_type"] != "error", f"{nb.name}: committed with an error output"
    assert any(c.get("outputs") for c in data["cells"] if c["cell_type"] == "code"), \
        f"{nb.name}: committed without outputs"
    # tidy outputs (htnetlib.reproduce.tidy): nothing that changes from run to run, no stderr,
    # no machine paths
    assert set(data["metadata"].get("papermill", {})) <= {"parameters"}, nb.name
    for c in data["cells"]:
        assert not {"papermill", "execution"} & set(c.get("metadata", {})), nb.name
        for out in c.get("outputs", []):
            assert out.get("name") != "stderr", f"{nb.name}: stderr in a committed output"
    assert str(NOTEBOOKS.resolve()) not in nb.read_text(), f"{nb.name}: a machine path"


def test_every_notebook_ends_with_computed_findings():
    """The lab's episodes (01-04, :data:`htnetlib.study.lab.SCHEDULE`) end on "## Key points",
    every later notebook on "## What we found"; then one code cell shows the computed bullets."""
    from htnetlib.study import lab

    episodes = {ep.notebook for ep in lab.SCHEDULE}
    for nb in ALL:
        cs = cells(nb)
        heading = "## Key points" if nb.stem in episodes else "## What we found"
        assert "".join(cs[-2]["source"]).strip() == heading, nb.name
        last = "".join(cs[-1]["source"])
        assert cs[-1]["cell_type"] == "code" and "Markdown(" in last, nb.name


@pytest.mark.parametrize("nb", ALL, ids=lambda p: p.name)
def test_papermill_smoke(nb, tmp_path, synthetic_root, monkeypatch):
    """Every notebook runs end to end with profile='smoke', training from scratch, reading and
    writing only its own ``results_dir`` (not the session's ``$HTNET_RESULTS_DIR``)."""
    monkeypatch.delenv("HTNET_RESULTS_DIR", raising=False)
    data_dir = os.environ.get("HTNET_DATA")
    if not data_dir or not Path(data_dir, "combined_3_class2_for_optical_flow.csv").is_file():
        data_dir = str(synthetic_root)
    wanted = {"profile": "smoke", "results_dir": str(tmp_path / "results"), "retrain": True,
              "data_dir": data_dir, "workers": 1, "seeds": [0],
              # never time the paper profile's models in a smoke run
              "timing_profiles": ["smoke"]}
    params = parameters_for(nb, wanted)
    out = tmp_path / nb.name
    execute(nb, out, params, cwd=NOTEBOOKS)
    assert not any(o["output_type"] == "error" for c in cells(out) for o in c.get("outputs", []))
    check_written_tables(tmp_path / "results" / "tables")


def expected_rows(name: str) -> int | None:
    """Rows a smoke execution writes into table ``name`` (None: not a scored table)."""
    from htnetlib import paper

    if name.startswith("table2_"):
        measured = sum(1 if experiments.table2_config(v, "smoke").model == "logreg" else 2
                       for v in experiments.TABLE2)
        return len(paper.TABLE2) + measured
    for key, (_, table) in readme.ABLATION_TABLES.items():
        if name.startswith(table + "_"):
            ab = experiments.ABLATIONS[key]
            # per grid point: the paper's value where cited, two smoke rows (honest, oracle)
            # and one "not run" row of the paper profile (never trained in a smoke run)
            return sum(v in ab.cited for v in ab.values) + 3 * len(ab.values)
    return None


def check_written_tables(folder: Path) -> None:
    """Every scored table a smoke run wrote: both protocols among its measured rows, every UF1
    and UAR in [0, 1], and the row count the notebook's configuration implies."""
    import pandas as pd

    for csv in sorted(folder.glob("*.csv")) if folder.is_dir() else []:
        df = pd.read_csv(csv)
        scores = [c for c in df.columns if c.endswith((" UF1", " UAR"))]
        values = df[scores].to_numpy(dtype=float)
        values = values[~pd.isna(values)]
        assert ((values >= 0) & (values <= 1)).all(), f"{csv.name}: a score outside [0, 1]"
        if "source" in df.columns and "protocol" in df.columns:
            measured = df[df["source"].astype(str).str.startswith("measured")]
            assert {"honest", "oracle"} <= set(measured["protocol"]), csv.name
        rows = expected_rows(csv.stem)
        if rows is not None:
            assert len(df) == rows, f"{csv.name}: {len(df)} rows, expected {rows}"


def test_a_bad_profile_parameter_names_the_profiles(tmp_path):
    """A notebook given an unknown profile stops at once with the valid choices in the error."""
    import papermill as pm

    nb = NOTEBOOKS / "03_model.ipynb"
    with pytest.raises(pm.PapermillExecutionError, match="paper.*smoke|cpu, paper, smoke"):
        execute(nb, tmp_path / nb.name, {"profile": "gpu", "results_dir": str(tmp_path)},
                cwd=NOTEBOOKS)


def test_only_declared_parameters_are_passed():
    nb = NOTEBOOKS / "01_optical_flow.ipynb"
    assert parameters_for(nb, {"profile": "cpu", "results_dir": "x"}) == {"results_dir": "x"}


def test_code_cells_are_library_calls():
    """No code cell of a notebook is longer than 15 lines (a walkthrough notebook's teaching
    computation, issue 35, is split over cells: the named values, the computation, the check
    against the library), and none reaches for a private name (``module._name``) of the
    library."""
    import re

    for nb in ALL:
        for i, c in enumerate(cells(nb)):
            if c["cell_type"] != "code":
                continue
            source = "".join(c["source"])
            limit = 15
            assert len(source.splitlines()) <= limit, \
                f"{nb.name}: cell {i} has more than {limit} lines"
            assert not re.search(r"\b[a-z_]\w*\._\w", source), f"{nb.name}: cell {i}, a private name"


def test_matplotlib_only_in_the_study_layer():
    root = Path(__file__).resolve().parent.parent / "htnetlib"
    for path in root.rglob("*.py"):
        if "study" not in path.relative_to(root).parts:
            assert "matplotlib" not in path.read_text(), path.relative_to(root)


def test_results_dir_stays_in_the_repository(monkeypatch, tmp_path):
    """A notebook's outputs go to $HTNET_RESULTS_DIR when set, else to its results_dir resolved
    against the repository root; stored results are always read from the latter."""
    from htnetlib.io import ROOT
    from htnetlib.study import figures

    monkeypatch.delenv("HTNET_RESULTS_DIR", raising=False)
    assert figures.results_dir("results") == ROOT / "results"
    assert figures.results_dir("results", "cpu") == ROOT / "results"
    assert figures.results_dir(tmp_path) == tmp_path
    # a smoke run never overwrites a committed file: aimed at results/, it writes to an ignored
    # folder (papermill notebooks/03_model.ipynb OUT -p profile smoke)
    smoke = figures.results_dir("results", "smoke")
    assert smoke == figures.SMOKE_OUTPUTS and smoke.is_relative_to(ROOT / "results")
    assert figures.results_dir(tmp_path, "smoke") == tmp_path
    if (ROOT / ".git").exists():
        import subprocess

        assert subprocess.run(["git", "check-ignore", "-q", str(smoke / "findings" / "x.md")],
                              cwd=ROOT).returncode == 0
    monkeypatch.setenv("HTNET_RESULTS_DIR", str(tmp_path / "out"))
    assert figures.results_dir("results") == tmp_path / "out"
    assert figures.stored_dir("results") == ROOT / "results"
    for nb in ALL:
        params = next("".join(c["source"]) for c in cells(nb)
                      if "parameters" in c.get("metadata", {}).get("tags", []))
        assert 'results_dir = "results"' in params, nb.name
        if "profile =" in params:  # a profile-dependent notebook passes it on (an episode of
            # the lab through lab.lesson_data, which calls figures.results_dir with the release)
            assert any(call in "".join(c["source"]) for c in cells(nb)
                       for call in ("figures.results_dir(results_dir, profile)",
                                    "lab.lesson_data(data_dir, results_dir, profile)")), nb.name
