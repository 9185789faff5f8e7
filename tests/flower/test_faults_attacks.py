"""Failing, slow and poisoning clients through the real server loop (`serverapp._run`) and the real ClientApp
(its fault, delivery, compression and attack mods) in-process: failures counted per round and reason, a round
with too few replies keeps the previous model, the norm bound rejects boosted updates, error feedback follows
what the server applied."""

from __future__ import annotations

import json
import math
import time
from pathlib import Path

import numpy as np
from flwr.app import ConfigRecord, Context, Message, MetricRecord, RecordDict

from fedcompress.config import RunConfig, defaults
from fedcompress.flower import serverapp
from fedcompress.flower.attacks import attackers
from fedcompress.flower.clientapp import app as client_app
from fedcompress.flower.faults import PENDING, PENDING_ROUND, delivery_mod, fault_of
from fedcompress.flower.payload import payload_record
from fedcompress.flower.protocol import APPLIED_ROUND, RESIDUAL
from fedcompress.flower.records import numpy_to_record, record_to_numpy
from fedcompress.flower.sampling import sample_partitions
from fedcompress.ledger import RunRecorder
from tests.flower.loopback import LoopbackGrid

SPARSE = "topk(0.1) > ef > uniform(4) > entropy"


class TimeoutGrid(LoopbackGrid):
    """Loopback delivery; a reply that took longer than the timeout is lost, as Flower's send_and_receive drops it."""

    def send_and_receive(self, messages, *, timeout=None):  # noqa: ANN001, ANN201
        out = []
        for msg in messages:
            t0 = time.monotonic()
            reply = super().send_and_receive([msg], timeout=timeout)[0]
            if timeout is None or time.monotonic() - t0 <= timeout:
                out.append(reply)
        return out


def _run(tmp_path: Path, **kw: object) -> tuple[RunConfig, list[dict], list[dict]]:
    base = {**defaults(), "num-partitions": 6, "clients-per-round": 4, "partitioning": "iid", "local-epochs": 1,
            "seed": 2, "num-server-rounds": 5, "uplink": SPARSE, "checkpoint": False, "run-dir": str(tmp_path)}  # fmt: skip
    cfg = RunConfig.from_run_config({**base, **kw})
    grid = TimeoutGrid(client_app, cfg.as_run_config(), cfg.num_partitions)
    recorder = RunRecorder(tmp_path, cfg.as_run_config(), cfg.digest())
    serverapp._run(grid, cfg, recorder, None, None)  # type: ignore[arg-type]
    recorder.finish()
    rows = [json.loads(x) for x in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    ledger = [json.loads(x) for x in (tmp_path / "ledger.jsonl").read_text().splitlines()]
    return cfg, rows, ledger


def test_failures_and_stragglers_counted_by_reason_and_quorum_kept(tmp_path: Path) -> None:
    cfg, rows, ledger = _run(tmp_path, **{"fail-prob": 0.3, "straggler-prob": 0.3, "straggler-delay": 0.6,
                                           "round-timeout": 0.5, "min-reply-fraction": 0.5})  # fmt: skip
    seen = {"exception": 0, "timeout": 0, "kept": 0}
    for row in rows[1:]:
        r = row["round"]
        faults = [
            fault_of(cfg.seed, r, p, 0.3, 0.3) for p in sample_partitions(cfg.seed, r, list(range(6)), 4)
        ]
        assert row["failed_exception"] == faults.count("fail"), r
        assert row["failed_timeout"] == faults.count("straggle"), r
        ok = faults.count("")
        assert row["kept_previous_model"] == (ok < math.ceil(0.5 * 4)), r
        timeouts = [x for x in ledger if x["round"] == r and x["rejected"].startswith("timeout")]
        assert len(timeouts) == row["failed_timeout"]
        seen["exception"] += row["failed_exception"]
        seen["timeout"] += row["failed_timeout"]
        seen["kept"] += row["kept_previous_model"]
    assert seen["exception"] and seen["timeout"]  # the seed exercises both (and the run completed)
    assert rows[-1]["accuracy"] is not None


def test_norm_bound_rejects_boosted_attackers(tmp_path: Path) -> None:
    cfg, rows, ledger = _run(tmp_path, **{"attack": "scale", "attack-fraction": 0.34, "attack-scale": 50.0,
                                           "norm-bound": 3.0, "num-server-rounds": 3})  # fmt: skip
    bad = attackers(cfg.seed, 6, 0.34)
    rejected = {(x["round"], x["partition_id"]) for x in ledger if x["rejected"].startswith("norm bound")}
    sampled = {(r, p) for r in (1, 2, 3) for p in sample_partitions(cfg.seed, r, list(range(6)), 4)}
    assert rejected == {(r, p) for r, p in sampled if p in bad}
    assert sum(r["failed_norm_bound"] for r in rows) == len(rejected) > 0
    assert rows[-1]["accuracy"] > rows[0]["accuracy"] + 0.1  # it learns from the honest ones


def test_lost_update_goes_back_into_the_residual() -> None:
    """A client whose last update was not applied restores residual = old residual + what it sent."""
    ctx = Context(1, 1, {"partition-id": 0}, RecordDict(), {})
    residual = {"w": np.array([0.5, -0.25], np.float32)}
    from fedcompress.codecs import Pipeline

    sent = Pipeline.parse("uniform(8)").encode({"w": np.array([1.0, 2.0], np.float32)}, seed=0)

    def call_next(msg: Message, context: Context) -> Message:
        context.state[RESIDUAL] = numpy_to_record(residual)
        return Message(RecordDict({"arrays": payload_record(sent.payload), "metrics": MetricRecord({"n": 1})}),
                       reply_to=msg)  # fmt: skip

    from fedcompress.flower.compat import set_task_identity

    set_task_identity()

    def train(rnd: int, applied: int) -> Message:
        msg = Message(RecordDict({"config": ConfigRecord({"server-round": rnd, APPLIED_ROUND: applied})}),
                      message_type="train", dst_node_id=1)  # fmt: skip
        return msg

    delivery_mod(train(1, -1), ctx, call_next)
    assert int(ctx.state[PENDING_ROUND]["round"]) == 1
    pending = record_to_numpy(ctx.state[PENDING])["w"]
    from fedcompress.codecs import decode

    decoded = decode(sent.payload, expected={"w": ((2,), "float32")})["w"]
    np.testing.assert_allclose(pending, residual["w"] + decoded)
    seen = {}

    def peek(msg: Message, context: Context) -> Message:
        seen["residual"] = record_to_numpy(context.state[RESIDUAL])["w"].copy()
        return call_next(msg, context)

    delivery_mod(train(2, -1), ctx, peek)  # round 1's update never applied: it is back in the residual
    np.testing.assert_array_equal(seen["residual"], pending)
    delivery_mod(train(3, 2), ctx, peek)  # round 2's was applied: the residual stays
    np.testing.assert_array_equal(seen["residual"], residual["w"])


def test_a_non_finite_aggregate_never_becomes_the_global_model() -> None:
    """Whatever made it (an overflow in the inner strategy's arithmetic, a NaN that slipped past a custom inner
    strategy), a non-finite aggregate is not adopted; the next finite one is."""
    from flwr.serverapp.strategy import FedAvg

    from fedcompress.flower.health import Failures, Finite

    def reply(value: float) -> Message:
        content = RecordDict({"arrays": numpy_to_record({"w": np.full(3, value, np.float32)}),
                              "metrics": MetricRecord({"num-examples": 1})})  # fmt: skip
        msg = Message(content, dst_node_id=1, message_type="train")
        return Message(content, reply_to=msg)

    failures = Failures()
    guard = Finite(FedAvg(), failures=failures)
    arrays, metrics = guard.aggregate_train(1, [reply(1.0), reply(float("nan"))])
    assert arrays is None and 1 in failures.kept_previous and failures.row(1)["kept_previous_model"]
    arrays, _ = guard.aggregate_train(2, [reply(1.0), reply(3.0)])
    assert arrays is not None and 2 not in failures.kept_previous
    np.testing.assert_allclose(record_to_numpy(arrays)["w"], 2.0)
