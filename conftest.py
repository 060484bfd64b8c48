"""Root pytest configuration: nbval over the committed notebooks beside the unit tests."""

import os
import tempfile
from pathlib import Path

import pytest

# Landmark caches of a test session go to a private folder unless the caller chose one.
os.environ.setdefault("HTNET_CACHE", tempfile.mkdtemp(prefix="htnet-cache-"))
# Tests never write into tracked files: the committed notebooks that nbval executes send their
# figures, tables, findings and timings here (htnetlib.study.figures.results_dir), and still read
# the stored runs from the repository's results/ (figures.stored_dir).
os.environ.setdefault("HTNET_RESULTS_DIR", tempfile.mkdtemp(prefix="htnet-results-"))
# Tests train only tiny runs: a committed notebook whose stored run is missing fails at once
# instead of training the cpu profile for minutes (notebook kernels inherit this).
os.environ.setdefault("HTNET_TRAIN_PROFILES", "smoke,custom")


def has_release() -> bool:
    root = os.environ.get("HTNET_DATA")
    return bool(root) and (Path(root) / "combined_3_class2_for_optical_flow.csv").is_file()


def pytest_collectstart(collector):
    # nbval compares outputs of cells marked NBVAL_CHECK_OUTPUT; never stderr (progress bars)
    if getattr(collector, "path", None) is not None and collector.path.suffix == ".ipynb":
        collector.skip_compare += ("text/html", "application/javascript", "stderr")


def pytest_collection_modifyitems(config, items):
    """Markers for a fast inner loop (``pytest -m "not notebooks and not slow"``):
    ``notebooks`` for nbval cells and the papermill tests, ``release`` for tests that read the
    official release (fixtures ``real_root``/``real``, or a notebook that loads it)."""
    skip = pytest.mark.skip(
        reason="HTNET_DATA does not point at the official release, which this notebook reads")
    episode_skip = pytest.mark.skip(
        reason="HTNET_DATA does not point at the official release: this episode's committed "
               "outputs are the release's (tests/test_episodes.py runs it on the synthetic cohort)")
    release = has_release()
    for item in items:
        path = Path(str(item.fspath))
        reads_release = {"real_root", "real"} & set(getattr(item, "fixturenames", ()))
        if path.suffix == ".ipynb" or path.name == "test_notebooks.py":
            item.add_marker(pytest.mark.notebooks)
            # an episode of the lab runs without the release too, on the synthetic cohort
            # (tests/test_episodes.py), but its committed outputs are the release's
            if path.suffix == ".ipynb" and "load_composite(data_dir" in path.read_text():
                reads_release = True
            if path.suffix == ".ipynb" and "lab.lesson_data(data_dir" in path.read_text():
                item.add_marker(pytest.mark.release)
                if not release:
                    item.add_marker(episode_skip)
        if reads_release:
            item.add_marker(pytest.mark.release)
            if not release and path.suffix == ".ipynb":
                item.add_marker(skip)
