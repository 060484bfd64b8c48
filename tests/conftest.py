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


@pytest.fixture
def first_confirmation():
    """Writes notebook 12's confirmation and choosing tables (results/tables, ``cpu``) into a
    folder's ``tables``, as a README headline block reads them; returns that ``tables``."""
    import pandas as pd

    def write(root: Path) -> Path:
        tables = root / "tables"
        tables.mkdir()
        row = {"role": "x", "variant": "all three, whole map", "rule": "vote",
               "seeds": "3,4,5", "Full UF1": 0.716, "Full UF1 95% CI": "0.657-0.769",
               "UF1 - plain honest": 0.054, "difference 95% CI": "+0.015 to +0.093"}
        pd.DataFrame([row, dict(row, **{"Full UF1": 0.663})]).to_csv(
            tables / "confirmation_cpu.csv", index=False)
        pd.DataFrame([dict(row, honest=True, seeds="0,1,2", **{"Full UF1": 0.735})]).to_csv(
            tables / "honest_selection_cpu.csv", index=False)
        return tables

    return write
