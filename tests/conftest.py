"""Shared test setup: real data from ../shared/data, a private cache, Flower kept offline."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

PROJECT = Path(__file__).resolve().parents[1]
SHARED_DATA = Path(os.environ.get("FEDCOMPRESS_DATA_DIR", PROJECT.parent / "shared" / "data"))

os.environ.setdefault("FLWR_TELEMETRY_ENABLED", "0")
os.environ.setdefault("FLWR_DISABLE_UPDATE_CHECK", "1")


@pytest.fixture(scope="session")
def shared_data() -> Path:
    if not SHARED_DATA.exists():
        pytest.fail(f"shared data not found at {SHARED_DATA}: set FEDCOMPRESS_DATA_DIR")
    return SHARED_DATA
