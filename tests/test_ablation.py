"""Section 4.4 ablations: grids, scaling, parameter counts, tables, figure and timing."""

import dataclasses
import json

import numpy as np
import pandas as pd
import pytest

from htnetlib.study import ablation
from htnetlib.study import experiments
from htnetlib import config as config_mod
from htnetlib import model as model_mod
from htnetlib.data import regions
from htnetlib import paper
from htnetlib.study.experiments import ABLATIONS


def test_paper_grids_match_section_4_4():
    cfg = {k: [ab.config(v, "paper") for v in ab.values] for k, ab in ABLATIONS.items()}
    assert [(c.patch_size, c.image_size) for c in cfg["block_size"]] == [
        (5, 20), (6, 24), (7, 28), (8, 32), (9, 36), (10, 40)]
    assert [c.dim for c in cfg["dim"]] == [64, 128, 192, 256, 384, 512]
    assert [c.heads for c in cfg["heads"]] == [1, 2, 3, 4, 6, 8]
    assert [c.block_repeats for c in cfg["layers"]] == [(2, 2, n) for n in (2, 4, 6, 8, 10, 12)]
    for k, ab in ABLATIONS.items():
        # one setting changes, everything else is the paper's default, and the default is a point
        assert ab.config(ab.paper_default, "paper") == config_mod.PROFILES["paper"], k
        assert ab.grid("paper")["default"].sum() == 1


def test_cpu_profile_scales_each_grid_and_contains_its_default():
    cpu = config_mod.PROFILES["cpu"]
    assert [ABLATIONS["dim"].config(v, "cpu").dim for v in ABLATIONS["dim"].values] == [
        8, 16, 24, 32, 48, 64]
    assert [ABLATIONS["layers"].config(v, "cpu").block_repeats
            for v in ABLATIONS["layers"].values] == [(1, 1, n) for n in range(1, 7)]
    for k, ab in ABLATIONS.items():
        grid = ab.grid("cpu")
        assert grid["default"].sum() == 1, k
        for v in ab.values:  # only the ablated fields differ from the cpu default
            diff = {f.name for f in dataclasses.fields(cpu)
                    if getattr(ab.config(v, "cpu"), f.name) != getattr(cpu, f.name)}
            assert diff <= {"patch_size", "image_size", "dim", "heads", "block_repeats"}, (k, v)
    default_at = {k: ab.values[int(np.flatnonzero(ab.grid("cpu")["default"])[0])]
                  for k, ab in ABLATIONS.items()}
    assert default_at == {"block_size": 7, "dim": 256, "heads": 1, "layers": 4}


def test_dimension_that_does_not_scale_is_refused():
    base = dataclasses.replace(config_mod.PROFILES["cpu"], dim=10)
    with pytest.raises(ValueError, match="hidden dimension 64 does not scale"):
        experiments._dim(64, base)


def test_parameter_counts_of_table_5():
    ab = ABLATIONS["layers"]
    counts = [model_mod.parameter_count(ab.config(v, "paper")) for v in ab.values]
    assert counts[0] == 38_968_838 and counts[3] == 114_429_446 and counts[-1] == 164_736_518
    assert np.all(np.diff(counts) > 0)
    # the paper's "#Params (millions)" is within 1 % of float32 MiB, 3.8x off a count
    mib = np.array(counts) * 4 / 2**20
    cited = np.array([paper.TABLE5_PARAMS[v] for v in ab.values])
    assert np.all(np.abs(cited / mib - 1) < 0.01)
    assert np.all(cited / (np.array(counts) / 1e6) > 3.8)
    # the count on the meta device is the count of the real model
    cfg = ab.config(2, "smoke")
    built = model_mod.build_model(cfg)
    assert model_mod.parameter_count(cfg) == sum(p.numel() for p in built.parameters())


def test_cited_values_are_the_paper_default_at_the_default_point():
    for ab in ABLATIONS.values():
        assert ab.cited[ab.paper_default] == paper.TABLE2["HTNet"]
    assert paper.TABLE4[5]["samm"] == (0.8237, 0.8033)
    assert paper.TABLE5[12]["casme2"] == (0.95, 0.9412)


@pytest.fixture(scope="module")
def smoke_runs(synthetic, tmp_path_factory):
    runs_dir = tmp_path_factory.mktemp("runs")
    ab = ABLATIONS["layers"]
    out = ablation.grid_runs(synthetic, ab, "smoke", 0, runs_dir=runs_dir)
    return ab, runs_dir, out


def test_grid_runs_train_missing_and_look_up_stored(synthetic, smoke_runs):
    ab, runs_dir, runs = smoke_runs
    assert set(runs) == set(ab.values)
    depths = {v: tuple(r.meta["config"]["block_repeats"]) for v, r in runs.items()}
    assert depths == {v: (1, 1, v // 2) for v in ab.values}
    again = ablation.grid_runs(synthetic, ab, "smoke", 0, runs_dir=runs_dir, train_missing=False)
    assert {v: r.path for v, r in again.items()} == {v: r.path for v, r in runs.items()}
    gpu = ablation.grid_runs(synthetic, ab, "paper", 0, runs_dir=runs_dir, train_missing=False)
    assert all(r is None for r in gpu.values())


def test_table_rows_name_source_protocol_and_missing_runs(synthetic, smoke_runs):
    ab, runs_dir, runs = smoke_runs
    missing = {v: None for v in ab.values}
    df = ablation.table(ab, {"smoke": runs, "paper": missing}, n_boot=50)
    assert len(df) == 6 * (1 + 2 + 1)  # cited, honest + oracle, one "not run" row
    measured = df[df["source"].str.startswith("measured")]
    first = measured.iloc[0]
    assert first["Full UF1"] == pytest.approx(runs[2].metrics["honest"]["full"]["uf1"])
    assert df[df["profile"].eq("paper") & df["source"].str.startswith("not run")].shape[0] == 6
    assert measured["source"].str.contains("profile default").sum() == 2  # (1, 1, 1) is smoke's
    comp = ablation.compact(df, ab)
    assert list(comp.columns) == [ab.label(v) for v in ab.values]
    assert comp.loc["Full UF1: paper, oracle (paper)", "(2, 2, 8)"] == 0.8603
    fig = ablation.plot(df, ab, "smoke", ablation.default_spread([runs[2], runs[4]]))
    assert len(fig.axes) == 4


def test_spread_of_the_default_over_seeds(smoke_runs):
    _, _, runs = smoke_runs
    one = ablation.default_spread([runs[2]])
    assert np.isnan(one["honest"]["full"]["uf1"])
    two = ablation.default_spread([runs[2], runs[4]])
    a, b = (runs[v].metrics["oracle"]["full"]["uar"] for v in (2, 4))
    assert two["oracle"]["full"]["uar"] == pytest.approx(abs(a - b) / np.sqrt(2))
    st = ablation.spread_table("smoke", [runs[2], runs[4]])
    assert list(st["statistic"]) == ["mean", "sd", "mean", "sd"]


def test_layer_timing_is_measured_once_and_stored(synthetic, tmp_path):
    df = ablation.layer_timing(synthetic, ["smoke"], results_dir=tmp_path, epochs=1, repeats=2)
    path = tmp_path / "timing" / "table5_layers_smoke.json"
    meta = json.loads(path.read_text())
    assert meta["repeats"] == 2 and meta["device"].startswith("cpu")
    assert (df["seconds per epoch"] > 0).all() and len(df) == 6
    assert all(len(r.split(", ")) == 2 for r in df["rounds"])
    # stored: read back rather than timed again (a doctored value comes back unchanged)
    meta["timing"][0]["seconds per epoch"] = 123.0
    path.write_text(json.dumps(meta))
    again = ablation.layer_timing(synthetic, ["smoke"], results_dir=tmp_path)
    assert again["seconds per epoch"].iloc[0] == 123.0
    costs = ablation.layers_costs(again, "smoke")
    assert costs["smoke here: s per epoch"].iloc[0] == 123.0
    assert costs["smoke here: time / time of its default"].iloc[0] == 1.0  # (1, 1, 1) is smoke's
    assert costs["paper: time / time of (2, 2, 8)"].iloc[3] == 1.0
    assert "paper profile here: s per epoch" not in costs  # the paper profile was not timed


def test_block_size_inputs_scale_with_the_image(synthetic):
    ab = ABLATIONS["block_size"]
    for v in (5, 10):
        cfg = ab.config(v, "smoke")
        x = regions.network_inputs(synthetic, cfg)
        assert x.shape[1:] == (3, 4 * v, 4 * v)
        out = model_mod.build_model(cfg)(__import__("torch").from_numpy(x[:2]))
        assert tuple(out.shape) == (2, 3)


def test_readme_ablation_block(smoke_runs, tmp_path):
    from htnetlib.study.readme import ABL_END, ABL_START, update_readme

    ab, _, runs = smoke_runs
    df = ablation.table(ab, {"smoke": runs, "paper": {v: None for v in ab.values}}, n_boot=20)
    (tmp_path / "tables").mkdir()
    df.to_csv(tmp_path / "tables" / "table5_layers_smoke.csv", index=False)
    readme = tmp_path / "README.md"
    readme.write_text(f"intro\n{ABL_START}\nold\n{ABL_END}\noutro\n")
    assert update_readme(readme, tmp_path, "smoke")
    text = readme.read_text()
    assert "old" not in text and text.endswith("outro\n")
    lines = [line for line in text.splitlines() if line.startswith("| ")][1:]
    assert len(lines) == 6 and lines[0].startswith("| Table 5") and lines[1].startswith("|  |")
    honest = runs[2].metrics["honest"]["full"]["uf1"]
    assert lines[0].startswith("| Table 5 (transformer layers) ([09_table5_layers]"
                               "(notebooks/09_table5_layers.ipynb)) | (2, 2, 2) | "
                               "layers (1, 1, 1) (default) | %.4f |" % honest)
    assert lines[3].split(" | ")[1] == "(2, 2, 8) (paper default)"
    assert lines[3].split(" | ")[-2] == "0.8603"  # the paper's value (oracle)
    assert lines[3].rstrip(" |").endswith("not run")  # no stored paper-profile run


def test_readme_ablation_block_reads_numeric_grid_labels(synthetic, tmp_path):
    from htnetlib.study.readme import ablation_block

    ab = ABLATIONS["heads"]
    runs = ablation.grid_runs(synthetic, ab, "smoke", 0, runs_dir=tmp_path / "runs")
    (tmp_path / "tables").mkdir()
    ablation.table(ab, {"smoke": runs}, n_boot=20).to_csv(
        tmp_path / "tables" / "fig6_heads_smoke.csv", index=False)
    block = ablation_block(tmp_path, "smoke")
    rows = [line.split(" | ") for line in block.splitlines() if line.startswith("| ")][1:]
    assert [r[1] for r in rows] == ["1", "2", "3 (paper default)", "4", "6", "8"]
    assert float(rows[0][3]) == pytest.approx(runs[1].metrics["honest"]["full"]["uf1"], abs=1e-4)
    assert rows[2][-2] == "0.8603"  # the paper's default point
    assert rows[2][-1].rstrip(" |") == "not run"  # no paper-profile run in this store
