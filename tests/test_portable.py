"""Same bytes on every machine (README, "Same bytes on every machine").

* The committed notebooks, executed again on this machine with the arithmetic paths of other
  CPUs (``htnetlib.cli.check.ARITHMETIC``: torch, oneDNN, MKL, NumPy and OpenCV without their
  AVX-512, AVX2 or any vector kernels, one or two threads), produce notebooks, figures, tables,
  findings and README blocks byte for byte identical to the committed ones.
* The library's OpenCV flow is bit-identical under those paths (no release needed).
* No committed output prints float noise: a number below 1e-5 shown with more than one digit
  is the last bits of a float, not a result; it is shown as a bound ("below 1e-6").
* Every committed notebook is in the one form the writer writes (``reproduce.notebook_text``).
* ``--check`` names each differing file and cell (tested on made-up notebooks).
"""

from __future__ import annotations

import dataclasses
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from htnetlib.cli import check, reproduce

ROOT = Path(__file__).resolve().parents[1]
RELEASE = os.environ.get("HTNET_DATA")
HAS_RELEASE = bool(RELEASE) and Path(RELEASE, "combined_3_class2_for_optical_flow.csv").is_file()
OTHER_CPUS = [name for name in check.ARITHMETIC if name != "native"]

# A number of 1e-5 or less written with two or more significant digits ("3.98e-09"): the
# digits are float noise. One digit ("5e-05", a learning rate; "below 1e-6") is a value or a
# bound. And any number with 8 or more decimals: more than float32 (or a rounded table) holds.
FLOAT_NOISE = re.compile(r"(?<![\w.])\d\.\d+e-(0?[5-9]|[1-9]\d)\b|\d\.\d{8,}")


def _shown_text(nb: dict) -> list[tuple[int, str]]:
    """(cell index, text) of everything a reader sees in a notebook's outputs."""
    out = []
    for i, cell in enumerate(nb["cells"]):
        for o in cell.get("outputs", []):
            texts = ["".join(o.get("text", ""))] + [
                "".join(v) if isinstance(v, list) else v for k, v in o.get("data", {}).items()
                if k in ("text/plain", "text/markdown", "text/html")]
            out += [(i, t) for t in texts if t]
    return out


def float_noise(text: str) -> list[str]:
    return [m.group(0) for m in FLOAT_NOISE.finditer(text)]


def _flow_digests() -> str:
    """A script printing the SHA-1 of the library's flows, strain and map of a synthetic pair."""
    return ("import hashlib, numpy as np\n"
            "from htnetlib.data import synthetic, flow\n"
            "h = lambda a: hashlib.sha1(np.ascontiguousarray(a).tobytes()).hexdigest()[:12]\n"
            "p = synthetic.make_pair(1, seed=0)\n"
            "out = [h(p.onset), h(p.apex)]\n"
            "for m in flow.FLOW_METHODS:\n"
            "    f = flow.optical_flow(p.onset[..., ::-1].copy(), p.apex[..., ::-1].copy(), m)\n"
            "    out += [m, h(f), h(flow.optical_strain(f)), h(flow.flow_to_map(f))]\n"
            "print(' '.join(out))\n")


def test_opencv_flow_is_bit_identical_under_other_arithmetic_paths():
    digests = {}
    for name, env in check.ARITHMETIC.items():
        done = subprocess.run([sys.executable, "-c", _flow_digests()], cwd=ROOT,
                              env={**os.environ, **env, "PYTHONPATH": str(ROOT)},
                              capture_output=True, text=True, timeout=300)
        assert done.returncode == 0, done.stderr[-2000:]
        digests[name] = done.stdout.strip()
    assert len(set(digests.values())) == 1, digests


def test_committed_outputs_show_no_float_noise():
    found = []
    for path in reproduce.notebooks():
        nb = json.loads(path.read_text())
        found += [f"{path.name} cell {i}: {n}" for i, t in _shown_text(nb)
                  for n in float_noise(t)]
    for path in sorted((ROOT / "results").glob("findings/*.md")) + sorted(
            (ROOT / "results").glob("tables/*.md")):
        found += [f"{path.relative_to(ROOT)}: {n}" for n in float_noise(path.read_text())]
    assert not found, "float-noise digits in committed outputs (show a bound instead):\n" + \
        "\n".join(found)


def test_the_float_noise_rule_catches_noise_and_spares_values_and_bounds():
    assert float_noise("largest difference 3.98e-09") == ["3.98e-09"]
    assert float_noise("(largest difference 4.0e-09 over 20 samples)") == ["4.0e-09"]
    assert float_noise("'motion_px': 0.2048022747039795") == ["0.2048022747039795"]
    assert float_noise("800 epochs at learning rate 5e-05; largest difference below 1e-6; "
                       "UF1 0.6752, p = 0.004, 1.5e-03 px") == []


def test_every_committed_notebook_is_in_the_writers_form():
    import nbformat

    for path in reproduce.notebooks():
        text = path.read_text(encoding="utf-8")
        assert text == reproduce.notebook_text(nbformat.read(str(path), as_version=4)), (
            f"{path.name} is not written as reproduce.execute writes it: running it again "
            "would rewrite the file (final newline, key order or indentation)")


def _notebook(tmp_path: Path, name: str, printed: str, newline: bool = True) -> Path:
    import nbformat

    nb = nbformat.v4.new_notebook()
    cell = nbformat.v4.new_code_cell("print(x)")
    cell.id = "the-cell"
    cell.outputs = [nbformat.v4.new_output("stream", name="stdout", text=printed)]
    nb.cells = [nbformat.v4.new_markdown_cell("# title"), cell]
    nb.cells[0].id = "title"
    text = reproduce.notebook_text(nb)
    path = tmp_path / name
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text if newline else text.rstrip("\n"))
    return path


def test_check_names_each_differing_file_cell_and_line(tmp_path):
    root, produced = tmp_path / "root", tmp_path / "produced"
    _notebook(root, "notebooks/14.ipynb", "largest difference 3.98e-09\n", newline=False)
    _notebook(produced, "notebooks/14.ipynb", "largest difference 3.94e-09\n")
    _notebook(root, "notebooks/01.ipynb", "same\n")
    _notebook(produced, "notebooks/01.ipynb", "same\n")
    for base, text in ((root, "a\nUF1 0.716\n"), (produced, "a\nUF1 0.715\n")):
        (base / "results" / "findings").mkdir(parents=True)
        (base / "results" / "findings" / "f.md").write_text(text)
    (produced / "results" / "figures").mkdir(parents=True)
    (produced / "results" / "figures" / "new.png").write_bytes(b"\x89PNG")
    lines = check.compare(produced, root)
    assert lines == [
        "notebooks/14.ipynb: cell 1 (id the-cell): 'stdout: largest difference 3.98e-09' "
        "became 'stdout: largest difference 3.94e-09'",
        "notebooks/14.ipynb: the final newline differs",
        "results/figures/new.png: produced but not committed",
        "results/findings/f.md: -UF1 0.716; +UF1 0.715"], lines
    assert check.compare(root, root) == []


def test_check_tells_a_figure_whose_bytes_differ(tmp_path):
    for base, data in ((tmp_path / "a", b"\x89PNG\x00\x01"), (tmp_path / "b", b"\x89PNG\x00\x02")):
        (base / "results" / "figures").mkdir(parents=True)
        (base / "results" / "figures" / "f.png").write_bytes(data)
    assert check.compare(tmp_path / "b", tmp_path / "a") == [
        "results/figures/f.png: bytes differ (6 committed, 6 produced)"]


# The notebooks each simulated CPU executes: every notebook under the CPU without vector
# kernels, and those that compute flow, landmarks, network outputs or statistics under AVX2.
CHECKED = {"baseline-1thread": [], "avx2-2threads": ["01", "02", "03", "04", "14"]}


@pytest.mark.slow
@pytest.mark.notebooks
@pytest.mark.release
@pytest.mark.skipif(not HAS_RELEASE, reason="the notebooks read the official release "
                                           "(HTNET_DATA)")
@pytest.mark.parametrize("arithmetic", OTHER_CPUS)
def test_notebooks_reproduce_byte_for_byte_on_another_cpu(arithmetic):
    only = CHECKED[arithmetic]
    done = subprocess.run(
        [sys.executable, "-m", "htnetlib.reproduce", "--stored-only", "--check", "--arithmetic",
         arithmetic] + (["--only", *only] if only else []),
        cwd=ROOT, env={**os.environ, "PYTHONPATH": str(ROOT)}, capture_output=True, text=True,
        timeout=1500)
    differing = [line for line in done.stdout.splitlines() if line.startswith("differs:")]
    assert done.returncode == 0 and not differing, (
        f"with the arithmetic of {arithmetic}, the notebooks produce other bytes than the "
        "committed ones:\n" + "\n".join(differing) + done.stdout[-1500:] + done.stderr[-1500:])
    assert "every produced file is identical to the committed one" in done.stdout


def test_the_trainer_help_says_what_auto_does():
    from htnetlib.cli.app import build_parser

    sub = next(a for a in build_parser()._actions if a.__class__.__name__ == "_SubParsersAction")
    train_help = " ".join(sub.choices["train"].format_help().split())
    assert "grouped on a GPU, loop on a CPU" not in train_help
    assert "on a CPU, both are timed on the folds left to train" in train_help


def test_auto_on_a_cpu_times_both_trainers_as_the_help_says(synthetic, tmp_path, monkeypatch):
    """``--trainer auto`` on a CPU asks training.trainer.choose (which times both) with the
    folds left to train, and trains with its answer."""
    from htnetlib.config import PROFILES
    from htnetlib.training import loso, trainer

    asked = []

    def choose(config, jobs, workers, threads):
        asked.append(len(jobs))
        return "loop", None

    monkeypatch.setattr(trainer, "choose", choose)
    config = dataclasses.replace(PROFILES["smoke"], epochs=1)
    run = loso.run_loso(synthetic, config, runs_dir=tmp_path, profile="smoke", device="cpu",
                        trainer="auto", progress=False)
    assert asked == [len(loso.fold_subjects(synthetic, config))]  # every fold, none stored yet
    assert (run / "predictions.csv").is_file()


def test_mtcnn_nms_keeps_facenets_rule_and_breaks_score_ties_by_index():
    """flow.nms_ties_by_index, installed in MTCNN's output stage, keeps the boxes that
    facenet-pytorch's own NMS keeps where scores differ, and of equal scores takes the box
    listed last, whatever NumPy's sort kernel (facenet's np.argsort left that to the CPU)."""
    import importlib.util

    import numpy as np
    from facenet_pytorch.models.utils import detect_face

    from htnetlib.data import flow

    spec = importlib.util.spec_from_file_location("facenet_detect_face", detect_face.__file__)
    original = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(original)  # a fresh copy: the loaded module's NMS is replaced
    rng = np.random.default_rng(0)
    xy = rng.uniform(0, 200, (300, 2))
    boxes = np.concatenate([xy, xy + rng.uniform(10, 60, (300, 2))], axis=1)
    scores = rng.permutation(300) / 300.0  # all different
    for method in ("Min", "Union"):
        assert flow.nms_ties_by_index(boxes, scores, 0.5, method).tolist() == \
            original.nms_numpy(boxes, scores, 0.5, method).tolist()
    twins = np.array([[0, 0, 50, 50], [1, 1, 50, 50], [100, 100, 150, 150]], dtype=float)
    assert flow.nms_ties_by_index(twins, np.array([1.0, 1.0, 0.9]), 0.7, "Min").tolist() == \
        [1, 2]
    assert flow.nms_ties_by_index(np.empty((0, 4)), np.empty(0), 0.7, "Min").tolist() == []


def test_the_writer_joins_one_stream_flushed_twice():
    """How the kernel splits a cell's printing into outputs follows the machine's load: the
    written notebook holds one output per stream run, so the file does not."""
    import nbformat

    from htnetlib.cli.reproduce import notebook_text

    nb = nbformat.v4.new_notebook()
    cell = nbformat.v4.new_code_cell("print(1); print(2)")
    cell.outputs = [nbformat.v4.new_output("stream", name="stdout", text="1\n"),
                    nbformat.v4.new_output("stream", name="stdout", text="2\n"),
                    nbformat.v4.new_output("stream", name="stderr", text="w\n")]
    nb.cells = [cell]
    once = nbformat.v4.new_notebook()
    joined = nbformat.v4.new_code_cell("print(1); print(2)", id=cell.id)
    joined.outputs = [nbformat.v4.new_output("stream", name="stdout", text="1\n2\n"),
                      nbformat.v4.new_output("stream", name="stderr", text="w\n")]
    once.cells = [joined]
    assert notebook_text(nb) == notebook_text(once)
    assert len(nbformat.reads(notebook_text(nb), as_version=4).cells[0].outputs) == 2
