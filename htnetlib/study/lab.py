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


#: Epochs of the lab's training on the synthetic cohort (episode 04): the ``cpu`` profile's model
#: and learning rate, fewer epochs, so that all folds train in about 2 minutes on 2 cores.
LAB_EPOCHS = 50


def lab_config(profile: str = "cpu") -> Config:
    """What episode 04 trains on the synthetic cohort: for ``cpu``, the ``cpu`` profile's model
    with :data:`LAB_EPOCHS` epochs; any other profile (``smoke`` in tests) as it is."""
    import dataclasses

    if profile == "cpu":
        return dataclasses.replace(PROFILES["cpu"], epochs=LAB_EPOCHS)
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


def check(key: str, answer, **given) -> str:
    """Check a student's ``answer`` to exercise ``key``: a line saying it is correct, or that it
    is not answered yet (``answer`` is ``...`` or None); a wrong answer raises
    :class:`ExerciseError` naming the exercise, so a wrong solution fails its cell (and CI)."""
    if key not in EXERCISES:
        raise KeyError(f"no exercise {key!r}; the lab has {', '.join(sorted(EXERCISES))}")
    what, fn, rtol = EXERCISES[key]
    if answer is ... or answer is None:
        return f"Exercise {key}: not answered yet (the answer is {what})."
    if not same(answer, fn(**given), rtol):
        raise ExerciseError(f"Exercise {key}: {answer!r} is not the answer ({what}); "
                            "look again, or open the solution below")
    return f"Exercise {key}: correct."


# ----------------------------------------------------------- episode 01: flow and strain checks


# ---------------------------------------------------------- episode 02: the four regions checks


# ----------------------------------------------------------------- episode 03: the model checks


# ------------------------------------------------------ episode 04: LOSO, UF1, honest and oracle
