"""Trust at the edges: an apex that shows no face, a damaged stored run, a full disk, a model
folder of another configuration, an output path that cannot be written, a closed pipe, a
``--json`` error, and the small cases of the pairs CSV. Each answers with one line, the exit
status of docs/architecture.md, and nothing lost or half-written."""

from __future__ import annotations

import csv
import errno
import io
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest

from htnetlib import predict
from htnetlib.cli import main
from htnetlib.cli import predict as cli_predict
from htnetlib.config import profile_config
from htnetlib.data import read_image
from htnetlib.data import synthetic as syn
from htnetlib.data.frames import picture_problem
from htnetlib.io import atomic_write
from htnetlib.training import loso, store

ROOT = Path(__file__).resolve().parents[1]
FULL = "No space left on device"


def bgr(image: np.ndarray) -> np.ndarray:
    return cv2.cvtColor(image, cv2.COLOR_RGB2BGR)


def htnet(argv: list[str], capsys) -> tuple[int, str, str]:
    code = main(argv)
    out, err = capsys.readouterr()
    return code, out, err


def error_line(err: str) -> str:
    """The one error line of ``err`` (no traceback, no other error line)."""
    lines = [line for line in err.splitlines() if line.startswith("htnet: error: ")]
    assert "Traceback" not in err and len(lines) == 1, err
    return lines[0]


def disk_full(*args, **kwargs):
    raise OSError(errno.ENOSPC, FULL)  # as a write to a full disk: no file name


@pytest.fixture(scope="module")
def model_dir(synthetic, tmp_path_factory) -> Path:
    """A smoke model fitted on the synthetic release."""
    folder = tmp_path_factory.mktemp("edge-models") / "smoke"
    predict.fitted_model(synthetic, "smoke", 0, model_dir=folder)
    return folder


@pytest.fixture(scope="module")
def frames(tmp_path_factory) -> dict[str, Path]:
    """A moving pair of the astronaut face, and apex frames that show no face."""
    folder = tmp_path_factory.mktemp("edge-frames")
    pair = syn.make_pair(2, amplitude=1.5, seed=4, noise=1.0)
    onset, apex = bgr(pair.onset), bgr(pair.apex)
    noise = np.random.default_rng(0).integers(0, 256, apex.shape, dtype=np.uint8)
    ramp = cv2.cvtColor(np.tile(np.linspace(0, 255, apex.shape[1]).astype(np.uint8),
                                (apex.shape[0], 1)), cv2.COLOR_GRAY2BGR)
    images = {"onset": onset, "apex": apex, "black": np.zeros_like(apex), "noise": noise,
              "ramp": ramp}
    files = {name: folder / f"{name}.png" for name in images}
    for name, image in images.items():
        cv2.imwrite(str(files[name]), image)
    files["apex16"] = folder / "apex16.png"  # 16 bits per channel, holding 0..255
    cv2.imwrite(str(files["apex16"]), apex.astype(np.uint16))
    files["apex12"] = folder / "apex12.png"  # 16 bits per channel, holding a 12-bit range
    cv2.imwrite(str(files["apex12"]), apex.astype(np.uint16) * 16)
    files["flat16"] = folder / "flat16.png"
    cv2.imwrite(str(files["flat16"]), np.full(apex.shape, 300, np.uint16))
    return files


# --------------------------------------------------------------------------- the apex


@pytest.mark.parametrize("method", ["tvl1", "farneback"])
def test_an_all_black_apex_is_refused_naming_the_file_exit_3(model_dir, frames, capsys, method):
    code, out, err = htnet(["predict", "--model", str(model_dir), "--onset", str(frames["onset"]),
                            "--apex", str(frames["black"]), "--flow-method", method], capsys)
    assert (code, out) == (3, "")
    assert error_line(err) == (f"htnet: error: {frames['black']}: holds no picture of a face: "
                               "grey levels 0..0, contrast 0.0 below 4")


def test_an_apex_of_random_noise_is_refused_exit_3(model_dir, frames, capsys):
    code, out, err = htnet(["predict", "--model", str(model_dir), "--onset", str(frames["onset"]),
                            "--apex", str(frames["noise"])], capsys)
    assert (code, out) == (3, "")
    line = error_line(err)
    assert line.startswith(f"htnet: error: {frames['noise']}: holds no picture of a face: "
                           "neighbouring pixels correlate ")
    assert line.endswith("below 0.5 (noise, not a photograph)")


def test_an_apex_that_is_a_picture_but_of_no_face_is_refused_exit_3(model_dir, frames, capsys):
    assert picture_problem(cv2.imread(str(frames["ramp"]))) is None  # contrast and structure
    code, out, err = htnet(["predict", "--model", str(model_dir), "--onset", str(frames["onset"]),
                            "--apex", str(frames["ramp"])], capsys)
    assert (code, out) == (3, "")
    assert error_line(err) == (f"htnet: error: {frames['ramp']}: no face found in the apex "
                               "frame (within the onset's face box)")


def test_the_good_pair_still_gets_an_answer(model_dir, frames, capsys):
    code, out, err = htnet(["predict", "--model", str(model_dir), "--onset", str(frames["onset"]),
                            "--apex", str(frames["apex"]), "--json"], capsys)
    assert code == 0, err
    assert json.loads(out)["label"] is not None


def test_a_16_bit_image_is_scaled_by_its_real_range(frames):
    eight = read_image(frames["apex"])
    assert np.array_equal(read_image(frames["apex16"]), eight)  # 0..255 in 16 bits: as is
    twelve = read_image(frames["apex12"]).astype(int)  # a 12-bit range: scaled to 8 bits
    assert np.abs(twelve - eight).max() <= 1


def test_a_16_bit_pair_predicts_as_its_8_bit_copy(model_dir, frames):
    model = predict.Model.load(model_dir)
    p8 = model.predict(frames["onset"], frames["apex"])
    p16 = model.predict(frames["onset"], frames["apex16"])
    assert np.array_equal(p8, p16)


def test_a_16_bit_image_of_one_value_is_refused(model_dir, frames, capsys):
    code, _, err = htnet(["predict", "--model", str(model_dir), "--onset", str(frames["onset"]),
                          "--apex", str(frames["flat16"])], capsys)
    assert code == 3
    assert error_line(err) == (f"htnet: error: {frames['flat16']}: a 16-bit image of the "
                               "single value 300, no picture")


def sequence_folder(folder: Path, frames: dict, bad: str = "black") -> tuple[Path, Path]:
    """onset, a frame without a face (``bad``), the apex, the onset again: the bad frame
    differs most from the onset, so a spotter that does not skip it takes it as the apex."""
    folder.mkdir(parents=True, exist_ok=True)
    order = ["onset", bad, "apex", "onset"]
    for k, name in enumerate(order):
        shutil.copy(frames[name], folder / f"{k}.png")
    return folder, folder / "1.png"


@pytest.mark.parametrize("bad", ["black", "noise", "ramp"])
def test_a_sequence_skips_a_frame_without_a_face_says_so_and_never_takes_it_as_apex(
        model_dir, frames, tmp_path, capsys, bad):
    folder, skipped = sequence_folder(tmp_path / "seq", frames, bad)
    code, out, err = htnet(["predict", "--model", str(model_dir), "--sequence", str(folder),
                            "--json"], capsys)
    assert code == 0, err
    answer = json.loads(out)
    assert answer["apex_frame"]["skipped"] == [str(skipped)]
    assert answer["apex_frame"]["file"] != str(skipped)
    assert answer["apex_frame"]["file"] == str(folder / "2.png")
    assert f"htnet: warning: {skipped}: skipped, " in err


def test_a_sequence_without_a_face_after_the_onset_is_refused(model_dir, frames, tmp_path,
                                                              capsys):
    folder = tmp_path / "seq"
    folder.mkdir()
    for k, name in enumerate(["onset", "black", "noise"]):
        shutil.copy(frames[name], folder / f"{k}.png")
    code, out, err = htnet(["predict", "--model", str(model_dir), "--sequence", str(folder)],
                           capsys)
    assert (code, out) == (3, "")
    assert error_line(err).startswith(f"htnet: error: {folder / '0.png'}: no frame of the "
                                      "sequence but the onset shows a face")


def test_a_batch_row_with_a_bad_apex_is_an_error_row_and_the_others_answer(model_dir, frames,
                                                                           tmp_path, capsys):
    pairs = tmp_path / "pairs.csv"
    pairs.write_text(f"onset,apex\n{frames['onset']},{frames['apex']}\n"
                     f"{frames['onset']},{frames['black']}\n{frames['onset']},{frames['noise']}\n")
    out_csv = tmp_path / "answers.csv"
    code, _, err = htnet(["predict", "--model", str(model_dir), "--pairs", str(pairs), "--csv",
                          str(out_csv)], capsys)
    assert code == 3
    rows = list(csv.DictReader(out_csv.open()))
    assert rows[0]["error"] == "" and rows[0]["label"]
    assert rows[1]["label"] == "" and rows[1]["error"].startswith(
        f"{frames['black']}: holds no picture of a face")
    assert rows[2]["error"].startswith(f"{frames['noise']}: holds no picture of a face")
    assert "2 of 3 item(s) failed" in err


# --------------------------------------------------------------------------- the pairs CSV


def test_a_pairs_csv_with_a_byte_order_mark_is_read(model_dir, frames, tmp_path, capsys):
    pairs = tmp_path / "excel.csv"
    pairs.write_bytes(b"\xef\xbb\xbf" + f"onset,apex\r\n{frames['onset']},{frames['apex']}\r\n"
                      .encode())
    code, out, err = htnet(["predict", "--model", str(model_dir), "--pairs", str(pairs),
                            "--json"], capsys)
    assert code == 0, err
    assert json.loads(out.splitlines()[0])["error"] is None


def test_an_empty_cell_or_a_short_row_is_named_by_its_row_number(model_dir, frames, tmp_path,
                                                                 capsys):
    pairs = tmp_path / "pairs.csv"
    pairs.write_text(f"onset,apex\n{frames['onset']},{frames['apex']}\n{frames['onset']},\n"
                     f"{frames['onset']}\n")
    code, out, _ = htnet(["predict", "--model", str(model_dir), "--pairs", str(pairs), "--json"],
                         capsys)
    rows = [json.loads(line) for line in out.splitlines()]
    assert code == 3 and [r["error"] is None for r in rows] == [True, False, False]
    for row, number in zip(rows[1:], (3, 4)):
        assert row["error"] == (f"{pairs}: row {number}: no apex file named (an empty cell or a "
                                "short row)")
        assert row["files"] == {"onset": str(frames["onset"]), "apex": ""}


def test_a_directory_as_a_pairs_csv_is_called_a_directory(model_dir, tmp_path, capsys):
    code, _, err = htnet(["predict", "--model", str(model_dir), "--pairs", str(tmp_path)], capsys)
    assert code == 3
    assert error_line(err) == f"htnet: error: {tmp_path}: is a directory, not a CSV file of pairs"


# --------------------------------------------------------------------------- output paths


def test_csv_out_that_is_a_directory_is_refused_before_any_work(model_dir, frames, tmp_path,
                                                                capsys, monkeypatch):
    pairs = tmp_path / "pairs.csv"
    pairs.write_text(f"onset,apex\n{frames['onset']},{frames['apex']}\n")
    monkeypatch.setattr(cli_predict, "answer_one", lambda *a, **k: pytest.fail("worked"))
    code, out, err = htnet(["predict", "--model", str(model_dir), "--pairs", str(pairs),
                            "--csv", str(tmp_path)], capsys)
    assert (code, out) == (2, "")
    assert error_line(err) == (f"htnet: error: --csv {tmp_path}: is a directory; name a file "
                               "to write the answers to")


def test_csv_out_in_a_read_only_folder_is_refused_before_any_work(model_dir, frames, tmp_path,
                                                                  capsys, monkeypatch):
    pairs = tmp_path / "pairs.csv"
    pairs.write_text(f"onset,apex\n{frames['onset']},{frames['apex']}\n")
    locked = tmp_path / "locked"
    locked.mkdir()
    real_access = os.access
    monkeypatch.setattr(os, "access", lambda p, mode: Path(p) != locked and real_access(p, mode))
    monkeypatch.setattr(cli_predict, "answer_one", lambda *a, **k: pytest.fail("worked"))
    code, _, err = htnet(["predict", "--model", str(model_dir), "--pairs", str(pairs), "--csv",
                          str(locked / "a.csv")], capsys)
    assert code == 4
    assert error_line(err) == (f"htnet: error: --csv {locked / 'a.csv'}: the folder {locked} "
                               "is not writable")


def test_fit_out_over_another_model_refuses_and_says_what_is_there(model_dir, synthetic_root,
                                                                   tmp_path, capsys):
    from tests.test_calibration import fake_run

    folder = tmp_path / "m"
    shutil.copytree(model_dir, folder)
    meta = json.loads((folder / predict.META).read_text())
    predict.calibrate(folder, [fake_run("a", meta, seed=1), fake_run("b", meta, seed=2)])
    assert predict.Model.load(folder).calibration is not None
    before = {p.name: p.read_bytes() for p in folder.iterdir()}
    code, out, err = htnet(["fit", "--profile", "smoke", "--seed", "1", "--data",
                            str(synthetic_root), "--out", str(folder)], capsys)
    assert (code, out) == (2, "")
    line = error_line(err)
    assert line.startswith(f"htnet: error: --out {folder} holds another model (htnet, profile "
                           "smoke, seed 0, data ")
    assert line.endswith("; seed differs); --refit replaces it, or choose another --out")
    assert {p.name: p.read_bytes() for p in folder.iterdir()} == before


# --------------------------------------------------------------------------- a full disk


def test_fit_onto_a_full_disk_is_one_line_exit_4_and_leaves_no_folder(synthetic_root, tmp_path,
                                                                      capsys, monkeypatch):
    monkeypatch.setattr(Path, "write_bytes", disk_full)
    out = tmp_path / "models" / "m"
    code, stdout, err = htnet(["fit", "--profile", "smoke", "--data", str(synthetic_root),
                               "--out", str(out)], capsys)
    assert (code, stdout) == (4, "")
    assert error_line(err) == f"htnet: error: {out / 'model.safetensors'}: {FULL}"
    assert not out.exists() and list((tmp_path / "models").iterdir()) == []


def test_a_refit_onto_a_full_disk_keeps_the_model_that_was_there(model_dir, synthetic,
                                                                 tmp_path, monkeypatch):
    from tests.test_calibration import fake_run

    folder = tmp_path / "m"
    shutil.copytree(model_dir, folder)
    meta = json.loads((folder / predict.META).read_text())
    predict.calibrate(folder, [fake_run("a", meta, seed=1), fake_run("b", meta, seed=2)])
    record = json.loads((folder / predict.CALIBRATION).read_text())
    record["config"]["dim"] += 8  # another configuration's: a new model would drop it
    (folder / predict.CALIBRATION).write_text(json.dumps(record))
    before = {p.name: p.read_bytes() for p in folder.iterdir()}
    monkeypatch.setattr(Path, "write_bytes", disk_full)
    with pytest.raises(OSError) as info:
        predict.fitted_model(synthetic, "smoke", 1, model_dir=folder, refit=True)
    assert info.value.filename == str(folder.absolute() / "model.safetensors")
    assert {p.name: p.read_bytes() for p in folder.iterdir()} == before
    assert [p.name for p in tmp_path.iterdir()] == ["m"]  # no temporary sibling left


def test_an_atomic_write_onto_a_full_disk_names_the_target_and_leaves_nothing(tmp_path):
    target = tmp_path / "metrics.json"
    with pytest.raises(OSError) as info:
        atomic_write(target, disk_full)
    assert info.value.errno == errno.ENOSPC and info.value.filename == str(target)
    assert list(tmp_path.iterdir()) == []


def test_calibrate_onto_a_full_disk_names_calibration_json_exit_4(model_dir, tmp_path, capsys,
                                                                  monkeypatch):
    from tests.test_calibration import fake_run

    folder = tmp_path / "m"
    shutil.copytree(model_dir, folder)
    meta = json.loads((folder / predict.META).read_text())
    runs = {str(tmp_path / n): fake_run(n, meta, seed=s) for n, s in (("a", 1), ("b", 2))}
    monkeypatch.setattr("htnetlib.training.store.load_run", lambda p: runs[str(p)])
    real = Path.write_text
    monkeypatch.setattr(Path, "write_text", lambda self, *a, **k: disk_full() if
                        self.name.startswith(".calibration.json") else real(self, *a, **k))
    code, _, err = htnet(["calibrate", "--model", str(folder), "--runs", *runs], capsys)
    assert code == 4
    assert error_line(err) == f"htnet: error: {folder / 'calibration.json'}: {FULL}"
    assert not (folder / "calibration.json").exists()
    assert not [p for p in folder.iterdir() if p.name.startswith(".")]


def test_train_onto_a_full_disk_names_the_fold_file_exit_4(synthetic_root, tmp_path, capsys,
                                                           monkeypatch):
    monkeypatch.setattr(np, "savez", disk_full)
    runs = tmp_path / "runs"
    code, _, err = htnet(["train", "--profile", "smoke", "--data", str(synthetic_root), "--out",
                          str(runs), "--trainer", "loop", "--set", "max_folds=1", "--set",
                          "epochs=1"], capsys)
    assert code == 4
    line = error_line(err)
    assert line.startswith(f"htnet: error: {runs}/") and line.endswith(f"/folds/00.npz: {FULL}")
    (run,) = runs.iterdir()
    assert not [p for p in run.rglob(".*") if p.name != ".lock"]  # no temporary file left


def test_predict_csv_onto_a_full_disk_names_out_exit_4(model_dir, frames, tmp_path, capsys,
                                                       monkeypatch):
    pairs = tmp_path / "pairs.csv"
    pairs.write_text(f"onset,apex\n{frames['onset']},{frames['apex']}\n")
    out_csv = tmp_path / "answers.csv"
    real = Path.write_text
    monkeypatch.setattr(Path, "write_text", lambda self, *a, **k: disk_full() if
                        self.name.startswith(".answers.csv") else real(self, *a, **k))
    code, _, err = htnet(["predict", "--model", str(model_dir), "--pairs", str(pairs), "--csv",
                          str(out_csv)], capsys)
    assert code == 4
    assert error_line(err) == f"htnet: error: {out_csv}: {FULL}"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["pairs.csv"]


def test_reproduce_onto_a_full_disk_names_the_notebook_exit_4(tmp_path, monkeypatch, capsys):
    import nbformat
    import papermill

    from htnetlib.cli import reproduce

    nb = tmp_path / "01_tiny.ipynb"
    nbformat.write(nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell("1")]), str(nb))
    monkeypatch.setattr(papermill, "execute_notebook", disk_full)
    out = tmp_path / "out" / "01_tiny.ipynb"
    assert reproduce.run_one(nb, out, "smoke", False) is False
    err = capsys.readouterr().err
    assert err == (f"reproduce: error: 01_tiny.ipynb failed ({out}: {FULL}); the committed "
                   "notebook is unchanged\n")
    assert sorted(p.name for p in tmp_path.rglob("*")) == ["01_tiny.ipynb", "out"]


# --------------------------------------------------------------------------- stored runs


@pytest.fixture(scope="module")
def stored_run(synthetic, tmp_path_factory) -> Path:
    config = profile_config("smoke", "htnet")
    return loso.run_loso(synthetic, config, seed=0, profile="smoke", trainer="loop",
                         runs_dir=tmp_path_factory.mktemp("edge-runs") / "runs", progress=False)


def copy_run(run: Path, tmp_path: Path) -> Path:
    target = tmp_path / "runs" / run.name
    shutil.copytree(run, target)
    return target


def truncate(path: Path, keep: float = 0.6) -> None:
    data = path.read_bytes()
    path.write_bytes(data[: int(len(data) * keep)])


def test_a_truncated_predictions_csv_is_not_a_stored_run(stored_run, tmp_path):
    run = copy_run(stored_run, tmp_path)
    assert store.is_complete(run)
    truncate(run / "predictions.csv")
    problem = store.damage(run)
    assert problem.startswith(f"{run / 'predictions.csv'}: ")
    assert not store.is_complete(run) and not store.reusable(run)


@pytest.mark.parametrize("name, edit, shown", [
    ("epochs.npz", truncate, "not a readable .npz file"),
    ("metrics.json", lambda p: p.write_text(p.read_text().replace(
        '"uf1": 0.', '"uf1": NaN, "x": 0.', 1)), "is not a finite number"),
    ("config.json", lambda p: p.write_text(json.dumps(
        {**json.loads(p.read_text()), "n_samples": 5})), "records 5 samples"),
])
def test_every_file_of_a_stored_run_must_parse_and_agree(stored_run, tmp_path, name, edit, shown):
    run = copy_run(stored_run, tmp_path)
    edit(run / name)
    problem = store.damage(run)
    assert problem is not None and shown in problem, problem
    assert not store.is_complete(run)


def test_grid_status_and_dry_run_never_count_a_damaged_run(synthetic, synthetic_root, tmp_path,
                                                           capsys):
    from htnetlib.study import plan

    first = plan.make_plan(synthetic, "smoke", runs_dir=tmp_path / "none").needs[0]
    runs = tmp_path / "runs"
    run = loso.run_loso(synthetic, first.config, seed=first.seed, profile="smoke",
                        runs_dir=runs, trainer="loop", progress=False)
    dry = ["grid", "--profile", "smoke", "--data", str(synthetic_root), "--out", str(runs),
           "--dry-run"]
    status = ["grid", "--profile", "smoke", "--data", str(synthetic_root), "--out", str(runs),
              "--state", str(tmp_path / "state"), "--status"]
    assert main(dry) == 0 and f"  {run.name} " not in capsys.readouterr().out
    assert main(status) == 0 and "  loso   1 stored, " in capsys.readouterr().out
    truncate(run / "predictions.csv")
    assert not plan.make_plan(synthetic, "smoke", runs_dir=runs).needs[0].stored
    assert main(dry) == 0 and f"  {run.name} " in capsys.readouterr().out
    assert main(status) == 0 and "  loso   0 stored, " in capsys.readouterr().out


def test_train_sets_a_damaged_predictions_csv_aside_and_trains_the_run_again(
        stored_run, synthetic_root, tmp_path, capsys):
    import shlex

    run = copy_run(stored_run, tmp_path)
    truncate(run / "predictions.csv")
    command = json.loads((run / "config.json").read_text())["command"]
    argv = shlex.split(command)[1:] + ["--trainer", "loop", "--data", str(synthetic_root),
                                       "--out", str(run.parent)]
    code, out, err = htnet(argv, capsys)
    assert code == 0, err
    warnings = [line for line in err.splitlines() if line.startswith("htnet: warning")]
    assert len(warnings) == 1 and warnings[0].startswith(
        f"htnet: warning: {run / 'predictions.csv'}: "), err
    assert "moved to predictions.csv.corrupt; training the run again" in warnings[0]
    assert (run / "predictions.csv.corrupt").is_file() and store.is_complete(run)
    assert (run / "predictions.csv").read_text() == (stored_run / "predictions.csv").read_text()


def test_evaluate_names_a_truncated_predictions_csv_exit_3(stored_run, tmp_path, capsys):
    run = copy_run(stored_run, tmp_path)
    truncate(run / "predictions.csv")
    code, out, err = htnet(["evaluate", str(run)], capsys)
    assert (code, out) == (3, "")
    assert error_line(err).startswith(f"htnet: error: {run / 'predictions.csv'}: ")


def test_evaluate_recomputes_nan_metrics_and_says_so(stored_run, tmp_path, capsys):
    run = copy_run(stored_run, tmp_path)
    assert main(["evaluate", str(run)]) == 0
    clean = capsys.readouterr().out
    metrics = json.loads((run / "metrics.json").read_text())
    metrics["honest"]["full"]["uf1"] = float("nan")
    (run / "metrics.json").write_text(json.dumps(metrics))
    code, out, err = htnet(["evaluate", str(run)], capsys)
    assert code == 0 and out == clean
    assert (f"htnet: warning: {run / 'metrics.json'}: honest.full.uf1 is not a finite number; "
            "every score recomputed from predictions.csv") in err


# --------------------------------------------------------------------------- small cases


def test_a_json_error_is_also_one_json_object_on_stdout(tmp_path, frames, capsys):
    missing = tmp_path / "nomodel"
    code, out, err = htnet(["predict", "--model", str(missing), "--onset", str(frames["onset"]),
                            "--apex", str(frames["apex"]), "--json"], capsys)
    assert code == 3
    message = error_line(err)[len("htnet: error: "):]
    assert json.loads(out) == {"error": message, "file": str(missing)}
    assert out.count("\n") == 1


def test_a_json_error_about_an_apex_names_its_file(model_dir, frames, capsys):
    code, out, _ = htnet(["predict", "--model", str(model_dir), "--onset", str(frames["onset"]),
                          "--apex", str(frames["black"]), "--json"], capsys)
    assert code == 3 and json.loads(out)["file"] == str(frames["black"])


def test_a_json_error_about_a_setting_has_no_file(model_dir, frames, capsys):
    code, out, err = htnet(["predict", "--model", str(model_dir), "--flow", str(frames["apex"]),
                            "--json"], capsys)
    assert code == 2
    assert json.loads(out) == {"error": error_line(err)[len("htnet: error: "):], "file": None}


class ClosedPipe(io.StringIO):
    def write(self, text):
        raise BrokenPipeError(errno.EPIPE, "Broken pipe")

    def flush(self):
        raise BrokenPipeError(errno.EPIPE, "Broken pipe")


def test_a_closed_pipe_ends_quietly_with_141(monkeypatch, capsys):
    monkeypatch.setattr(sys, "stdout", ClosedPipe())
    monkeypatch.setattr("htnetlib.cli.app._evaluate", lambda args: print("row") or 0)
    assert main(["evaluate", "x"]) == 141
    assert capsys.readouterr().err == ""
    monkeypatch.setattr(sys, "stdout", ClosedPipe())  # an error still goes to stderr
    monkeypatch.undo()
    assert main(["evaluate", "/nonexistent/run"]) == 3
    assert error_line(capsys.readouterr().err)


def test_grid_dry_run_into_a_closed_pipe_prints_nothing(synthetic_root, tmp_path):
    htnet_bin = Path(sys.executable).parent / "htnet"
    proc = subprocess.Popen([str(htnet_bin), "grid", "--profile", "smoke", "--data",
                             str(synthetic_root), "--out", str(tmp_path / "runs"), "--dry-run"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    proc.stdout.close()  # the reader leaves at once, as | head -0 would
    err = proc.stderr.read().decode()
    assert proc.wait(timeout=120) == 141 and err == ""


def test_reproduce_names_the_variable_it_reads_not_an_option_it_lacks(tmp_path, monkeypatch,
                                                                      capsys):
    from htnetlib.cli import reproduce

    monkeypatch.setenv("HTNET_DATA", str(tmp_path / "nodata"))
    assert reproduce.main(["--plan"]) == 3
    err = capsys.readouterr().err
    assert err == (f"reproduce: error: data root {tmp_path / 'nodata'} does not exist; set "
                   "HTNET_DATA to the release folder (htnet data fetch --dest DIR makes one)\n")
    assert "--data" not in err.replace("--dest", "")
