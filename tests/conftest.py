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


@pytest.fixture(autouse=True)
def _private_held_store(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """In-process tests all use run id 1: give each its own shared held-model folder."""
    from fedcompress.flower import held_store

    monkeypatch.setattr(held_store, "default_dir", lambda run_config, run_id: tmp_path / f"held-{run_id}")
