"""The reproduce plan: which runs each profile's notebooks need, the refusal of a run too costly
for this device, and notebooks that are replaced only when their execution succeeded."""

import hashlib
import json
import time
from pathlib import Path

import numpy as np
import pytest

from htnetlib.study import plan
from htnetlib import config as config_mod
from htnetlib import errors
from htnetlib.study import experiments
from htnetlib.training import fold as fold_mod
from htnetlib.training import lodo as lodo_mod
from htnetlib.training import nested as nested_mod
from htnetlib.training import store as store_mod
from htnetlib.cli import reproduce

ROOT = Path(__file__).resolve().parent.parent
RUNS = ROOT / "results" / "runs"
LODO = ROOT / "results" / "tables" / "lodo"


def committed(profile: str) -> dict:
    """Run id -> data fingerprint of every committed run of ``profile``."""
    out = {}
    for path in RUNS.glob("*/config.json"):
        meta = json.loads(path.read_text())
        if meta["profile"] == profile:
            out[meta["run_id"]] = meta["data_fingerprint"]
    return out


def test_the_cpu_plan_is_exactly_the_committed_cpu_runs():
    """Every committed cpu run, inner store and leave-one-dataset-out result is needed by a
    notebook, and every one the registry lists is committed."""
    runs = committed("cpu")
    fingerprint = set(runs.values())
    assert len(fingerprint) == 1
    (fp,) = fingerprint
    needed = {store_mod.run_id(n.config, n.seed, fp, "cpu") for n in plan.needed_runs("cpu")}
    assert needed == set(runs)
    inner = {p.parent.parent.name for p in RUNS.glob(f"*/{nested_mod.INNER_DIR}/config.json")
             if json.loads((p.parent.parent / "config.json").read_text())["profile"] == "cpu"}
    assert {store_mod.run_id(n.config, n.seed, fp, "cpu")
            for n in plan.needed_nested("cpu")} == inner
    assert all(nested_mod.nested_complete(RUNS / r) for r in inner)
    lodo = {p.parent.name for p in LODO.glob("*/config.json")
            if json.loads(p.read_text())["profile"] == "cpu"}
    assert {lodo_mod.lodo_id(n.config, n.seed, fp, "cpu") for n in plan.needed_lodo("cpu")} == lodo
    assert all(plan.lodo_complete(LODO / r) for r in lodo)


def test_the_plan_of_each_profile():
    for profile in ("cpu", "paper", "smoke"):
        needs = plan.needed_runs(profile)
        models = {n.config.model for n in needs}
        assert models == {"htnet", "ststnet", "logreg", "rcn", "twostream"}
        # the default with every seed, the null model once, one logistic regression
        default = config_mod.profile_config(profile)
        assert sorted(n.seed for n in needs if n.config == default) == list(plan.SEEDS) + list(
            experiments.CONFIRM_SEEDS)  # notebook 12's confirmation adds fresh seeds
        assert sum(n.config.permute_labels for n in needs) == 1
        # Table 2's logistic regression, and notebook 16's with readouts on seeds 0 and 9
        assert sum(n.config.model == "logreg" for n in needs) == 3
        # 24 grid points, of which the default is one per grid (4), and 2 more seeds of it,
        # 3 x 3 whole-map and STSTNet runs, logreg, null: 31 distinct runs; notebook 12 adds
        # its three single changes (first seed) and two combinations with every seed: 9 more;
        # notebook 05 the corrected crop mode with every seed: 3 more; notebook 12's
        # pre-registered confirmation: plain and the chosen variant on three fresh seeds, 6 more;
        # notebook 15: its two variants with readouts on seeds 0-2 and on 6-8, 12 more;
        # notebook 16: RCN, two-stream and STSTNet on seeds 0-2 and logistic regression on 0,
        # 10 more, and its confirmation on seeds 9-11 (6 HTNet runs, 10 shallow ones) with the
        # compute-matched headline's 10 further HTNet runs (seeds 12-16), 26 more
        assert len(needs) == 31 + 9 + 3 + 6 + 12 + 10 + 26, profile
        assert sum(any(w.startswith("15 ") for w in n.why) for n in needs) == 12
        assert sum(any(w.startswith("16 candidates") for w in n.why) for n in needs) == 10
        assert sum(any(w.startswith("16 cross-fitted") for w in n.why) for n in needs) == 26
        # (the plain model is the default: its three seeds are needed by 12 too)
        assert sum(any(w.startswith("12 ") for w in n.why) for n in needs) == 3 + 3 + 6 + 6
        assert all(n.why for n in needs)


def test_plan_seeds_are_the_notebooks_default_seeds():
    import papermill as pm

    for nb in reproduce.notebooks():
        declared = pm.inspect_notebook(str(nb))
        if "seeds" in declared:
            assert eval(declared["seeds"]["default"]) == list(plan.SEEDS), nb.name


def test_estimates_rest_on_measured_timings():
    seconds, basis = plan.estimate(config_mod.PROFILES["paper"], "cuda")
    assert "htnet-paper-s0-86185f5c54" in basis and "same configuration" in basis
    assert 300 < seconds < 1200  # the stored H200 run took 614 s
    seconds, basis = plan.estimate(config_mod.PROFILES["paper"], "cpu", workers=2)
    assert seconds > 24 * 3600 and "per epoch on this CPU" in basis
    seconds, basis = plan.estimate(config_mod.PROFILES["cpu"], "cpu", workers=2)
    assert 60 < seconds < 3600
    seconds, basis = plan.estimate(config_mod.BASELINES["ststnet"]["paper"], "cuda")
    assert seconds is None and "no ststnet run timed" in basis


def _digest(folder: Path) -> str:
    h = hashlib.sha256()
    for p in sorted(folder.glob("*.ipynb")):
        h.update(p.name.encode() + p.read_bytes())
    return h.hexdigest()


def test_paper_profile_on_a_cpu_is_refused_before_any_notebook(synthetic_root, monkeypatch,
                                                               capsys):
    monkeypatch.setenv("HTNET_DATA", str(synthetic_root))
    monkeypatch.setattr(fold_mod, "pick_device", lambda preferred=None: __import__("torch").device("cpu"))
    before = _digest(reproduce.NOTEBOOKS)
    executed = []
    monkeypatch.setattr(reproduce, "execute", lambda *a, **k: executed.append(a))
    start = time.perf_counter()
    code = reproduce.main(["--profile", "paper"])
    took = time.perf_counter() - start
    out, err = capsys.readouterr()
    assert code == errors.EXIT_REFUSED
    assert not executed and _digest(reproduce.NOTEBOOKS) == before
    assert "missing" in out and "on this cpu" in out
    assert "refused" in err and "bench/gpu.sh run" in err and "--stored-only" in err
    assert took < 60


def test_the_plan_alone_changes_nothing(synthetic_root, monkeypatch, capsys):
    monkeypatch.setenv("HTNET_DATA", str(synthetic_root))
    monkeypatch.setattr(reproduce, "execute", lambda *a, **k: pytest.fail("executed"))
    assert reproduce.main(["--profile", "cpu", "--plan"]) == 0
    assert "runs needed by the notebooks" in capsys.readouterr().out


def test_other_profiles_never_overwrite_the_committed_notebooks(tmp_path):
    nb = reproduce.NOTEBOOKS / "04_training_loso.ipynb"
    assert reproduce.output_path(nb, "cpu") == nb
    assert reproduce.output_path(nb, "paper", tmp_path) == tmp_path / "notebooks/paper" / nb.name
    assert reproduce.output_path(nb, "smoke", tmp_path).parent.name == "smoke"


def _notebook(path: Path, code: str) -> Path:
    import nbformat

    nb = nbformat.v4.new_notebook()
    params = nbformat.v4.new_code_cell("x = 1")
    params.metadata["tags"] = ["parameters"]
    nb.cells = [params, nbformat.v4.new_code_cell(code)]
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3",
                                 "language": "python"}
    nbformat.write(nb, str(path))
    return path


def test_a_failed_notebook_leaves_the_output_as_it_was(tmp_path):
    src = _notebook(tmp_path / "bad.ipynb", "raise RuntimeError('cell fails')")
    out = tmp_path / "out.ipynb"
    out.write_text("committed")
    with pytest.raises(Exception, match="cell fails"):
        reproduce.execute(src, out, {"x": 2}, cwd=tmp_path)
    assert out.read_text() == "committed"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bad.ipynb", "out.ipynb"]
    good = _notebook(tmp_path / "good.ipynb", "y = x * 2")
    reproduce.execute(good, out, {"x": 2}, cwd=tmp_path)
    assert "y = x * 2" in out.read_text()


def test_defaults_inject_nothing_and_a_second_run_changes_nothing(tmp_path):
    src = _notebook(tmp_path / "nb.ipynb", "import sys\nprint('out')\n"
                    "print('noise', file=sys.stderr)\nprint(x)")
    out = tmp_path / "out.ipynb"
    reproduce.execute(src, out, {"x": 1}, cwd=tmp_path)  # x = 1 is the default
    text = out.read_text()
    nb = json.loads(text)
    assert not any("injected-parameters" in c["metadata"].get("tags", []) for c in nb["cells"])
    assert "papermill" not in nb["metadata"]
    outputs = [o for c in nb["cells"] for o in c.get("outputs", [])]
    assert ["".join(o["text"]) for o in outputs] == ["out\n1\n"]  # stderr dropped
    assert str(tmp_path) not in text and "start_time" not in text
    reproduce.execute(out, out, {"x": 1}, cwd=tmp_path)
    assert out.read_text() == text
    reproduce.execute(out, out, {"x": 5}, cwd=tmp_path)
    nb = json.loads(out.read_text())
    injected = [c for c in nb["cells"] if "injected-parameters" in c["metadata"].get("tags", [])]
    assert len(injected) == 1 and injected[0]["id"] == "injected-parameters"
    assert nb["metadata"]["papermill"] == {"parameters": {"x": 5}}
    reproduce.execute(out, out, {"x": 1}, cwd=tmp_path)
    assert out.read_text() == text


def test_the_plan_counts_the_inner_fits_of_the_nested_rule(synthetic, tmp_path, monkeypatch):
    """Notebook 12's nested rule trains five inner fits per fold: the plan lists them apart from
    the runs, at 4 times the run's estimate, and a finished inner store counts as stored."""

    timings = plan._stored_timings(RUNS)  # the committed runs' timings, in an empty store
    monkeypatch.setattr(plan, "_stored_timings", lambda runs_dir: timings)
    empty = plan.make_plan(synthetic, "cpu", runs_dir=tmp_path / "none")
    assert [n.why for n in empty.nested] == [
        [f"12 nested rule: {v}"] for v in experiments.NESTED_VARIANTS
        for _ in experiments.nested_seeds(v, experiments.SEEDS)] + [
        ["12 calibration: temperature from inner fits"]]
    assert empty.missing_nested == empty.nested
    for n in empty.nested:
        run = next(m for m in empty.needs if m.run_id == n.run_id)
        assert run.seconds > 0 and n.seconds == pytest.approx(4 * run.seconds)
        assert n.basis.startswith("4 x the LOSO run")
    assert empty.missing_seconds == pytest.approx(
        sum(n.seconds for n in empty.missing + empty.missing_nested + empty.missing_lodo))
    assert f"missing {empty.nested[0].run_id}/inner" in empty.summary()

    # a finished inner store (as nested_mod.nested_complete reads it) is stored
    first = empty.nested[0]
    inner = tmp_path / "runs" / first.run_id / nested_mod.INNER_DIR
    inner.mkdir(parents=True)
    (inner / "epochs.npz").write_bytes(b"")
    (inner / "config.json").write_text(json.dumps({"n_groups": nested_mod.INNER_GROUPS,
                                                   "n_fits": 1}))
    again = plan.make_plan(synthetic, "cpu", runs_dir=tmp_path / "runs")
    assert not any(n.stored for n in again.nested)  # an epochs.npz that does not read
    np.savez(inner / "epochs.npz", pred=np.zeros((1, 2, 24), np.int8))
    again = plan.make_plan(synthetic, "cpu", runs_dir=tmp_path / "runs")
    assert [n.stored for n in again.nested] == [True] + [False] * (len(again.nested) - 1)


def test_the_plan_lists_the_leave_one_dataset_out_results(synthetic, tmp_path, monkeypatch):
    """Notebook 13's results: every LODO model with every seed (logistic regression once), costed
    as a share of the LOSO run by the samples trained, stored once its four files exist, read
    and agree."""
    timings = plan._stored_timings(RUNS)
    monkeypatch.setattr(plan, "_stored_timings", lambda runs_dir: timings)
    empty = plan.make_plan(synthetic, "cpu", runs_dir=tmp_path / "runs")
    assert [(n.config, n.seed) for n in empty.lodo] == [
        (experiments.lodo_config(name, "cpu"), s) for name, (model, _) in
        experiments.LODO_MODELS.items() for s in ([0] if model == "logreg" else plan.SEEDS)]
    assert all(n.run_id.startswith(f"lodo-{n.config.model}-cpu-s{n.seed}-") for n in empty.lodo)
    assert empty.missing_lodo == empty.lodo
    share = plan.lodo_fraction(synthetic.table, synthetic.table["subject"].nunique())
    assert 0 < share < 1
    htnet = empty.lodo[0]
    run = next(m for m in empty.needs if m.config == htnet.config and m.seed == htnet.seed)
    assert htnet.seconds == pytest.approx(share * run.seconds)
    assert htnet.basis.startswith(f"{share:.3g} x the LOSO run")
    assert f"missing {htnet.run_id} (13 leave one dataset out: HTNet)" in empty.summary()

    stored = tmp_path / "tables" / "lodo" / htnet.run_id  # beside the runs folder
    stored.mkdir(parents=True)
    # what run_lodo writes, in form: config.json (written last), predictions, curves, metrics
    (stored / "config.json").write_text(json.dumps({"lodo_id": htnet.run_id, "n_samples": 2,
                                                    "epochs": 3}))
    (stored / "predictions.csv").write_text("dataset,subject,sample,label,honest\n"
                                            "casme2,s1,a,0,1\ncasme2,s1,b,2,2\n")
    np.savez(stored / "epochs.npz", pred=np.zeros((3, 2), np.int8))
    assert set(lodo_mod.LODO_FILES) - {"metrics.json"} == {p.name for p in stored.iterdir()}
    assert not plan.make_plan(synthetic, "cpu", runs_dir=tmp_path / "runs").lodo[0].stored
    (stored / "metrics.json").write_text("{}")
    again = plan.make_plan(synthetic, "cpu", runs_dir=tmp_path / "runs")
    assert [n.stored for n in again.lodo] == [True] + [False] * 9
    np.savez(stored / "epochs.npz", pred=np.zeros((3, 5), np.int8))  # 5 samples, 2 rows
    assert not plan.make_plan(synthetic, "cpu", runs_dir=tmp_path / "runs").lodo[0].stored
    assert again.lodo[0] not in again.missing_jobs


def test_each_notebook_prints_one_progress_line_and_the_total_at_the_end(synthetic_root,
                                                                         monkeypatch, capsys):
    """``[i/n] name  time`` after each notebook (with the time so far from the second on) and
    the total at the end; the executor is stubbed and takes 2 s of a stubbed clock each."""
    monkeypatch.setenv("HTNET_DATA", str(synthetic_root))
    monkeypatch.setenv("HTNET_TRAIN_PROFILES", "none")
    clock = iter(range(0, 1000))
    monkeypatch.setattr(reproduce.time, "perf_counter", lambda: 2.0 * next(clock))
    executed = []
    monkeypatch.setattr(reproduce, "execute", lambda nb, out, params, **kw: executed.append(nb))
    assert reproduce.main(["--profile", "smoke", "--stored-only", "--only", "01", "02", "03"]) == 0
    out = capsys.readouterr().out.splitlines()
    names = [nb.stem for nb in executed]
    assert len(names) == 3 and "papermill" not in "\n".join(out)
    start = out.index(next(line for line in out if line.startswith("executing 3 notebook(s)")))
    assert out[start + 1:start + 5] == [f"[1/3] {names[0]}  2 s",
                                        f"[2/3] {names[1]}  2 s (4 s so far)",
                                        f"[3/3] {names[2]}  2 s (6 s so far)",
                                        "3 notebook(s) executed in 8 s"]


def test_durations_read_as_seconds_minutes_and_hours():
    assert [reproduce.duration(s) for s in (0, 12.4, 59.6, 185, 3600, 7440)] == [
        "0 s", "12 s", "1 min 00 s", "3 min 05 s", "1 h 00 min", "2 h 04 min"]


def test_a_notebook_runs_without_the_kernel_transport_warning(tmp_path, capfd):
    src = _notebook(tmp_path / "nb.ipynb", "print(x)")
    reproduce.execute(src, tmp_path / "out.ipynb", {"x": 1}, cwd=tmp_path)
    captured = capfd.readouterr()
    assert "without encryption" not in captured.err + captured.out
    assert "WARNING" not in captured.err
