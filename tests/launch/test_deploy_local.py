"""Flower's real deployment engine on loopback: a SuperLink and SuperNodes with TLS and node authentication.

Slow by nature (a fresh ClientApp process per message plus 3 s polling): one federated run, 3 nodes x 3 rounds.
"""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest

from fedcompress.launch.certs import generate_node_keys
from fedcompress.launch.deployment import Federation, Restart, deploy
from fedcompress.launch.process import alive as _alive
from fedcompress.launch.process import tagged as tagged_pids
from fedcompress.launch.progress import wire_agrees

COMPRESSION = {
    "uplink": "topk(0.05) > ef > uniform(4) > entropy",
    "downlink": "topk(0.2) > uniform(4) > entropy",
}


def test_three_supernodes_one_restarted_bytes_checked_on_the_wire(tmp_path: Path, shared_data: Path) -> None:
    """TLS + auth, 3 SuperNodes through the byte-counting proxy, 3 compressed rounds, SuperNode 1 killed after
    round 1 and started again (same key, so the same node id): the run completes, accuracy rises, every
    message is in the ledger, the restarted node is sent the full model and contributes again, and the ledger's
    bytes agree with what crossed the wire within the stated tolerance."""
    result = deploy(
        3, 3, tls=True, auth=True, workdir=tmp_path, timeout=600, wire_proxy=True, restart=Restart(1, 1),
        run_config={**COMPRESSION, "data-dir": str(shared_data.resolve())},
    )  # fmt: skip
    assert result["rounds"] == 3 and result["restarts"] == 1
    run_dir = Path(result["run_dir"])
    rows = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    assert rows[-1]["accuracy"] > rows[0]["accuracy"] + 0.1, rows
    ledger = [json.loads(line) for line in (run_dir / "ledger.jsonl").read_text().splitlines()]
    for r in (1, 2, 3):
        down = [x for x in ledger if x["round"] == r and x["direction"] == "downlink"]
        assert sorted(x["partition_id"] for x in down) == [0, 1, 2], (r, down)
        up = [x for x in ledger if x["round"] == r and x["direction"] == "uplink"]
        assert len(up) == 3, (r, up)  # a failed reply is recorded too, with its reason
    up3 = [x for x in ledger if x["round"] == 3 and x["direction"] == "uplink"]
    assert sorted(x["partition_id"] for x in up3 if not x["rejected"]) == [0, 1, 2], up3
    assert all(x["encoded_bytes"] * 10 < x["raw_bytes"] for x in up3), up3
    failed = [x for x in ledger if x["direction"] == "uplink" and x["rejected"]]
    assert failed and all(x["round"] == 2 for x in failed), failed  # only the round after the restart
    resent = [
        x for x in ledger if x["round"] == 3 and x["direction"] == "downlink" and x["partition_id"] == 1
    ]
    assert resent[0]["codec"] == "identity", resent  # it lost its model: the server sent the full one
    wire = result["wire"]
    print("wire vs ledger:", json.dumps(wire))  # shown with -s: the numbers behind the tolerance
    assert wire_agrees(wire), wire
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
