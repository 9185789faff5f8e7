"""Less fixed cost per message (issue 13): a compressed train reply is one frame in one record, and smaller than
protocol 1's records around the same payload by hundreds of bytes; the inner strategy still sees exactly the
records and metrics the client's train function returned (less the model, which it gets decoded)."""

from __future__ import annotations

from collections import OrderedDict

import numpy as np
import pytest
from flwr.app import Array, ArrayRecord, ConfigRecord, Context, Message, MetricRecord, RecordDict
from flwr.clientapp import ClientApp
from flwr.serverapp.strategy import FedAvg

from fedcompress.bench import reply as bench
from fedcompress.flower.mod import attach, make_compression_mod
from fedcompress.flower.payload import read_frame
from fedcompress.flower.protocol import (
    FRAME_STYPE,
    LEGACY_STYPE,
    METADATA_METRIC,
    PARTITION_ID,
    PROTOCOL,
    QUERY_ACTION,
)
from fedcompress.flower.records import numpy_to_record, record_to_numpy, wire_bytes
from fedcompress.flower.sampling import discover_partitions
from fedcompress.flower.strategy import FedCompress
from tests.flower.loopback import LoopbackGrid

SPARSE = "topk(0.05) > ef > uniform(4) > entropy"
DOWN = "topk(0.2) > uniform(4) > entropy"
MODEL = OrderedDict(
    (k, np.random.default_rng(0).normal(size=s).astype(np.float32))
    for k, s in [("conv.weight", (16, 1, 3, 3)), ("fc.weight", (10, 400)), ("fc.bias", (10,))]
)
MODEL["bn.num_batches_tracked"] = np.array(3, np.int64)  # an exact tensor travels in the frame too
METRICS = {"num-examples": 37, "train_loss": 0.6931471805599453, "big": 2**62, "neg": -3, "zero": -0.0}


class Spy(FedAvg):
    """FedAvg that keeps what each reply looked like when it reached it."""

    seen: list[list[tuple[str, str, dict | None]]]

    def aggregate_train(self, server_round, replies):  # noqa: ANN001, ANN201
        replies = list(replies)
        self.seen.append([
            [(k, type(v).__name__, dict(v) if isinstance(v, MetricRecord) else None) for k, v in r.content.items()]
            for r in replies
        ])  # fmt: skip
        return super().aggregate_train(server_round, replies)


def _client(extra: bool) -> ClientApp:
    app = ClientApp()
    attach(app)

    @app.train(mods=[make_compression_mod(lambda ctx, cfg: MODEL)])
    def train(msg: Message, context: Context) -> Message:
        step = np.random.default_rng(int(msg.content["config"]["server-round"]))
        local = {
            k: v + step.normal(0, 0.01, v.shape).astype(v.dtype) if v.dtype.kind == "f" else v + 1
            for k, v in record_to_numpy(msg.content["arrays"]).items()
        }
        records = {"arrays": numpy_to_record(local)}
        if extra:
            records["note"] = ConfigRecord({"device": "phone"})
        records["metrics"] = MetricRecord(dict(METRICS))
        return Message(RecordDict(records), reply_to=msg)

    return app


class Capturing(LoopbackGrid):
    """Keeps each train message and reply as they crossed (the client mod and the server decode in place)."""

    strategy: FedCompress

    def send_and_receive(self, messages, *, timeout=None):  # noqa: ANN001, ANN201
        messages = list(messages)
        self.down = [(m, RecordDict(dict(m.content))) for m in messages if m.metadata.message_type == "train"]
        self.down_bytes = [wire_bytes(m) for m, _ in self.down]
        replies = list(super().send_and_receive(messages, timeout=timeout))
        self.up = [(r, RecordDict(dict(r.content))) for r in replies if r.metadata.message_type == "train"]
        self.up_bytes = [wire_bytes(r) for r in replies if r.metadata.message_type == "train"]
        return replies


def _run(uplink: str, extra: bool = False, rounds: int = 2) -> tuple[Spy, Capturing]:
    grid = Capturing(_client(extra), {}, 2)
    spy = Spy(fraction_evaluate=0.0, min_available_nodes=1, min_train_nodes=1)
    spy.seen = []
    strategy = FedCompress(
        spy, partitions=discover_partitions(grid, 2), clients_per_round=2, seed=1, uplink=uplink, downlink=DOWN,
        shared_initial=MODEL,
    )  # fmt: skip
    arrays = numpy_to_record(MODEL)
    for rnd in range(1, rounds + 1):
        msgs = strategy.configure_train(rnd, arrays, ConfigRecord(), grid)
        arrays, _ = strategy.aggregate_train(rnd, grid.send_and_receive(msgs))
        assert arrays is not None and not strategy.rejections.get(rnd)
    grid.strategy = strategy
    return spy, grid


def _protocol_1_reply(reply: Message, content: RecordDict, sent: Message) -> Message:
    """The same reply as protocol 1 sent it: a MetricRecord with our metric, the payload as a numpy-style Array
    in an ArrayRecord, exact tensors as Arrays beside it."""
    frame = read_frame(content["arrays"])
    assert frame is not None and frame.metrics is not None
    arrays = {
        "payload": Array(dtype="uint8", shape=(len(frame.payload),), stype=LEGACY_STYPE, data=frame.payload)
    }
    arrays.update((k, Array(t.numpy())) for k, t in frame.exact.items())
    metrics = MetricRecord({**frame.metrics.values, METADATA_METRIC: frame.metadata_bytes})
    return Message(RecordDict({"metrics": metrics, "arrays": ArrayRecord(arrays)}), reply_to=sent)


def test_reply_is_one_record_and_hundreds_of_bytes_smaller_than_protocol_1s() -> None:
    _, grid = _run(SPARSE)
    for (reply, content), now in zip(grid.up, grid.up_bytes, strict=True):
        assert [type(v).__name__ for v in content.values()] == ["ConfigRecord"]  # metrics folded in
        sent = next(m for m, _ in grid.down if m.metadata.dst_node_id == reply.metadata.src_node_id)
        old = wire_bytes(_protocol_1_reply(reply, content, sent))
        payload = len(read_frame(content["arrays"]).payload)
        assert now <= old - 600, (now, old)  # the ArrayRecord, two Arrays, a chunk and the MetricRecord gone
        assert now - payload <= (old - payload) / 2  # the fixed cost around the payload at least halved


def test_ledger_counts_the_frame_and_the_metadata_bytes_it_carries() -> None:
    """The codec's metadata bytes now travel in the frame, not as a metric: the ledger still records them, and
    the real serialized bytes of every reply."""
    _, grid = _run(SPARSE)
    frames = [read_frame(content["arrays"]) for _, content in grid.up]
    totals = grid.strategy.ledger.round_totals(2)
    assert totals["uplink_message_bytes"] == sum(grid.up_bytes)
    assert totals["uplink_metadata_bytes"] == sum(f.metadata_bytes for f in frames) > 0
    exact = sum(len(t.data) for f in frames for t in f.exact.values())
    assert totals["uplink_encoded_bytes"] == sum(len(f.payload) for f in frames) + exact
    assert totals["uplink_payload_bytes"] == sum(wire_bytes(content["arrays"]) for _, content in grid.up)


def test_train_message_payload_travels_in_one_record_and_smaller() -> None:
    _, grid = _run(SPARSE)
    (msg, content), now = grid.down[0], grid.down_bytes[0]
    frame = read_frame(content["arrays"])
    assert frame is not None and isinstance(content["arrays"], ConfigRecord)
    arrays = {
        "payload": Array(dtype="uint8", shape=(len(frame.payload),), stype=LEGACY_STYPE, data=frame.payload)
    }
    arrays.update((k, Array(t.numpy())) for k, t in frame.exact.items())
    old = Message(RecordDict({"arrays": ArrayRecord(arrays), "config": content["config"]}), dst_node_id=1,
                  message_type="train")  # fmt: skip
    old.metadata.__dict__.update(msg.metadata.__dict__)
    assert now <= wire_bytes(old) - 450, (now, wire_bytes(old))


@pytest.mark.parametrize("extra", [False, True], ids=["metrics", "metrics-and-a-config-record"])
def test_inner_strategy_sees_the_clients_metrics_exactly_where_protocol_1_put_them(extra: bool) -> None:
    spy, _ = _run(SPARSE, extra=extra)
    want_order = [("note", "ConfigRecord")] if extra else []
    want_order += [("metrics", "MetricRecord"), ("arrays", "ArrayRecord")]  # model last, as protocol 1 had it
    for rnd in spy.seen:
        for records in rnd:
            assert [(k, t) for k, t, _ in records] == want_order
            metrics = next(m for k, _, m in records if k == "metrics")
            assert list(metrics) == list(METRICS) and repr(metrics) == repr(METRICS)  # values and types


def test_identity_uplink_replies_unchanged() -> None:
    spy, grid = _run("identity")
    for _, content in grid.up:
        assert [type(v).__name__ for v in content.values()] == ["ArrayRecord", "MetricRecord"]
    assert all([k for k, _, _ in r] == ["arrays", "metrics"] for rnd in spy.seen for r in rnd)


def test_bench_prints_the_object_tables() -> None:
    totals = bench.main(["--model", "cnn8", "--classes", "10", "--uplink", SPARSE])
    assert totals[SPARSE]["reply"] > 0 and totals[SPARSE]["train_message"] > totals[SPARSE]["reply"] / 10


def test_node_of_another_protocol_version_is_plain_and_keeps_its_partition(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Its frames would not read here nor ours there: plain fp32 both ways, with a warning naming the versions."""
    app = ClientApp()

    @app.query(QUERY_ACTION)
    def old(msg: Message, context: Context) -> Message:
        answer = {PROTOCOL: 1, PARTITION_ID: int(context.node_config[PARTITION_ID])}
        return Message(RecordDict({"config": ConfigRecord(answer)}), reply_to=msg)

    grid = LoopbackGrid(app, {}, 2)
    plain: set[int] = set()
    mapping = discover_partitions(grid, 2, plain=plain)
    assert plain == {0, 1} and mapping == {0: 1000, 1: 1007}
    assert "speaks fedcompress protocol 1, this server 2" in caplog.text


def test_frames_too_large_for_a_config_record_travel_as_a_chunked_array(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Above INLINE_MAX the frame is one Array of our stype (Flower chunks Arrays, not ConfigRecords): both ways."""
    monkeypatch.setattr("fedcompress.flower.payload.INLINE_MAX", 64)
    spy, grid = _run(SPARSE)
    for _, content in [*grid.down, *grid.up]:
        record = content["arrays"]
        assert isinstance(record, ArrayRecord) and [a.stype for a in record.values()] == [FRAME_STYPE]
    assert all([k for k, _, _ in r] == ["metrics", "arrays"] for rnd in spy.seen for r in rnd)
