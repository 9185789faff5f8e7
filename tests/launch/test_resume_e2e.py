"""Exact resume through Flower's simulation engine: a compressed run with error feedback and FedAdam, killed with
SIGKILL (the launcher's whole process tree, the detached SuperLink and Ray included) at a random round, then
resumed with `simulate(resume=...)`, ends with the same final model, bit for bit, as an uninterrupted run; its
ledger and metrics have every round once."""

from __future__ import annotations

import json
import os
import random
from pathlib import Path

import pytest
import torch

from fedcompress.errors import RunError
from fedcompress.launch.simulation import simulate
from simulations.resume_by_hand import kill_at_round

ROUNDS = 6
BASE = {
    "dataset": "digits",
    "num-partitions": 5,
    "clients-per-round": 3,
    "num-server-rounds": ROUNDS,
    "local-epochs": 1,
    "learning-rate": 0.1,
    "batch-size": 16,
    "partitioning": "dirichlet",
    "seed": 11,
    "strategy": "fedadam",
    "server-learning-rate": 0.05,
    "uplink": "topk(0.1) > ef > uniform(4) > entropy",
    "downlink": "topk(0.5) > uniform(8) > entropy",
}
LEDGER_KEY = ("round", "partition_id", "direction", "message_type", "payload_bytes", "raw_bytes", "encoded_bytes",
              "codec", "rejected")  # fmt: skip


def _rows(run_dir: Path, name: str) -> list[dict]:
    return [json.loads(line) for line in (run_dir / name).read_text().splitlines()]


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path, int]:
    root = tmp_path_factory.mktemp("resume")
    whole, killed = root / "whole", root / "killed"
    simulate({**BASE, "run-dir": str(whole)}, echo=None)
    kill_round = random.Random(os.environ.get("FEDCOMPRESS_KILL_SEED")).randint(1, ROUNDS - 1)
    print(f"killing at round {kill_round}")
    kill_at_round(BASE, killed, kill_round, f"resume-test-{os.getpid()}-{kill_round}", limit=600)
    summary = simulate({}, echo=None, resume=killed)
    assert summary["status"] == "complete"
    return whole, killed, kill_round


def test_resumed_model_is_bit_identical(runs: tuple[Path, Path, int]) -> None:
    whole, killed, _ = runs
    a = torch.load(whole / "models" / "global.pt")
    b = torch.load(killed / "models" / "global.pt")
    assert list(a) == list(b)
    for k in a:
        assert a[k].dtype == b[k].dtype and torch.equal(a[k], b[k]), k


def test_metrics_and_ledger_have_every_round_once(runs: tuple[Path, Path, int]) -> None:
    whole, killed, _ = runs
    mw, mk = _rows(whole, "metrics.jsonl"), _rows(killed, "metrics.jsonl")
    assert [m["round"] for m in mk] == list(range(ROUNDS + 1))
    # the uplink codec seed mixes in Flower's random node id (a varint in the payload header), so uplink sizes
    # may differ by a few bytes between any two launches; a resumed round also counts its discovery queries
    same = ("round", "accuracy", "loss", "train_loss", "rejected", "downlink_payload_bytes")
    assert [{k: m[k] for k in same} for m in mw] == [{k: m[k] for k in same} for m in mk]
    train = [r for r in _rows(killed, "ledger.jsonl") if r["message_type"] == "train"]
    lw = sorted(
        tuple(r[k] for k in LEDGER_KEY) for r in _rows(whole, "ledger.jsonl") if r["message_type"] == "train"
    )
    lk = sorted(tuple(r[k] for k in LEDGER_KEY) for r in train)
    assert [x for x in lk if x[2] == "downlink"] == [x for x in lw if x[2] == "downlink"]
    assert [x[:4] for x in lk] == [x[:4] for x in lw]  # every round, client and direction once
    # the resumed run re-queried its (new) nodes: recorded once, at the round it continued with
    queries = {r["round"] for r in _rows(killed, "ledger.jsonl") if r["message_type"] != "train"}
    assert len(queries) <= 2 and 0 in queries


def test_checkpoint_of_another_config_is_refused(runs: tuple[Path, Path, int]) -> None:
    _, killed, _ = runs
    (killed / "summary.json").unlink()
    try:
        with pytest.raises(RunError, match=r"local-epochs: 1 -> 2"):
            simulate({"local-epochs": 2}, echo=None, resume=killed)
    finally:
        (killed / "summary.json").write_text(json.dumps({"status": "complete"}))
