"""Shared pytest fixtures."""

import os
import pathlib

import pytest


@pytest.fixture(scope="session")
def fflux_dir() -> pathlib.Path:
    """Folder of the shared FFLUX CSVs ($TLGP_DATA_DIR, else <repo>/../shared/data/fflux); skips if absent."""
    default = pathlib.Path(__file__).resolve().parents[1].parent / "shared" / "data" / "fflux"
    path = pathlib.Path(os.environ.get("TLGP_DATA_DIR", default))
    if not path.is_dir():
        pytest.skip(f"FFLUX data not found at {path} (set TLGP_DATA_DIR to the folder of the ICHOR CSVs)")
    return path
