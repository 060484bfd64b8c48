"""Root pytest configuration: nbval over the committed notebooks beside the unit tests."""

import os
import tempfile
from pathlib import Path

import pytest

# Landmark caches of a test session go to a private folder unless the caller chose one.
os.environ.setdefault("HTNET_CACHE", tempfile.mkdtemp(prefix="htnet-cache-"))
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
    if has_release():
        return
    skip = pytest.mark.skip(
        reason="HTNET_DATA does not point at the official release, which this notebook reads")
    for item in items:
        path = Path(str(item.fspath))
        if path.suffix == ".ipynb" and "load_composite(data_dir" in path.read_text():
            item.add_marker(skip)
