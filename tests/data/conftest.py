"""Data tests read the real datasets under ../shared/data; caches go to a per-session temp dir unless the
caller set $FEDCOMPRESS_CACHE_DIR (then expensive decodes such as CIFAR-10 are reused between runs)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from fedcompress.data import default_data_dir


@pytest.fixture(scope="session", autouse=True)
def _cache_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    if os.environ.get("FEDCOMPRESS_CACHE_DIR"):
        yield Path(os.environ["FEDCOMPRESS_CACHE_DIR"])
        return
    path = tmp_path_factory.mktemp("fedcompress-cache")
    os.environ["FEDCOMPRESS_CACHE_DIR"] = str(path)
    yield path
    os.environ.pop("FEDCOMPRESS_CACHE_DIR", None)


@pytest.fixture(scope="session")
def data_dir() -> Path:
    path = default_data_dir()
    if not path.is_dir():
        pytest.fail(f"shared real-data folder not found at {path}: set $FEDCOMPRESS_DATA_DIR")
    return path
