"""Flower's real deployment engine on loopback: a SuperLink and SuperNodes with TLS and node authentication.

Slow by nature (a fresh ClientApp process per message plus 3 s polling): kept to 2 nodes x 2 rounds.
"""

from __future__ import annotations

import json
import math
import subprocess
from pathlib import Path

import pytest

from fedcompress.launch.certs import generate_node_keys
from fedcompress.launch.deployment import Federation, deploy
from fedcompress.launch.process import alive as _alive
from fedcompress.launch.process import tagged as tagged_pids

COMPRESSION = {
    "uplink": "topk(0.05) > ef > uniform(4) > entropy",
    "downlink": "topk(0.2) > uniform(4) > entropy",
}


def test_two_supernodes_two_rounds_with_tls_auth_and_compression(tmp_path: Path, shared_data: Path) -> None:
    result = deploy(
        2, 2, tls=True, auth=True, workdir=tmp_path, timeout=400,
        run_config={**COMPRESSION, "data-dir": str(shared_data.resolve())},
    )  # fmt: skip
    assert result["rounds"] == 2 and result["tls"] and result["auth"]
    assert isinstance(result["final_accuracy"], float) and math.isfinite(result["final_accuracy"])
    run_dir = Path(result["run_dir"])
    assert json.loads((run_dir / "summary.json").read_text())["status"] == "complete"
    ledger = [json.loads(line) for line in (run_dir / "ledger.jsonl").read_text().splitlines()]
    for r in (1, 2):
        up = [x for x in ledger if x["round"] == r and x["direction"] == "uplink"]
        assert sorted(x["partition_id"] for x in up) == [0, 1], r
        assert all(x["encoded_bytes"] * 10 < x["raw_bytes"] for x in up), up
        down = [x for x in ledger if x["round"] == r and x["direction"] == "downlink"]
        assert down and all(x["encoded_bytes"] < x["raw_bytes"] for x in down), down
    assert not [p for p in result["pids"] if _alive(p)], "a started process is still running"
    assert not tagged_pids(result["tag"]), "a process from this deployment is still running"


def test_unregistered_supernode_is_refused(tmp_path: Path) -> None:
    """With --enable-supernode-auth, a SuperNode whose key was never registered is refused at activation
    (HTTP 412, not retried) and exits on its own, well within the bound."""
    fed = Federation(tmp_path, tls=True, auth=True)
    try:
        fed.start_superlink()
        private, _ = generate_node_keys(tmp_path / "keys", "intruder")
        node = fed.start_supernode(0, 1, private)
        try:
            code = node.wait(timeout=90)
        except subprocess.TimeoutExpired:
            pytest.fail("the unregistered SuperNode was neither refused nor stopped within 90 s")
    finally:
        fed.stop()
    log = (fed.logs / "supernode-0.log").read_text(errors="replace")
    assert code != 0, log
    assert "Failed to activate SuperNode" in log, log
    assert not tagged_pids(fed.tag)
