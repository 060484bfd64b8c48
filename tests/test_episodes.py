"""Notebooks 01-04 as the four episodes of a 90-minute lab (:mod:`htnetlib.study.lab`).

The committed episodes are checked for their lesson frame (minutes, questions, objectives, a
picture early, short markdown, the paper's equations, exercises with folded solutions, key points
last). Each episode is also run with papermill where ``HTNET_DATA`` names an empty folder: it
must run end to end on the synthetic cohort, say so, write nothing that git tracks, and every
answered exercise it records is checked again with a wrong answer, which must fail.
"""

from __future__ import annotations

import json
import os
import pickle
import re
import subprocess
from pathlib import Path

import numpy as np
import pytest

from htnetlib.cli.reproduce import NOTEBOOKS, execute
from htnetlib.io import ROOT
from htnetlib.study import lab

EPISODES = {ep.notebook: ep for ep in lab.SCHEDULE}
WORD_LIMIT = 150  # words in one markdown cell of an episode
EQUATIONS = {"01_optical_flow": (2, 3), "03_model": (4, 5, 6), "04_training_loso": (8, 9)}


def cells(stem: str) -> list[dict]:
    return json.loads((NOTEBOOKS / f"{stem}.ipynb").read_text())["cells"]


def source(cell: dict) -> str:
    return "".join(cell["source"])


def tags(cell: dict) -> list[str]:
    return cell.get("metadata", {}).get("tags", [])


def test_the_lab_takes_90_minutes_in_four_episodes():
    assert [ep.notebook[:2] for ep in lab.SCHEDULE] == ["01", "02", "03", "04"]
    assert sum(ep.minutes for ep in lab.SCHEDULE) == 90
    rows = lab.schedule_table()
    assert [r["start"] for r in rows] == [0, 25, 45, 65]


@pytest.mark.parametrize("stem", EPISODES)
def test_the_header_states_minutes_questions_and_objectives(stem):
    ep, head = EPISODES[stem], source(cells(stem)[0])
    assert head.startswith(f"# {stem[:2]} · "), f"{stem}: the first cell is not the title"
    assert f"**Teaching:** {ep.teaching} min" in head and f"**Exercises:** {ep.exercises} min" \
        in head, f"{stem}: the header's minutes differ from lab.SCHEDULE"
    assert re.search(r"\*\*Runs in:\*\* about \d", head), f"{stem}: no measured run time"


def bench_seconds() -> dict[str, tuple[float, float]]:
    """bench/RESULTS.md's lab table: episode -> (seconds with the release, without)."""
    text = (ROOT / "bench" / "RESULTS.md").read_text().split("## The lab's episodes", 1)[1]
    rows = re.findall(r"^\| (\d\d_\w+) \| (\d+) \| (\d+) \|$", text, flags=re.M)
    return {stem: (float(w), float(wo)) for stem, w, wo in rows}


@pytest.mark.parametrize("stem", EPISODES)
def test_the_stated_run_time_is_the_benchmarks(stem):
    """The header's seconds agree with bench/lab_timing.py's measurement (within 10 s or half)."""
    head = source(cells(stem)[0])
    said = re.search(r"\*\*Runs in:\*\* about (\d+) s with the release, (\d+) s without", head)
    assert said, f"{stem}: the header does not say its run time with and without the release"
    for stated, measured in zip(map(float, said.groups()), bench_seconds()[stem]):
        assert abs(stated - measured) <= max(10, measured / 2), \
            f"{stem}: the header says {stated:.0f} s, bench/RESULTS.md measured {measured:.0f} s"
    for part, most in (("**Questions**", 3), ("**Objectives**", 6)):
        assert part in head, f"{stem}: no {part}"
        block = head.split(part, 1)[1].split("**", 1)[0]
        bullets = [line for line in block.splitlines() if line.lstrip().startswith(("-", "*"))]
        assert 1 <= len(bullets) <= most, f"{stem}: {len(bullets)} bullets under {part}"


@pytest.mark.parametrize("stem", EPISODES)
def test_markdown_cells_are_short(stem):
    for i, c in enumerate(cells(stem)):
        if c["cell_type"] == "markdown":
            words = len(re.sub(r"\$\$.*?\$\$", " ", source(c), flags=re.S).split())
            assert words <= WORD_LIMIT, f"{stem}: markdown cell {i} has {words} words"


@pytest.mark.parametrize("stem", EPISODES)
def test_a_picture_comes_before_the_prose(stem):
    """The first figure is drawn before any markdown cell (after the header) of over 60 words."""
    cs = cells(stem)
    picture = next(i for i, c in enumerate(cs) if any(
        "image/png" in o.get("data", {}) for o in c.get("outputs", [])))
    prose = next((i for i, c in enumerate(cs[1:], 1)
                  if c["cell_type"] == "markdown" and len(source(c).split()) > 60), len(cs))
    assert picture < prose, f"{stem}: the first picture (cell {picture}) comes after prose {prose}"


@pytest.mark.parametrize("stem", EQUATIONS)
def test_the_papers_equations_are_shown_and_linked(stem):
    text = "\n".join(source(c) for c in cells(stem) if c["cell_type"] == "markdown")
    shown = re.findall(r"\$\$.+?\$\$", text, flags=re.S)
    assert len(shown) >= len(EQUATIONS[stem]), f"{stem}: {len(shown)} display equations"
    for n in EQUATIONS[stem]:
        assert re.search(rf"\[eqs?\.[^\]]*\b{n}\b[^\]]*\]\(\.\./docs/equations\.md[^)]*\)", text), \
            f"{stem}: eq. {n} is not linked to docs/equations.md"


@pytest.mark.parametrize("stem", EPISODES)
def test_key_points_end_the_episode_with_computed_bullets(stem):
    cs = cells(stem)
    assert source(cs[-2]).strip() == "## Key points", stem
    assert cs[-1]["cell_type"] == "code" and "Markdown(" in source(cs[-1]), stem
    shown = "".join("".join(o.get("data", {}).get("text/markdown", ""))
                    for o in cs[-1].get("outputs", []))
    assert shown.count("\n- ") + shown.startswith("- ") >= 2, f"{stem}: no key-point bullets"


def exercise_pairs(stem: str) -> list[tuple[str, dict, dict]]:
    """(key, student's cell, solution cell) of each exercise, in order."""
    cs, pairs = cells(stem), []
    for i, c in enumerate(cs):
        if "exercise" in tags(c):
            key = re.search(r"""lab\.check\(["'](\d+\.\d+)["']""", source(c))
            assert key, f"{stem}: exercise cell {i} does not call lab.check with its key"
            solution = next((d for d in cs[i + 1:] if "solution" in tags(d)), None)
            assert solution is not None, f"{stem}: exercise {key[1]} has no solution cell"
            pairs.append((key[1], c, solution))
    return pairs


@pytest.mark.parametrize("stem", EPISODES)
def test_every_exercise_has_a_folded_solution_that_was_checked(stem):
    pairs = exercise_pairs(stem)
    assert len(pairs) >= 2, f"{stem}: {len(pairs)} exercises"
    episode = str(int(stem[:2]))
    for key, student, solution in pairs:
        assert key.split(".")[0] == episode and key in lab.EXERCISES, f"{stem}: exercise {key}"
        assert solution.get("metadata", {}).get("jupyter", {}).get("source_hidden") is True, \
            f"{stem}: the solution of {key} is not collapsed"
        assert f'lab.check("{key}"' in source(solution), f"{stem}: solution {key} is not checked"
        said = lambda cell: "".join(  # noqa: E731  printed, or shown as the cell's value
            "".join(o.get("text", "")) + "".join(o.get("data", {}).get("text/plain", ""))
            for o in cell.get("outputs", []))
        assert f"Exercise {key}: not answered yet" in said(student), f"{stem}: student cell {key}"
        assert f"Exercise {key}: correct." in said(solution), f"{stem}: solution {key} unchecked"


def wrong(answer):
    """An answer that differs from ``answer`` in a way every check must notice."""
    if isinstance(answer, bool):
        return not answer
    if isinstance(answer, str):
        return answer + " (not it)"
    if isinstance(answer, dict):
        first = next(iter(answer))
        return {**answer, first: wrong(answer[first])}
    arr = np.asarray(answer)
    if arr.dtype.kind in "iub":
        return (arr + 1) if arr.ndim else int(arr) + 1
    bumped = arr.astype(np.float64) * 1.1 + 0.1
    return bumped if arr.ndim else float(bumped)


def test_a_wrong_answer_is_refused_and_a_missing_one_is_named():
    lab.EXERCISES.pop("0.1", None)
    lab.exercise("0.1", "the sum of a and b")(lambda a, b: a + b)
    try:
        assert lab.check("0.1", 5, a=2, b=3) == "Exercise 0.1: correct."
        assert lab.check("0.1", ..., a=2, b=3) == \
            "Exercise 0.1: not answered yet.\nThe answer is the sum of a and b."
        for bad in (wrong(5), wrong(np.array([5.0])), "5"):
            with pytest.raises(lab.ExerciseError, match="Exercise 0.1"):
                lab.check("0.1", bad, a=2, b=3)
    finally:
        lab.EXERCISES.pop("0.1")


def tracked_changes() -> str:
    return subprocess.run(["git", "status", "--porcelain", "--untracked-files=all"], cwd=ROOT,
                          capture_output=True, text=True, check=True).stdout


@pytest.fixture(scope="module")
def without_release(tmp_path_factory):
    """Every episode executed by papermill with HTNET_DATA an empty folder and its committed
    parameters, recording each answered exercise; returns {stem: (notebook, records)}."""
    empty = tmp_path_factory.mktemp("no-release")
    before = tracked_changes()
    done = {}
    for stem in EPISODES:
        out, rec = tmp_path_factory.mktemp(stem), tmp_path_factory.mktemp(f"{stem}-answers")
        env = {"HTNET_DATA": str(empty), lab.RECORD_ENV: str(rec),  # the lab's run may train
               "HTNET_TRAIN_PROFILES": os.environ.get("HTNET_TRAIN_PROFILES", "") + ",lab"}
        saved = {k: os.environ.get(k) for k in (*env, "HTNET_RESULTS_DIR")}
        os.environ.update(env)
        os.environ.pop("HTNET_RESULTS_DIR", None)
        try:
            execute(NOTEBOOKS / f"{stem}.ipynb", out / f"{stem}.ipynb", {}, cwd=NOTEBOOKS)
        finally:
            for k, v in saved.items():
                os.environ.pop(k, None) if v is None else os.environ.__setitem__(k, v)
        records = [pickle.loads(p.read_bytes()) for p in sorted(rec.glob("*.pkl"))]
        done[stem] = (json.loads((out / f"{stem}.ipynb").read_text()), records)
    done["git status changed"] = tracked_changes() != before
    return done


@pytest.mark.notebooks
@pytest.mark.slow
def test_the_lab_runs_without_the_release_and_writes_nothing_tracked(without_release):
    assert not without_release["git status changed"], "an episode without the release wrote a " \
        "file git tracks (its outputs belong in results/notebooks/lab/)"
    for stem in EPISODES:
        nb, _ = without_release[stem]
        outputs = [o for c in nb["cells"] for o in c.get("outputs", [])]
        assert not [o for o in outputs if o["output_type"] == "error"], stem
        shown = json.dumps(outputs)
        assert "Data: the synthetic cohort" in shown, f"{stem}: does not say which data ran"
    assert (lab.LAB_FOLDER / "results").is_dir()


@pytest.mark.notebooks
@pytest.mark.slow
@pytest.mark.parametrize("stem", EPISODES)
def test_every_solution_passes_and_a_wrong_answer_fails_without_the_release(without_release,
                                                                            stem):
    _, records = without_release[stem]
    keys = {r["key"] for r in records}
    assert keys >= {key for key, _, _ in exercise_pairs(stem)}, f"{stem}: an unchecked solution"
    for r in records:
        assert lab.check(r["key"], r["answer"], **r["given"]) == f"Exercise {r['key']}: correct."
        with pytest.raises(lab.ExerciseError):
            lab.check(r["key"], wrong(r["answer"]), **r["given"])


def test_the_readme_states_the_timetable():
    text = (ROOT / "README.md").read_text()
    lab_section = text.split("## The 90-minute lab", 1)[1].split("\n## ", 1)[0]
    assert [int(m) for m in re.findall(r"\((\d+) min\)", lab_section)] == \
        [ep.minutes for ep in lab.SCHEDULE]
