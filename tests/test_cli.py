import pytest

from htnetlib.cli.app import main
from htnetlib import config as config_mod
from htnetlib.study import experiments
from htnetlib.training import lodo as lodo_mod
from htnetlib.training import nested as nested_mod
from htnetlib.training import store


def test_data_check_fails_on_a_small_release(synthetic_root, capsys):
    assert main(["data", "check", "--data", str(synthetic_root)]) == 1
    out = capsys.readouterr().out
    assert "24 samples, expected 442" in out


def test_data_check_missing_root_is_a_clear_error(tmp_path, capsys):
    assert main(["data", "check", "--data", str(tmp_path / "none")]) == 1
    assert "does not exist" in capsys.readouterr().out


def test_train_and_evaluate(synthetic_root, tmp_path, capsys):
    assert main(["train", "--profile", "smoke", "--data", str(synthetic_root),
                 "--out", str(tmp_path)]) == 0
    run_dir = next(tmp_path.iterdir())
    capsys.readouterr()
    assert main(["evaluate", str(run_dir)]) == 0
    out = capsys.readouterr().out
    assert "| honest | measured |" in out and "| oracle | measured |" in out
    assert "HTNet (paper, Table 2) | oracle | cited | 0.8603 | 0.8475" in out


def test_unknown_override_is_refused(synthetic_root, tmp_path, capsys):
    out = tmp_path / "runs"
    assert main(["train", "--data", str(synthetic_root), "--out", str(out),
                 "--set", "colour=blue"]) == 2
    err = capsys.readouterr().err.splitlines()
    assert len(err) == 1 and "unknown config key 'colour'" in err[0]
    assert not out.exists()


def test_real_data_check(real_root, capsys):
    assert main(["data", "check", "--data", str(real_root)]) == 0
    assert "442 samples, 68 subjects" in capsys.readouterr().out


def test_train_an_ablation_grid_point_stores_the_notebooks_run(synthetic, synthetic_root, tmp_path):
    from htnetlib.study import ablation

    assert main(["train", "--profile", "smoke", "--data", str(synthetic_root), "--out",
                 str(tmp_path), "--ablation", "layers=6"]) == 0
    ab = experiments.ABLATIONS["layers"]
    run = ablation.stored_run(synthetic, ab.config(6, "smoke"), 0, "smoke", tmp_path)
    assert run is not None and run.meta["config"]["block_repeats"] == [1, 1, 3]
    assert [p.name for p in tmp_path.iterdir()] == [run.path.name]
    assert config_mod.profile_config("smoke").block_repeats == (1, 1, 1)


@pytest.mark.parametrize("arg, message", [("layers=7", "not a grid point of Table 5"),
                                          ("width=3", "NAME=VALUE with NAME one of"),
                                          ("dim", "NAME=VALUE")])
def test_bad_ablation_is_refused(synthetic_root, tmp_path, capsys, arg, message):
    out = tmp_path / "runs"
    assert main(["train", "--profile", "smoke", "--data", str(synthetic_root), "--out", str(out),
                 "--ablation", arg]) == 2
    err = capsys.readouterr().err.splitlines()
    assert len(err) == 1 and err[0].startswith("htnet: error: --ablation") and message in err[0]
    assert not out.exists()


def test_train_nested_and_lodo_protocols(synthetic, synthetic_root, tmp_path, capsys):
    """``--protocol nested`` stores the run and its finished inner fits and prints the nested
    rule's scores; ``--protocol lodo`` stores a leave-one-dataset-out result; both as the
    library (notebooks 12 and 13) finds them."""

    runs = tmp_path / "runs"
    assert main(["train", "--profile", "smoke", "--data", str(synthetic_root), "--out",
                 str(runs), "--protocol", "nested"]) == 0
    out = capsys.readouterr().out
    cfg = config_mod.profile_config("smoke")
    run_dir = runs / store.run_id(cfg, 0, store.data_fingerprint(synthetic), "smoke")
    assert nested_mod.nested_complete(run_dir)
    run = store.load_run(run_dir)
    nested = nested_mod.nested_predictions(run, "uf1")
    from htnetlib.evaluation import metrics

    assert (f"nested epoch (chosen by inner UF1): composite UF1 "
            f"{metrics.uf1(run.predictions['label'], nested):.4f}") in out

    lodo = tmp_path / "lodo"
    assert main(["train", "--profile", "smoke", "--data", str(synthetic_root), "--out",
                 str(lodo), "--protocol", "lodo"]) == 0
    out = capsys.readouterr().out
    path = lodo / lodo_mod.lodo_id(cfg, 0, store.data_fingerprint(synthetic), "smoke")
    result = lodo_mod.load_lodo(path)
    for d, s in result["metrics"]["honest"].items():
        assert f"({s['n']} samples): UF1 {s['uf1']:.4f}" in out


def test_lodo_refuses_a_trainer_it_chooses_itself(synthetic_root, tmp_path, capsys):
    """Leave-one-dataset-out fits train grouped on a GPU and fold after fold on a CPU; a
    --trainer for them is a one-line usage error before anything is written."""
    out = tmp_path / "runs"
    assert main(["train", "--profile", "smoke", "--data", str(synthetic_root), "--out", str(out),
                 "--protocol", "lodo", "--trainer", "grouped"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "--protocol lodo" in err and "--trainer" in err
    assert not out.exists()
