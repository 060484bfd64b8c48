"""``htnet fit`` / ``htnet predict`` and :class:`htnetlib.predict.Model` (htnetlib/predict.py).

A smoke model is fitted once on the synthetic release; the checks: the fit is train_fold's
training, the model folder round-trips, damaged or mismatched folders are refused by name,
``--flow`` equals the network on regions_mod.network_inputs, and every user error is one line.
"""

import argparse
import dataclasses
import json
import os
import shutil
import sys
import time
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch

from htnetlib import predict
from htnetlib.cli import predict as cli_predict
from htnetlib.training import fold
from htnetlib.data import regions as regions_mod
from htnetlib.training import store
from htnetlib.data import synthetic as syn
from htnetlib.config import PROFILES, ConfigError
from htnetlib.data import LABELS, Composite, DataError
from htnetlib.predict import META, WEIGHTS, Model


def bgr(image: np.ndarray) -> np.ndarray:
    return cv2.cvtColor(image, cv2.COLOR_RGB2BGR)


@pytest.fixture(scope="module")
def smoke_dir(synthetic, tmp_path_factory) -> Path:
    """A smoke model fitted once on the synthetic release."""
    folder = tmp_path_factory.mktemp("models") / "smoke"
    model, fitted = predict.fitted_model(synthetic, "smoke", 0, model_dir=folder)
    assert fitted and model.path == folder
    return folder


@pytest.fixture(scope="module")
def smoke_model(smoke_dir) -> Model:
    return Model.load(smoke_dir)


@pytest.fixture(scope="module")
def pair_files(tmp_path_factory) -> tuple[Path, Path]:
    """A synthetic surprise (brows up, jaw drop) on the astronaut face, as two PNG files."""
    folder = tmp_path_factory.mktemp("pair")
    pair = syn.make_pair(2, seed=0)
    paths = folder / "onset.png", folder / "apex.png"
    for path, image in zip(paths, (pair.onset, pair.apex)):
        cv2.imwrite(str(path), bgr(image))
    return paths


def copy_model(src: Path, dst: Path) -> Path:
    shutil.copytree(src, dst)
    return dst


def edit_meta(folder: Path, change) -> None:
    meta = json.loads((folder / META).read_text())
    change(meta)
    (folder / META).write_text(json.dumps(meta))


# --------------------------------------------------------------------------- fit


@pytest.mark.parametrize("changes", [{}, {"class_weights": "balanced", "mirror": True,
                                          "lr_schedule": "cosine"}], ids=["official", "all three"])
def test_the_fit_is_train_folds_training(synthetic, changes):
    """htnet fit trains exactly what a LOSO fold trains (same loop, seed and data), with every
    training choice htnet train takes."""
    import dataclasses

    config = dataclasses.replace(PROFILES["smoke"], **changes)
    x = regions_mod.network_inputs(synthetic, config)
    xm = regions_mod.network_inputs(synthetic, config, mirror=True) if config.mirror else None
    y = synthetic.table["label"].to_numpy()
    res = fold.train_fold(config, x, y, x[:5], y[:5], seed=7, device=torch.device("cpu"),
                          x_train_mirror=xm)
    model = predict.fit(synthetic, config, seed=7, device="cpu")
    logits = model.logits(x[:5])
    np.testing.assert_allclose(logits, res.logits, rtol=1e-5, atol=1e-6)
    assert model.meta["training"]["final_train_loss"] == pytest.approx(res.train_loss[-1],
                                                                        abs=1e-6)
    assert model.meta["config"] == config.to_dict()


def test_model_json_records_what_the_model_reads(smoke_dir, synthetic):
    meta = json.loads((smoke_dir / META).read_text())
    assert meta["profile"] == "smoke" and meta["seed"] == 0
    assert meta["config"] == PROFILES["smoke"].to_dict()
    assert meta["data_fingerprint"] == store.data_fingerprint(synthetic)
    assert meta["classes"] == {"0": "negative", "1": "positive", "2": "surprise"}
    assert meta["input"]["channels"] == ["strain", "v", "u"]
    assert meta["input"]["map_size"] == 28 and meta["input"]["value_range"] == [0, 255]
    assert meta["input"]["regions"] == "official"
    assert meta["n_samples"] == len(synthetic)
    assert {"torch", "numpy", "safetensors"} <= set(meta["versions"])
    assert meta["git_commit"]
    assert meta["weights"]["sha256"] == predict.sha256(smoke_dir / WEIGHTS)
    assert sorted(p.name for p in smoke_dir.iterdir()) == [META, WEIGHTS]


def test_a_stored_model_is_reused_and_refit_on_request(synthetic, smoke_dir, tmp_path):
    folder = copy_model(smoke_dir, tmp_path / "m")
    _, fitted = predict.fitted_model(synthetic, "smoke", 0, model_dir=folder)
    assert not fitted
    with pytest.raises(ConfigError, match=r"holds another model \(htnet, profile smoke, seed 0, "
                       r"data \w+; seed differs\); --refit replaces it"):
        predict.fitted_model(synthetic, "smoke", 1, model_dir=folder)  # another seed
    assert Model.load(folder).meta["seed"] == 0  # left as it was
    _, fitted = predict.fitted_model(synthetic, "smoke", 1, model_dir=folder, refit=True)
    assert fitted and Model.load(folder).meta["seed"] == 1


def test_fit_refuses_an_output_folder_with_other_files(synthetic, tmp_path):
    (tmp_path / "notes.txt").write_text("mine")
    with pytest.raises(ConfigError, match="notes.txt"):
        predict.fitted_model(synthetic, "smoke", 0, model_dir=tmp_path)


def test_fit_refuses_a_tracked_folder_in_the_repository(synthetic):
    inside = predict.ROOT / "results" / "a-model-that-must-not-exist"
    with pytest.raises(ConfigError, match="not git-ignored"):
        predict.fitted_model(synthetic, "smoke", 0, model_dir=inside)
    assert not inside.exists()


def test_the_default_folder_is_git_ignored():
    folder = predict.default_model_dir("cpu", 0, "abc123")
    assert folder == predict.ROOT / ".cache" / "models" / "cpu-s0-abc123"
    predict.check_out_dir(folder)  # no error: .cache/ is ignored


# --------------------------------------------------------------------------- predict


def test_predict_runs_on_a_synthetic_pair(smoke_model):
    pair = syn.make_pair(2, seed=0)
    probs, maps = smoke_model.predict(bgr(pair.onset), bgr(pair.apex), return_maps=True)
    assert probs.shape == (3,) and probs.sum() == pytest.approx(1.0)
    assert maps["onset_face"].shape == maps["apex_face"].shape == (224, 224, 3)
    assert maps["flow"].shape == (224, 224, 2) and maps["strain"].shape == (224, 224)
    assert maps["map"].shape == maps["input"].shape == (28, 28, 3)
    assert maps["map"].dtype == np.uint8
    assert maps["landmarks_found"] is True and maps["centres"].shape == (4, 2)
    # the map is the release's channel order: strain first, u last
    from htnetlib.data.flow import flow_to_map
    np.testing.assert_array_equal(maps["map"], flow_to_map(maps["flow"])[..., ::-1])
    np.testing.assert_allclose(smoke_model.predict_map(maps["map"], maps["apex_face"]), probs)


def test_save_and_load_give_identical_logits(smoke_model, synthetic, tmp_path):
    x = regions_mod.network_inputs(synthetic, smoke_model.config)
    again = Model.load(smoke_model.save(tmp_path / "copy"))
    np.testing.assert_array_equal(again.logits(x), smoke_model.logits(x))
    assert (tmp_path / "copy" / WEIGHTS).read_bytes()[:2] != b"PK"  # not a torch (zip) pickle


@pytest.mark.parametrize("i", [0, 5, 13])
def test_flow_input_equals_the_forward_pass_on_that_sample(smoke_model, synthetic, i):
    root, row = synthetic.root, synthetic.table.iloc[i]
    expected = predict.softmax(smoke_model.logits(regions_mod.network_inputs(synthetic,
                                                                      smoke_model.config)[i:i + 1]))
    got = smoke_model.predict_map(root / row.flow_path, root / row.apex_path)
    np.testing.assert_allclose(got, expected[0], rtol=1e-6)


def test_flow_input_equals_the_forward_pass_on_the_real_release(real):
    """On the official release (three samples of it, so MTCNN runs three times): a smoke
    network, --flow against regions_mod.network_inputs."""
    idx = [0, 200, 441]
    some = Composite(root=real.root, table=real.table.iloc[idx].reset_index(drop=True),
                     flows=real.flows[idx])
    model = predict.fit(some, dataclasses.replace(PROFILES["smoke"], epochs=1), profile="smoke")
    x = regions_mod.network_inputs(some, model.config)
    for k, row in enumerate(some.table.itertuples()):
        got = model.predict_map(real.root / row.flow_path, real.root / row.apex_path)
        np.testing.assert_allclose(got, predict.softmax(model.logits(x[k:k + 1]))[0], rtol=1e-6)


def test_a_sequence_finds_its_apex_and_predicts(smoke_model, tmp_path):
    seq = syn.make_sequence(2, n_frames=11, apex=6, seed=1)
    for k, frame in enumerate(seq.frames):
        cv2.imwrite(str(tmp_path / f"frame{k + 1}.png"), bgr(frame))  # frame10 after frame9
    files = predict.sequence_files(tmp_path)
    assert [f.name for f in files][-3:] == ["frame9.png", "frame10.png", "frame11.png"]
    probs, maps = smoke_model.predict_sequence(files, return_maps=True)
    assert probs.shape == (3,) and abs(maps["apex_index"] - seq.apex) <= 2


# --------------------------------------------------------------------------- damaged models


def test_a_corrupt_weights_file_is_refused_by_name(smoke_dir, tmp_path):
    folder = copy_model(smoke_dir, tmp_path / "m")
    data = (folder / WEIGHTS).read_bytes()
    (folder / WEIGHTS).write_bytes(data[: len(data) // 2])
    with pytest.raises(DataError, match=r"model\.safetensors: not a readable safetensors file"):
        Model.load(folder)
    (folder / WEIGHTS).write_bytes(b"not a safetensors file at all")
    with pytest.raises(DataError, match=r"model\.safetensors: not a readable safetensors"):
        Model.load(folder)
    damaged = bytearray(data)
    damaged[-1] ^= 0xFF  # a tensor value, not the header: only the SHA-256 notices
    (folder / WEIGHTS).write_bytes(bytes(damaged))
    with pytest.raises(DataError, match=r"model\.safetensors: SHA-256 differs"):
        Model.load(folder)
    (folder / WEIGHTS).unlink()
    with pytest.raises(DataError, match=r"model\.safetensors: missing"):
        Model.load(folder)


@pytest.mark.parametrize("change, error, shown", [
    (lambda m: m["config"].update(dim=16), DataError,
     r"model\.safetensors: does not fit the configuration in model\.json .*shape mismatch"),
    (lambda m: m["config"].update(block_repeats=[1, 1, 2]), DataError,
     r"model\.safetensors: .*tensor\(s\) missing"),
    (lambda m: m["config"].update(heads=0), DataError, r"model\.json: invalid.*heads=0"),
    (lambda m: m["config"].update(colour="blue"), DataError, r"model\.json: config is not"),
    (lambda m: m["config"].update(regions="whole"), DataError, r"model\.json: input\.regions"),
    (lambda m: m["input"].update(channels=["u", "v", "strain"]), DataError,
     r"model\.json: input\.channels"),
    (lambda m: m.pop("seed"), DataError, r"model\.json: missing field\(s\) seed"),
    (lambda m: m.update(format="other/9"), DataError, r"model\.json: format"),
], ids=["dim", "layers", "heads", "unknown-key", "regions", "channels", "no-seed", "format"])
def test_a_mismatched_model_json_is_refused_by_name(smoke_dir, tmp_path, change, error, shown):
    folder = copy_model(smoke_dir, tmp_path / "m")
    edit_meta(folder, change)
    with pytest.raises(error, match=shown) as info:
        Model.load(folder)
    assert "\n" not in str(info.value)


def test_a_model_json_that_is_not_json_is_refused(smoke_dir, tmp_path):
    folder = copy_model(smoke_dir, tmp_path / "m")
    (folder / META).write_text("{not json")
    with pytest.raises(DataError, match=r"model\.json: not readable as JSON"):
        Model.load(folder)
    with pytest.raises(DataError, match="no such model folder"):
        Model.load(tmp_path / "nowhere")


# --------------------------------------------------------------------------- command line


def htnet(argv: list[str], capsys) -> tuple[int, str, str]:
    """``htnet fit|predict ARGS`` through this module's parser functions, with htnet's one-line
    error (``htnet: error: ...``, exit 2 for settings, 3 for data) where cli.py is not wired."""
    parser = argparse.ArgumentParser(prog="htnet")
    sub = parser.add_subparsers(dest="command", required=True)
    cli_predict.add_fit_arguments(sub.add_parser("fit"))
    cli_predict.add_predict_arguments(sub.add_parser("predict"))
    args = parser.parse_args(argv)
    run = cli_predict.run_fit if args.command == "fit" else cli_predict.run_predict
    try:
        code = run(args)
    except ConfigError as exc:
        print(f"htnet: error: {exc}", file=sys.stderr)
        code = 2
    except DataError as exc:
        print(f"htnet: error: {exc}", file=sys.stderr)
        code = 3
    out, err = capsys.readouterr()
    return code, out, err


def one_error_line(err: str) -> str:
    lines = err.splitlines()
    assert len(lines) == 1 and lines[0].startswith("htnet: error: "), err
    return lines[0]


def test_cli_fit_then_predict_a_pair(synthetic_root, tmp_path, pair_files, capsys):
    out_dir = tmp_path / "model"
    code, out, err = htnet(["fit", "--profile", "smoke", "--data", str(synthetic_root),
                            "--out", str(out_dir)], capsys)
    assert code == 0 and str(out_dir) in out and "fitted in" in out
    assert "epoch" in err  # the progress bar over epochs, on stderr
    card = (out_dir / predict.CARD).read_text()  # MODEL_CARD.md beside the weights
    assert "## Intended use and limits" in card and "consent" in card
    assert "No leave-one-subject-out run of this configuration" in card  # none stored for it
    assert sorted(p.name for p in out_dir.iterdir()) == sorted([META, WEIGHTS, predict.CARD])
    code, out, _ = htnet(["fit", "--profile", "smoke", "--data", str(synthetic_root),
                          "--out", str(out_dir)], capsys)
    assert code == 0 and "reused" in out  # the card is no foreign file
    Model.load(out_dir)
    onset, apex = pair_files
    code, out, _ = htnet(["predict", "--model", str(out_dir), "--onset", str(onset),
                          "--apex", str(apex)], capsys)
    assert code == 0 and "prediction: " in out
    assert all(name in out for name in LABELS.values())
    code, out, _ = htnet(["predict", "--model", str(out_dir), "--onset", str(onset),
                          "--apex", str(apex), "--json"], capsys)
    result = json.loads(out)
    assert result["label"] in LABELS.values()
    assert sum(result["probabilities"].values()) == pytest.approx(1.0, abs=1e-5)


def test_cli_flow_json_equals_the_forward_pass(smoke_dir, smoke_model, synthetic, capsys):
    row = synthetic.table.iloc[2]
    code, out, _ = htnet(["predict", "--model", str(smoke_dir), "--json",
                          "--flow", str(synthetic.root / row.flow_path),
                          "--apex", str(synthetic.root / row.apex_path)], capsys)
    assert code == 0
    x = regions_mod.network_inputs(synthetic, smoke_model.config)[2:3]
    expected = predict.softmax(smoke_model.logits(x))[0]
    answer = json.loads(out)
    got = list(answer["probabilities"].values())
    np.testing.assert_allclose(got, expected, atol=1e-6)
    # a map holds no motion size: no no-motion answer, motion_px and flow_method null
    assert answer["motion_px"] is None and answer["flow_method"] is None
    assert answer["label"] == LABELS[int(np.argmax(expected))] and not answer["no_motion"]


@pytest.fixture(scope="module")
def bad_files(tmp_path_factory) -> dict[str, Path]:
    folder = tmp_path_factory.mktemp("bad")
    files = {"grey": folder / "grey.png", "map32": folder / "map32.png",
             "map_grey": folder / "map_grey.png", "text": folder / "notes.png",
             "gradient": folder / "gradient.png"}
    cv2.imwrite(str(files["grey"]), np.full((224, 224, 3), 128, np.uint8))
    ramp = np.tile(np.linspace(0, 255, 224).astype(np.uint8), (224, 1))
    cv2.imwrite(str(files["gradient"]), ramp)  # a picture, but of no face
    cv2.imwrite(str(files["map32"]), np.zeros((32, 32, 3), np.uint8))
    cv2.imwrite(str(files["map_grey"]), np.zeros((28, 28), np.uint8))
    files["text"].write_text("not an image")
    return files


@pytest.mark.parametrize("args, code, shown", [
    (lambda f, p: ["--onset", "missing.png", "--apex", str(p[1])], 3,
     "missing.png: file is missing"),
    (lambda f, p: ["--onset", str(f["text"]), "--apex", str(p[1])], 3,
     "notes.png: not a PNG or JPEG file"),
    (lambda f, p: ["--onset", str(f["grey"]), "--apex", str(f["grey"])], 3,
     "grey.png: holds no picture of a face: grey levels 128..128, contrast 0.0 below 4"),
    (lambda f, p: ["--onset", str(f["gradient"]), "--apex", str(f["gradient"])], 3,
     "gradient.png: no face found in the onset frame"),
    (lambda f, p: ["--onset", str(f["grey"].parent), "--apex", str(p[1])], 3,
     ": is a directory, not an image file"),
    (lambda f, p: ["--flow", str(f["map32"]), "--apex", str(p[1])], 3,
     "map32.png: flow map is 32x32x3 uint8, expected 28x28x3 uint8"),
    (lambda f, p: ["--flow", str(f["map_grey"]), "--apex", str(p[1])], 3,
     "map_grey.png: flow map is 28x28 uint8"),
    (lambda f, p: ["--flow", str(f["map32"])], 2, "--flow needs --apex FACE"),
    (lambda f, p: ["--onset", str(p[0])], 2, "--onset needs --apex"),
    (lambda f, p: ["--onset", str(p[0]), "--apex", str(p[1]), "--flow", str(f["map32"])], 2,
     "exactly one of"),
    (lambda f, p: [], 2, "exactly one of"),
    (lambda f, p: ["--sequence", str(f["grey"].parent / "none")], 3, "no such frame folder"),
], ids=["missing-image", "not-an-image", "no-picture", "no-face", "a-directory", "map-32x32",
        "map-grey", "flow-no-apex",
        "onset-no-apex", "two-inputs", "no-input", "no-folder"])
def test_cli_errors_are_one_line(smoke_dir, bad_files, pair_files, capsys, args, code, shown):
    got, out, err = htnet(["predict", "--model", str(smoke_dir), *args(bad_files, pair_files)],
                          capsys)
    assert got == code and out == ""
    assert shown in one_error_line(err)


def test_cli_error_for_a_folder_that_is_no_model(tmp_path, pair_files, capsys):
    code, _, err = htnet(["predict", "--model", str(tmp_path), "--onset", str(pair_files[0]),
                          "--apex", str(pair_files[1])], capsys)
    assert code == 3 and f"{tmp_path / META}: missing" in one_error_line(err)


def test_htnet_predict_through_cli_main(smoke_dir, bad_files, pair_files, capsys):
    """The same errors through ``htnet`` itself, once cli.py wires fit and predict."""
    from htnetlib.cli import app as cli

    try:
        cli.build_parser().parse_args(["predict", "--model", "m", "--flow", "f"])
    except SystemExit:
        pytest.skip("htnet predict is not wired into htnetlib/cli.py yet")
    capsys.readouterr()
    assert cli.main(["predict", "--model", str(smoke_dir), "--flow",
                     str(bad_files["map32"]), "--apex", str(pair_files[1])]) == 3
    assert "map32.png: flow map is 32x32x3" in one_error_line(capsys.readouterr().err)
    assert cli.main(["predict", "--model", str(smoke_dir), "--onset", str(bad_files["gradient"]),
                     "--apex", str(bad_files["gradient"])]) == 3
    assert "no face found" in one_error_line(capsys.readouterr().err)
    assert cli.main(["predict", "--model", str(smoke_dir), "--onset", str(pair_files[0]),
                     "--apex", str(pair_files[1])]) == 0


# --------------------------------------------------------------------------- answers

ANSWER_TYPES = {"label": (str, type(None)), "probabilities": dict, "calibrated": bool,
                "no_motion": bool, "forced": bool, "motion_px": float,
                "motion_threshold_px": float, "flow_method": str, "seconds": float,
                "model": dict, "input": str, "files": dict, "regions_from": str}
MODEL_TYPES = {"path": str, "profile": str, "seed": int, "data_fingerprint": str, "sha256": str}


def check_answer(answer: dict, model_dir: Path) -> None:
    """Every key of an answer (htnetlib/predict.py's docstring) with its type, and the model
    and run it names."""
    for key, kind in ANSWER_TYPES.items():
        assert isinstance(answer[key], kind), (key, answer[key])
    assert list(answer["probabilities"]) == list(LABELS.values())
    assert answer["regions_from"] == predict.REGIONS_FROM[answer["landmarks_found"]]
    assert sum(answer["probabilities"].values()) == pytest.approx(1.0, abs=1e-5)
    assert answer["calibrated"] is False
    for key, kind in MODEL_TYPES.items():
        assert isinstance(answer["model"][key], kind), (key, answer["model"])
    meta = json.loads((Path(model_dir) / META).read_text())
    assert Path(answer["model"]["path"]).resolve() == Path(model_dir).resolve()
    assert answer["model"]["sha256"] == meta["weights"]["sha256"] == predict.sha256(
        Path(model_dir) / WEIGHTS)
    assert (answer["model"]["seed"], answer["model"]["profile"]) == (meta["seed"],
                                                                     meta["profile"])
    assert answer["model"]["data_fingerprint"] == meta["data_fingerprint"]


@pytest.fixture(scope="module")
def hand_pairs(tmp_path_factory) -> dict[str, tuple[Path, Path]]:
    """Two frames of the astronaut face made by hand: a synthetic surprise (1.5 px brows and
    jaw) and a still pair, each with one grey level of independent sensor noise."""
    folder = tmp_path_factory.mktemp("hand")
    pairs = {"moving": syn.make_pair(2, amplitude=1.5, seed=4, noise=1.0),
             "still": syn.make_pair(2, amplitude=0.0, seed=4, noise=1.0)}
    files = {}
    for name, pair in pairs.items():
        files[name] = folder / f"{name}_onset.png", folder / f"{name}_apex.png"
        for path, image in zip(files[name], (pair.onset, pair.apex)):
            cv2.imwrite(str(path), bgr(image))
    return files


def test_a_hand_made_pair_through_the_api_and_the_cli(smoke_dir, hand_pairs, capsys):
    onset, apex = hand_pairs["moving"]
    answer = Model.load(smoke_dir).answer(onset, apex)
    check_answer(answer, smoke_dir)
    assert answer["flow_method"] == "tvl1"  # the release's method, by default
    assert answer["label"] in LABELS.values() and answer["no_motion"] is False
    assert answer["motion_px"] > 2 * predict.NO_MOTION_PX["tvl1"]
    assert answer["files"] == {"onset": str(onset), "apex": str(apex)}
    code, out, _ = htnet(["predict", "--model", str(smoke_dir), "--onset", str(onset),
                          "--apex", str(apex), "--json"], capsys)
    cli = json.loads(out)
    assert code == 0 and set(cli) == set(answer)
    check_answer(cli, smoke_dir)
    assert cli["label"] == answer["label"] and cli["motion_px"] == answer["motion_px"]
    np.testing.assert_allclose(list(cli["probabilities"].values()),
                               list(answer["probabilities"].values()), atol=1e-6)
    code, out, _ = htnet(["predict", "--model", str(smoke_dir), "--onset", str(onset),
                          "--apex", str(apex)], capsys)
    assert code == 0 and f"prediction: {answer['label']}" in out
    assert "not calibrated" in out and str(smoke_dir) in out and "seed 0" in out


def test_a_pair_without_motion_is_no_motion_unless_forced(smoke_dir, hand_pairs, capsys):
    onset, apex = hand_pairs["still"]
    smoke_model = Model.load(smoke_dir)  # its own: another test saves the shared one elsewhere
    answer = smoke_model.answer(onset, apex)
    check_answer(answer, smoke_dir)
    assert answer["label"] is None and answer["no_motion"] is True
    assert answer["motion_px"] < answer["motion_threshold_px"] == predict.NO_MOTION_PX["tvl1"]
    forced = smoke_model.answer(onset, apex, force=True)
    assert forced["label"] in LABELS.values() and forced["forced"] and not forced["no_motion"]
    code, out, _ = htnet(["predict", "--model", str(smoke_dir), "--onset", str(onset),
                          "--apex", str(apex), "--json"], capsys)
    cli = json.loads(out)
    assert code == 0 and cli["label"] is None and cli["no_motion"] is True
    check_answer(cli, smoke_dir)
    code, out, _ = htnet(["predict", "--model", str(smoke_dir), "--onset", str(onset),
                          "--apex", str(apex)], capsys)
    assert code == 0 and "prediction: no motion found" in out
    assert f"{answer['motion_px']:.3f} px moved" in out and "not meaningful" in out
    code, out, _ = htnet(["predict", "--model", str(smoke_dir), "--onset", str(onset),
                          "--apex", str(apex), "--force", "--flow-method", "farneback"], capsys)
    assert code == 0 and "no motion" not in out and "prediction: " in out


def test_predict_takes_batches(smoke_model, hand_pairs):
    """predict([a, b], [c, d]) and predict_pairs give (N, 3), row k the pair k alone."""
    (a, b), (c, d) = hand_pairs["moving"], hand_pairs["still"]
    probs = smoke_model.predict([a, c], [b, d])
    assert probs.shape == (2, 3)
    np.testing.assert_allclose(probs[0], smoke_model.predict(a, b), rtol=1e-6)
    np.testing.assert_allclose(probs[1], smoke_model.predict(c, d), rtol=1e-6)
    same = smoke_model.predict_pairs([a, a], [b, b], flow_method="farneback")
    assert same.shape == (2, 3) and np.allclose(same[0], same[1])
    arrays = np.stack([cv2.imread(str(a))] * 2), np.stack([cv2.imread(str(b))] * 2)
    np.testing.assert_allclose(smoke_model.predict(*arrays, flow_method="farneback"), same,
                               rtol=1e-6)
    with pytest.raises(DataError, match="2 onset frame\\(s\\) but 1 apex"):
        smoke_model.predict_pairs([a, c], [b])
    with pytest.raises(ConfigError, match="flow_method='lk'"):
        smoke_model.predict(a, b, flow_method="lk")


def test_a_csv_of_pairs_answers_every_row(smoke_dir, hand_pairs, tmp_path, capsys):
    """--pairs: paths relative to the CSV's folder or absolute; a bad row is reported in its
    row and the others still run; exit status 3; --json lines, --csv OUT, a text table."""
    folder = hand_pairs["moving"][0].parent
    table = folder / "pairs.csv"
    table.write_text("onset,apex\n"
                     "moving_onset.png,moving_apex.png\n"
                     f"{hand_pairs['still'][0]},{hand_pairs['still'][1]}\n"
                     "missing.png,moving_apex.png\n")
    base = ["predict", "--model", str(smoke_dir), "--pairs", str(table)]
    code, out, err = htnet([*base, "--json"], capsys)
    rows = [json.loads(line) for line in out.splitlines()]
    assert code == 3 and len(rows) == 3 and "1 of 3 item(s) failed" in err
    assert "pair" in err  # the progress bar
    moving, still, missing = rows
    for row in (moving, still):
        check_answer(row, smoke_dir)
        assert row["error"] is None
    assert moving["label"] in LABELS.values() and still["label"] is None
    assert missing["label"] is None and "missing.png: file is missing" in missing["error"]
    assert set(missing) == set(moving)
    out_csv = tmp_path / "answers.csv"
    code, out, _ = htnet([*base, "--csv", str(out_csv)], capsys)
    import csv as csv_mod

    written = list(csv_mod.DictReader(out_csv.open()))
    assert code == 3 and out == "" and len(written) == 3
    assert written[0]["label"] == moving["label"] and written[1]["label"] == ""
    assert written[1]["no_motion"] == "True" and written[2]["error"]
    assert float(written[0]["surprise"]) == pytest.approx(moving["probabilities"]["surprise"])
    code, out, _ = htnet(base, capsys)
    assert code == 3 and out.splitlines()[0].split("\t")[:2] == ["item", "label"]
    assert len(out.splitlines()) == 5  # header, 3 rows, the model line


def test_a_folder_of_sequences_answers_every_subfolder(smoke_dir, tmp_path, capsys):
    seq = syn.make_sequence(1, n_frames=7, apex=3, seed=2)
    for k, frame in enumerate(seq.frames):
        (tmp_path / "clips" / "a").mkdir(parents=True, exist_ok=True)
        cv2.imwrite(str(tmp_path / "clips" / "a" / f"{k}.png"), bgr(frame))
    (tmp_path / "clips" / "b").mkdir()  # no frames: its row reports it
    code, out, _ = htnet(["predict", "--model", str(smoke_dir), "--sequences",
                          str(tmp_path / "clips"), "--json", "--flow-method", "farneback"],
                         capsys)
    rows = [json.loads(line) for line in out.splitlines()]
    assert code == 3 and [r["item"] for r in rows] == ["a", "b"]
    assert rows[0]["error"] is None and rows[0]["apex_frame"]["frames"] == 7
    assert rows[0]["flow_method"] == "farneback"
    assert "a sequence needs at least 2 frames" in rows[1]["error"]


# --------------------------------------------------------------------------- speed


@pytest.mark.parametrize("method, limit", [("farneback", 1.0), ("tvl1", 2.0)])
def test_a_cpu_model_predicts_a_pair_in_under_a_second(synthetic, tmp_path, method, limit):
    """Face crop, flow, strain, motion, map, landmarks and the cpu-profile network: < 1 s per
    pair with Farneback, < 2 s with TV-L1 (the default; its flow alone takes about 0.4 s).

    One torch thread, as htnet predict uses by default: about 0.07 s per pair with Farneback
    on an idle 2-core machine, 0.17 s with the cores shared five ways. Skipped on a machine so
    busy that timing means nothing (load above three processes per core)."""
    load, cores = os.getloadavg()[0], os.cpu_count() or 1
    if load > 3 * cores:
        pytest.skip(f"machine busy (load {load:.1f} on {cores} cores): timing not meaningful")
    model = predict.fit(synthetic, PROFILES["cpu"], profile="cpu")
    pair = syn.make_pair(1, seed=3)
    onset, apex = bgr(pair.onset), bgr(pair.apex)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # as htnet predict does by default
    try:
        model.predict(onset, apex)  # warm-up: MTCNN's weights are loaded once per process
        times = []
        for _ in range(5):
            start = time.perf_counter()
            model.predict(onset, apex, flow_method=method)
            times.append(time.perf_counter() - start)
    finally:
        torch.set_num_threads(threads)
    print(f"predict per pair ({method}): {min(times):.3f} s (best of 5), "
          f"{np.median(times):.3f} s median")
    assert np.median(times) < limit




# --------------------------------------------------------------------------- help and examples

ROOT = Path(__file__).resolve().parent.parent
EXAMPLES = ROOT / "examples"
COMMITTED = sorted((ROOT / "results" / "models").glob("cpu-s0-*"))


def test_help_lists_every_key_of_an_answer(smoke_dir, hand_pairs, tmp_path, capsys):
    onset, apex = hand_pairs["moving"]
    keys = set(Model.load(smoke_dir).answer(onset, apex)) | {"apex_frame", "error", "item"}
    assert keys == set(cli_predict.ANSWER_KEYS)
    from htnetlib import cli

    try:
        cli.main(["predict", "--help"])
    except SystemExit:
        pass
    shown = capsys.readouterr().out.split("JSON keys", 1)[1]
    listed = [line.split()[0] for line in shown.splitlines()[1:] if line[2:3].strip()]
    assert listed == list(cli_predict.ANSWER_KEYS)


def test_a_fallback_answer_says_where_the_regions_come_from(smoke_model, hand_pairs, capsys):
    onset, apex = hand_pairs["moving"]
    answer = smoke_model.answer(onset, apex)
    for found, words in predict.REGIONS_FROM.items():
        cli_predict.print_answer({**answer, "landmarks_found": found, "regions_from": words})
        out = capsys.readouterr().out
        assert (cli_predict.FALLBACK_NOTE in out) == (words == "fixed fallback")
    assert "fixed fallback landmarks" in cli_predict.FALLBACK_NOTE


def test_the_example_frames_are_the_synthetic_astronaut_pair():
    """examples/onset.png and apex.png: the public-domain astronaut face of scikit-image and
    the same face moved by a synthetic surprise (htnetlib.data.synthetic.make_pair)."""
    pair = syn.make_pair(2, amplitude=1.5, seed=0, noise=1.0)
    for name, image in (("onset", pair.onset), ("apex", pair.apex)):
        np.testing.assert_array_equal(cv2.imread(str(EXAMPLES / f"{name}.png")), bgr(image))
    assert "--onset examples/onset.png --apex examples/apex.png" in (ROOT / "README.md").read_text()


@pytest.mark.skipif(not COMMITTED, reason="no committed cpu model in results/models/")
def test_the_committed_model_predicts_the_example_frames(capsys):
    """The README's command on the shipped frames: a class, with where its regions came from."""
    args = ["predict", "--model", str(COMMITTED[0]), "--onset", str(EXAMPLES / "onset.png"),
            "--apex", str(EXAMPLES / "apex.png")]
    code, out, _ = htnet(args + ["--json"], capsys)
    answer = json.loads(out)
    assert code == 0 and answer["label"] in LABELS.values() and not answer["no_motion"]
    assert answer["regions_from"] in ("landmarks", "fixed fallback")
    code, out, _ = htnet(args, capsys)
    assert code == 0 and f"prediction: {answer['label']}" in out
    assert (cli_predict.FALLBACK_NOTE in out) == (answer["regions_from"] == "fixed fallback")
