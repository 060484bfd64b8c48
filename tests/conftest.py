"""Shared fixtures: a small synthetic release made here, and the real release where it exists."""

import os
from pathlib import Path

import pytest


@pytest.fixture(scope="session")
def synthetic_root(tmp_path_factory) -> Path:
    from htnetlib.data import write_synthetic_release

    return write_synthetic_release(tmp_path_factory.mktemp("release"))


@pytest.fixture(scope="session")
def synthetic(synthetic_root):
    from htnetlib.data import load_composite

    return load_composite(synthetic_root)


@pytest.fixture(scope="session")
def real_root() -> Path:
    root = os.environ.get("HTNET_DATA")
    if not root:
        pytest.skip("HTNET_DATA is not set: the official release is needed for this test")
    if not (Path(root) / "combined_3_class2_for_optical_flow.csv").is_file():
        pytest.skip(f"HTNET_DATA={root} holds no release (no combined_3_class2_for_optical_flow.csv)")
    return Path(root)


@pytest.fixture(scope="session")
def real(real_root):
    from htnetlib.data import load_composite

    return load_composite(real_root)
