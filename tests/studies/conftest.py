"""Synthetic run directories, written the way fedcompress.ledger.recorder writes real ones."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from fedcompress.launch.simulation import resolve_config
from fedcompress.ledger.recorder import summarize

ENV = {"fedcompress": "0.1.0", "flwr": "1.42.0", "torch": "t", "numpy": "n", "python": "3.11", "machine": "x"}
WriteRun = Callable[..., Path]


def write_run(
    run_dir: Path,
    overrides: dict[str, Any],
    accuracies: list[float | None],
    up_bytes: int,
    down_bytes: int,
    *,
    seconds: float = 1.0,
    status: str = "complete",
) -> Path:
    """accuracies[0] is round 0 (initial evaluation); every later round moves up_bytes / down_bytes."""
    cfg = resolve_config(overrides)
    run_dir.mkdir(parents=True, exist_ok=True)
    config = {**cfg.as_run_config(), "run-dir": str(run_dir), "data-dir": "/somewhere/data"}
    meta = {"config": config, "config_hash": cfg.digest(), "environment": ENV}
    (run_dir / "config.json").write_text(json.dumps(meta))
    rows, up_cum, down_cum = [], 0, 0
    for rnd, acc in enumerate(accuracies):
        up, down = (up_bytes, down_bytes) if rnd else (0, 0)
        up_cum, down_cum = up_cum + up, down_cum + down
        rows.append({
            "round": rnd, "seconds": seconds * (5 if rnd == 1 else 1), "accuracy": acc, "loss": 1.0,
            "train_loss": None, "clients": 2, "rejected": 0, "uplink_bytes": up, "downlink_bytes": down,
            "uplink_payload_bytes": up, "downlink_payload_bytes": down, "uplink_raw_bytes": up,
            "downlink_raw_bytes": down, "uplink_bytes_cum": up_cum, "downlink_bytes_cum": down_cum,
        })  # fmt: skip
    (run_dir / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    (run_dir / "ledger.jsonl").write_text("")
    (run_dir / "summary.json").write_text(json.dumps({**summarize(rows), "status": status, "error": ""}))
    return run_dir


@pytest.fixture
def make_run() -> WriteRun:
    return write_run
