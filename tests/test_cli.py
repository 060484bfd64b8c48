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


# --------------------------------------------------------------------------- help texts


def _parsers():
    """(name, parser) of htnet and every subcommand, nested ones included."""
    import argparse

    from htnetlib.cli.app import build_parser

    todo, out = [("htnet", build_parser())], []
    while todo:
        name, parser = todo.pop(0)
        out.append((name, parser))
        for action in parser._actions:
            if isinstance(action, argparse._SubParsersAction):
                todo += [(f"{name} {n}", p) for n, p in action.choices.items()]
    return out


def test_every_subcommand_help_has_an_example_and_shows_defaults():
    """An example in every subcommand's help (epilog); every option with a default says it;
    one profile order everywhere; no RST double backticks in any help text."""
    import argparse

    from htnetlib.cli.app import PROFILE_ORDER

    for name, parser in _parsers():
        text = parser.format_help()
        assert "``" not in text, name
        if name != "htnet":
            assert "example" in (parser.epilog or ""), f"{name}: no example"
        for action in parser._actions:
            if action.help in (None, argparse.SUPPRESS) or not action.option_strings:
                continue
            if action.default not in (None, False, [], argparse.SUPPRESS):
                assert "default" in action.help, f"{name} {action.option_strings[0]}"
            if action.choices and set(action.choices) == set(PROFILE_ORDER):
                assert tuple(action.choices) == PROFILE_ORDER, f"{name} {action.dest}"
    assert "{smoke,cpu,paper}" in dict(_parsers())["htnet"].format_help()


def test_the_cli_mirrors_the_library_constants():
    from htnetlib import predict
    from htnetlib.cli import app, predict as cli_predict
    from htnetlib.data import flow

    assert cli_predict.FLOW_METHODS == flow.FLOW_METHODS
    assert cli_predict.APEX_METHODS == flow.APEX_METHODS
    assert cli_predict.DEFAULT_FLOW == predict.DEFAULT_FLOW == "tvl1"
    assert cli_predict.PROFILE_ORDER == app.PROFILE_ORDER
    assert set(predict.NO_MOTION_PX) == set(flow.FLOW_METHODS)


def test_fit_paper_on_a_cpu_refuses_with_the_estimate(synthetic_root, tmp_path, capsys):
    """One line, exit 5: the estimated hours here and where the fit is cheap; nothing read
    or written."""
    code = main(["fit", "--profile", "paper", "--device", "cpu", "--data",
                 str(synthetic_root), "--out", str(tmp_path / "m")])
    err = capsys.readouterr().err
    assert code == 5 and len(err.strip().splitlines()) == 1, err
    assert "hours" in err and "GPU" in err and "--allow-slow" in err
    assert not (tmp_path / "m").exists()
