"""The 90-minute lab: notebooks 01-04 as lesson episodes, with or without the licensed release.

Each episode is a lesson in the Carpentries' shape: a header with its teaching and exercise
minutes, 1-3 questions and its objectives; a picture early; the idea computed in a few visible
lines before the library's call; at least two exercises, each a student's cell and a folded
solution whose answer a check function here tests; key points at the end.

Cell tags the notebooks use and the book (:mod:`htnetlib.study.book`) reads:

* ``lesson``: a by-hand teaching cell; shown in the book (every other code cell is folded);
* ``exercise``: the student's cell of an exercise; shown;
* ``solution``: the exercise's solution; folded in the book, collapsed in JupyterLab
  (``metadata.jupyter.source_hidden``); it ends by calling :func:`check`.

:data:`SCHEDULE` is the lab's timetable; each episode's header states the same minutes
(a test compares them) and the book's first page shows it.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..config import PROFILES, Config
from ..data import CSV_NAME, load_composite, resolve_root, synthetic
from ..data.release import Composite
from ..io import ROOT
from .figures import RESULTS_ENV, results_dir as notebook_results_dir, stored_dir

#: Where a run without the release puts everything (git-ignored): the cohort's files under
#: ``cohort/``, the notebooks' figures, tables, findings and runs under ``results/``.
LAB_FOLDER = ROOT / "results" / "notebooks" / "lab"


@dataclass(frozen=True)
class Episode:
    notebook: str  # file stem in notebooks/
    title: str
    teaching: int  # minutes
    exercises: int  # minutes

    @property
    def minutes(self) -> int:
        return self.teaching + self.exercises


#: The lab's timetable: 90 minutes over the four episodes.
SCHEDULE: tuple[Episode, ...] = (
    Episode("01_optical_flow", "Optical flow and optical strain", 15, 10),
    Episode("02_region_cropping", "The four facial regions", 10, 10),
    Episode("03_model", "The HTNet model", 10, 10),
    Episode("04_training_loso", "Leave-one-subject-out training, honest and oracle", 15, 10),
)


def schedule_table() -> list[dict]:
    """The timetable as rows (episode, title, teaching, exercises, start), start in minutes
    from the lab's beginning."""
    rows, start = [], 0
    for ep in SCHEDULE:
        rows.append({"episode": ep.notebook, "title": ep.title, "teaching": ep.teaching,
                     "exercises": ep.exercises, "start": start})
        start += ep.minutes
    return rows


@dataclass
class LessonData:
    """What an episode runs on: the data, which data it is, and where its outputs go."""

    data: Composite
    source: str  # "release" or "synthetic cohort"
    results_dir: Path  # figures, tables, findings
    runs_dir: Path  # stored runs, read or trained

    @property
    def synthetic(self) -> bool:
        return self.source == "synthetic cohort"

    def training(self, profile: str) -> tuple[Config, str]:
        """What episode 04 trains and the profile its run is stored under: the profile's
        configuration on the release; on the cohort :func:`lab_config` under ``lab`` (for
        ``cpu``; a run of the lab's own size, not the ``cpu`` profile's) or the profile itself."""
        if not self.synthetic:
            return PROFILES[profile], profile
        return lab_config(profile), ("lab" if profile == "cpu" else profile)

    def note(self) -> str:
        """One Markdown line for the top of the episode: which data it ran on."""
        t = self.data.table
        size = (f"{t['subject'].nunique()} subjects, {len(t)} samples "
                f"({', '.join(f'{n} {c}' for c, n in zip(synthetic.LABELS, count_labels(t)))})")
        if self.synthetic:
            return (f"**Data: the synthetic cohort** ({size}), made by `htnetlib.data.synthetic."
                    "write_cohort` from the public-domain astronaut face, because no licensed "
                    "release was found (set `HTNET_DATA` to a release folder to use it). Outputs "
                    "go to the git-ignored `results/notebooks/lab/`.")
        return f"**Data: the official release** ({size})."


def count_labels(table) -> list[int]:
    return [int((table["label"] == k).sum()) for k in range(3)]


def has_release(data_dir=None) -> bool:
    """Whether ``data_dir`` (or ``$HTNET_DATA``, else the repository's ``data/``) holds a
    release: its annotation CSV is there. A folder whose CSV is there but damaged is a release
    with a fault, which :func:`load_composite` names; it never falls back to the cohort."""
    return (resolve_root(data_dir) / CSV_NAME).is_file()


def lesson_data(data_dir=None, results_dir="results", profile: str | None = None) -> LessonData:
    """The release where there is one, else the synthetic cohort (written once into
    :data:`LAB_FOLDER`), and the output folders that go with it.

    With the release, outputs go where every notebook's go (:func:`~htnetlib.study.figures.
    results_dir`). With the cohort, an episode aimed at the repository's ``results/`` writes to
    ``results/notebooks/lab/results`` instead, so a run without the release never overwrites a
    committed file; a test's own folder (``$HTNET_RESULTS_DIR`` or another ``results_dir``) is
    kept."""
    if has_release(data_dir):
        return LessonData(load_composite(data_dir), "release",
                          notebook_results_dir(results_dir, profile),
                          stored_dir(results_dir) / "runs")
    data = load_composite(synthetic.write_cohort(LAB_FOLDER / "cohort"))
    if os.environ.get(RESULTS_ENV):
        out = Path(os.environ[RESULTS_ENV])
        runs = out / "runs"
    elif stored_dir(results_dir).resolve() == (ROOT / "results").resolve():
        out = LAB_FOLDER / "results"
        runs = out / "runs"
    else:
        out = stored_dir(results_dir)
        runs = out / "runs"
    return LessonData(data, "synthetic cohort", out, runs)


#: Epochs and batch size of the lab's training on the synthetic cohort (episode 04): the ``cpu``
#: profile's model and learning rate, half its epochs and batches of 32 (the cohort's 189 samples
#: would make one batch of 256: one step an epoch), so that all 18 folds train in about 2 minutes
#: on 2 cores. On the cohort this scores an honest UF1 near 0.78 and an oracle near 0.86.
LAB_EPOCHS = 50
LAB_BATCH = 32


def lab_config(profile: str = "cpu") -> Config:
    """What episode 04 trains on the synthetic cohort: for ``cpu``, the ``cpu`` profile's model
    with :data:`LAB_EPOCHS` epochs in batches of :data:`LAB_BATCH`; any other profile (``smoke``
    in tests) as it is."""
    import dataclasses

    if profile == "cpu":
        return dataclasses.replace(PROFILES["cpu"], epochs=LAB_EPOCHS, batch_size=LAB_BATCH)
    return PROFILES[profile]


# --------------------------------------------------------------------------- exercises
#
# Each exercise has a key "<episode>.<n>" (for example "1.2") and a check function registered
# with @exercise: it computes the expected answer from what the notebook passes (its data, a
# pair, a run), never from the solution's code. check() compares the student's answer with it.

#: key -> (what the answer is, the function computing the expected answer, tolerance)
EXERCISES: dict[str, tuple[str, Callable, float]] = {}


class ExerciseError(AssertionError):
    """A wrong answer: the message says which exercise and what was expected of its form."""


def exercise(key: str, what: str, *, rtol: float = 1e-6):
    """Register ``fn(**given) -> expected`` as the check of exercise ``key``; ``what`` says in
    a few words what the answer is (shown when it is wrong or missing)."""
    def register(fn: Callable) -> Callable:
        if key in EXERCISES:
            raise ValueError(f"exercise {key} is registered twice")
        EXERCISES[key] = (what, fn, rtol)
        return fn
    return register


def expected(key: str, **given):
    """The expected answer of exercise ``key`` for ``given`` (what a test compares against)."""
    return EXERCISES[key][1](**given)


def same(answer, wanted, rtol: float = 1e-6) -> bool:
    """Whether ``answer`` equals ``wanted``: numbers and arrays within ``rtol`` (and 1e-9
    absolute), dicts key by key, anything else by ``==``."""
    if isinstance(wanted, dict):
        return (isinstance(answer, dict) and set(answer) == set(wanted)
                and all(same(answer[k], wanted[k], rtol) for k in wanted))
    if isinstance(wanted, str) or isinstance(answer, str):
        return answer == wanted
    try:
        a, w = np.asarray(answer, dtype=np.float64), np.asarray(wanted, dtype=np.float64)
    except (TypeError, ValueError):
        return bool(answer == wanted)
    return a.shape == w.shape and bool(np.allclose(a, w, rtol=rtol, atol=1e-9))


#: A folder where :func:`check` also stores each answered call (key, answer, given) as a pickle,
#: so that a test can call every check again with a wrong answer (tests/test_episodes.py).
RECORD_ENV = "HTNET_LAB_RECORD"


def record(key: str, answer, given: dict) -> None:
    """Store this call in ``$HTNET_LAB_RECORD`` when it is set (nothing otherwise)."""
    folder = os.environ.get(RECORD_ENV)
    if not folder:
        return
    import pickle

    from ..io import atomic_write

    blob = pickle.dumps({"key": key, "answer": answer, "given": given})
    n = len(list(Path(folder).glob(f"{key}-*.pkl")))
    atomic_write(Path(folder) / f"{key}-{n}.pkl", lambda tmp: tmp.write_bytes(blob))


def check(key: str, answer, **given) -> str:
    """Check a student's ``answer`` to exercise ``key``: a line saying it is correct, or two
    short lines saying that it is not answered yet (``answer`` is ``...`` or None) and what the
    answer is; a wrong answer raises
    :class:`ExerciseError` naming the exercise, so a wrong solution fails its cell (and CI)."""
    if key not in EXERCISES:
        raise KeyError(f"no exercise {key!r}; the lab has {', '.join(sorted(EXERCISES))}")
    what, fn, rtol = EXERCISES[key]
    if answer is ... or answer is None:
        return f"Exercise {key}: not answered yet.\nThe answer is {what}."
    record(key, answer, given)
    if not same(answer, fn(**given), rtol):
        raise ExerciseError(f"Exercise {key}: {answer!r} is not the answer.\nThe answer is "
                            f"{what}; look again, or open the solution below.")
    return f"Exercise {key}: correct."


# ----------------------------------------------------------- episode 01: flow and strain checks

@exercise("1.1", "the largest optical strain of the field (eq. 3), a number", rtol=1e-4)
def _largest_strain(field) -> float:
    """The library's optical strain (float32), at its largest."""
    from ..data import flow

    return float(flow.optical_strain(np.asarray(field)).max())


@exercise("1.2", "the grey level (0..255, not rounded) where zero vertical motion lands",
          rtol=1e-4)
def _zero_level(field) -> float:
    """The v row of the scale table that episode 01 shows (figures.map_scale)."""
    from .figures import map_scale

    return float(map_scale(np.asarray(field)).iloc[1]["zero lands at"])


@exercise("1.3", "the frame D&C-RoIs spots, an int")
def _spotted_frame(diff) -> int:
    """The library's divide-and-conquer search over the differences."""
    from ..data import flow

    return flow.divide_and_conquer(np.asarray(diff))


# ---------------------------------------------------------- episode 02: the four regions checks

@exercise("2.1", 'a dict: "official" and "corrected" crop centres as (row, column)')
def _crop_centre(point) -> dict:
    """The library's crop centres of a face whose five landmarks all sit at ``point`` (x, y),
    found on a 28x28 image."""
    from ..data import regions

    lm = regions.Landmarks(np.tile(np.asarray(point, dtype=np.float64), (1, 5, 1)),
                           np.array([[28.0, 28.0]]))
    return {mode: tuple(int(v) for v in regions.crop_centres(lm, mode)[0, 0])
            for mode in ("official", "corrected")}


@exercise("2.2", "the number of distinct map pixels the four crops cover, an int")
def _pixels_covered(centres) -> int:
    """The library's mosaic of a map whose every pixel holds its own index: the distinct
    indices the mosaic keeps."""
    from ..data import regions

    index = np.arange(28 * 28).reshape(1, 28, 28, 1)
    return len(np.unique(regions.mosaic(index, np.asarray(centres)[None])))


# ----------------------------------------------------------------- episode 03: the model checks

@exercise("3.3", "the patch embedding's parameter count, an int")
def _patch_embedding_parameters(dim: int, patch_size: int, channels: int = 3) -> int:
    """Counted on the library's own model (meta tensors), not by the formula."""
    import torch

    from ..model import HTNet, count_parameters

    with torch.device("meta"):
        m = HTNet(image_size=4 * patch_size, patch_size=patch_size, num_classes=3, dim=dim,
                  heads=1, num_hierarchies=3, block_repeats=(1, 1, 1), channels=channels)
    return count_parameters(m.to_patch_embedding)


@exercise("3.1", "the (2, 2) attention weights of eq. 5")
def _attention_weights(q, k) -> np.ndarray:
    """torch's scaled dot-product attention applied to the identity as values: its output is
    the weight matrix itself."""
    import torch
    import torch.nn.functional as F

    q, k = (torch.as_tensor(np.asarray(t), dtype=torch.float64) for t in (q, k))
    return F.scaled_dot_product_attention(q, k, torch.eye(len(k), dtype=torch.float64)).numpy()


@exercise("3.2", "the token after eq. 6 with gain 1 and bias 0", rtol=1e-4)
def _layer_norm(z, eps: float = 1e-5) -> np.ndarray:
    import torch
    import torch.nn.functional as F

    z = torch.as_tensor(np.asarray(z), dtype=torch.float64)
    return F.layer_norm(z, z.shape[-1:], eps=eps).numpy()



# ------------------------------------------------------ episode 04: LOSO, UF1, honest and oracle

@exercise("4.1", "a dict of UF1 and UAR of always answering negative")
def _always_negative(labels) -> dict:
    from ..evaluation import metrics

    answers = np.zeros(len(labels), dtype=int)
    return {"uf1": metrics.uf1(labels, answers), "uar": metrics.uar(labels, answers)}


@exercise("4.2", "the oracle's epoch for this subject, counted from 1 (an int)")
def _oracle_epoch(pred, labels) -> int:
    from ..evaluation import metrics

    pred, labels = np.asarray(pred), np.asarray(labels)
    return metrics.oracle_epochs(pred, labels, np.zeros(len(labels)))[0] + 1


@exercise("4.3", "a dict of honest and oracle UF1 of the random guesses")
def _random_oracle(labels, subjects, epochs: int, seed: int) -> dict:
    from ..evaluation import metrics

    labels = np.asarray(labels)
    guesses = np.random.default_rng(seed).integers(0, 3, size=(epochs, len(labels)))
    return {"honest": metrics.uf1(labels, metrics.honest_predictions(guesses)),
            "oracle": metrics.uf1(labels, metrics.oracle_predictions(guesses, labels, subjects))}
