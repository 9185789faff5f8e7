"""The example app `examples/quickstart-compressed` runs through `flwr run` (simulation engine, private
FLWR_HOME and ports, SuperLink stopped afterwards): compressed both ways, accuracy rising, bytes in the ledger."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import pytest

from fedcompress.launch.simulation import run_flower_app

ROOT = Path(__file__).resolve().parents[2]
EXAMPLE = ROOT / "examples" / "quickstart-compressed"


def test_quickstart_compressed_through_flwr_run(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PYTHONPATH", str(ROOT))  # the Flower processes import this checkout's fedcompress
    monkeypatch.setenv(
        "PATH", f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}"
    )  # flower-superlink
    tail = run_flower_app(
        EXAMPLE, {"out-dir": str(tmp_path), "num-server-rounds": 4}, num_supernodes=2, echo=None, timeout=400
    )
    rounds_file = tmp_path / "rounds.json"
    assert rounds_file.exists(), "\n".join(tail[-30:])
    rounds = json.loads(rounds_file.read_text())
    acc = [r["accuracy"] for r in rounds]
    assert len(acc) == 5 and acc[-1] > acc[0] + 0.3 and acc[-1] > 0.7, acc
    rows = [json.loads(line) for line in (tmp_path / "ledger.jsonl").read_text().splitlines()]
    train_up = [r for r in rows if r["direction"] == "uplink" and r["message_type"] == "train"]
    train_down = [r for r in rows if r["direction"] == "downlink" and r["message_type"] == "train"]
    assert len(train_up) == 8 and not any(r["rejected"] for r in train_up)
    assert all(r["codec"].startswith("topk") and r["encoded_bytes"] * 10 < r["raw_bytes"] for r in train_up)
    later_down = [r for r in train_down if r["round"] > 1]  # first contact: the full model; then 8-bit deltas
    assert later_down and all(
        r["codec"].startswith("uniform(8)") and r["encoded_bytes"] * 3 < r["raw_bytes"] for r in later_down
    )
    assert any(r["message_type"].startswith("query") for r in rows)  # the capability query is measured too
    for r in rounds[1:]:
        print(
            f"round {r['round']}: acc {r['accuracy']:.3f} up {r['uplink_message_bytes']} B down {r['downlink_message_bytes']} B"
        )
