"""Fuzzing the server's train-reply handling (Compression's decode path inside FedCompress): hostile replies built
by hypothesis and by mutating genuine ones. Every case is rejected and counted with a reason, or accepted
correctly; the round goes on, and the global model and the ledger stay intact."""

from __future__ import annotations

import math
import struct
import zlib
from dataclasses import replace

import numpy as np
import pytest
from flwr.app import Array, ArrayRecord, ConfigRecord, Message, MetricRecord, RecordDict
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from fedcompress.config import RunConfig, defaults
from fedcompress.flower.clientapp import app as client_app
from fedcompress.flower.frame import Exact, Frame, Metrics, pack, unpack
from fedcompress.flower.protocol import FRAME_KEY, FRAME_STYPE, LEGACY_STYPE
from fedcompress.flower.records import numpy_to_record, record_to_numpy, state_to_numpy
from fedcompress.flower.sampling import discover_partitions
from fedcompress.flower.strategies import make_strategy
from fedcompress.flower.strategy import FedCompress
from fedcompress.ledger import Ledger
from fedcompress.task import make_model
from tests.flower.loopback import LoopbackGrid

SPARSE = "topk(0.05) > ef > uniform(4) > entropy"


class Round:
    """One round's genuine replies, captured once; `aggregate` feeds copies (one mutated) to a fresh strategy."""

    def __init__(self, uplink: str) -> None:
        cfg = RunConfig.from_run_config(
            {
                **defaults(),
                "num-partitions": 3,
                "clients-per-round": 3,
                "partitioning": "iid",
                "local-epochs": 1,
                "seed": 5,
                "uplink": uplink,
                "downlink": "identity",
            }  # fmt: skip
        )
        self.cfg = cfg
        self.grid = LoopbackGrid(client_app, cfg.as_run_config(), 3)
        self.partitions = discover_partitions(self.grid, 3)
        self.initial = numpy_to_record(state_to_numpy(make_model(cfg)))
        self.reasons: list[str] = []
        strategy = self._strategy()
        self.sent = list(strategy.configure_train(1, self.initial, ConfigRecord(), self.grid))
        self.replies = list(self.grid.send_and_receive(self.sent))
        self.clean = self._aggregate(strategy, [self._copy(r) for r in self.replies])[0]

    def _strategy(self) -> FedCompress:
        self.ledger = Ledger()
        return FedCompress(
            make_strategy(self.cfg), partitions=dict(self.partitions), clients_per_round=3, seed=5,
            uplink=self.cfg.uplink, ledger=self.ledger, on_reject=lambda r, p, why: self.reasons.append(why),
        )  # fmt: skip

    def _copy(self, reply: Message, content: RecordDict | None = None) -> Message:
        if content is None:
            content = RecordDict({k: _copy_record(v) for k, v in reply.content.items()})
        sent = next(m for m in self.sent if m.metadata.dst_node_id == reply.metadata.src_node_id)
        return Message(content, reply_to=sent)

    @staticmethod
    def _aggregate(strategy: FedCompress, replies: list[Message]):  # noqa: ANN205
        return strategy.aggregate_train(1, replies)

    def run(self, mutate, expose: bool = True) -> tuple[FedCompress, ArrayRecord | None]:  # noqa: ANN001
        """Round 1 again on a fresh strategy, the first client's reply replaced by `mutate(content)`; `expose`:
        a frame's metrics moved beside it and the frame put in an Array (both forms the server also reads),
        so the cases written for plain records reach every part of a compressed reply."""
        strategy = self._strategy()
        list(strategy.configure_train(1, self.initial, ConfigRecord(), self.grid))
        replies = [self._copy(r) for r in self.replies]
        content = _exposed(replies[0].content) if expose else replies[0].content
        replies[0] = self._copy(self.replies[0], mutate(content))
        arrays, _ = self._aggregate(strategy, replies)
        return strategy, arrays


def _exposed(content: RecordDict) -> RecordDict:
    """The same reply with its frame's metrics as a MetricRecord beside the frame, the frame as an Array."""
    record = content["arrays"]
    if not isinstance(record, ConfigRecord):
        return content
    frame = unpack(record[FRAME_KEY])
    out = [(k, v) for k, v in content.items() if k != "arrays"]
    if frame.metrics is not None:
        out.insert(frame.metrics.position, (frame.metrics.name, MetricRecord(dict(frame.metrics.values))))
    data = pack(Frame(frame.payload, frame.metadata_bytes, frame.exact))
    array = Array(dtype="uint8", shape=(len(data),), stype=FRAME_STYPE, data=data)
    return RecordDict({**dict(out), "arrays": ArrayRecord({FRAME_KEY: array})})


def _copy_record(v):  # noqa: ANN001, ANN202
    if isinstance(v, ArrayRecord):
        return ArrayRecord(dict(v.items()))
    if isinstance(v, MetricRecord):
        return MetricRecord(dict(v.items()))
    return ConfigRecord(dict(v.items()))


@pytest.fixture(scope="module", params=[SPARSE, "identity"])
def round_(request: pytest.FixtureRequest) -> Round:
    return Round(request.param)


def _check(
    round_: Round, strategy: FedCompress, arrays: ArrayRecord | None, *, rejected: bool | None
) -> None:
    """Rejected-and-counted or accepted; the model aggregated from the others is finite; the ledger agrees."""
    n_rej = strategy.rejections.get(1, 0)
    n_acc = strategy.accepted.get(1, 0)
    assert n_rej + n_acc == 3
    if rejected is not None:
        assert n_rej == (1 if rejected else 0)
    assert arrays is not None
    model = record_to_numpy(arrays)
    assert all(np.isfinite(v).all() for v in model.values() if v.dtype.kind == "f")
    if rejected is not None and n_rej == 0:  # (a fuzzed reply may be accepted as a legitimately other update)
        clean = record_to_numpy(round_.clean)
        assert all(np.array_equal(model[k], clean[k]) for k in clean)
    totals = round_.ledger.round_totals(
        1
    )  # measured at the strategy boundary: a row per reply, rejection in it
    assert totals["uplink_messages"] == 3 and totals.get("rejected", 0) == n_rej


# ---------------------------------------------------------------- hand-made hostile replies
def _metrics_value(value):  # noqa: ANN001, ANN202
    def mutate(content: RecordDict) -> RecordDict:
        content["metrics"]["train_loss"] = value
        return content

    return mutate


def _replace(key: str, value):  # noqa: ANN001, ANN202
    def mutate(content: RecordDict) -> RecordDict:
        content[key] = value
        return content

    return mutate


def _drop(key: str):  # noqa: ANN202
    def mutate(content: RecordDict) -> RecordDict:
        del content[key]
        return content

    return mutate


def _array(name: str, array: Array):  # noqa: ANN202
    def mutate(content: RecordDict) -> RecordDict:
        content["arrays"][name] = array
        return content

    return mutate


def _first_name(content: RecordDict) -> str:
    return next(iter(content["arrays"]))


CASES = {
    "nan-metric": _metrics_value(float("nan")),
    "inf-metric": _metrics_value(float("inf")),
    "list-metric": _metrics_value([1.0, 2.0]),
    "nan-weight": lambda c: _replace(
        "metrics", MetricRecord({**dict(c["metrics"]), "num-examples": float("nan")})
    )(c),
    "zero-weight": lambda c: _replace("metrics", MetricRecord({**dict(c["metrics"]), "num-examples": 0}))(c),
    "negative-weight": lambda c: _replace(
        "metrics", MetricRecord({**dict(c["metrics"]), "num-examples": -5})
    )(c),
    "no-weight": lambda c: _replace("metrics", MetricRecord({"train_loss": 0.1}))(c),
    "extra-metric-key": lambda c: _replace("metrics", MetricRecord({**dict(c["metrics"]), "evil": 1.0}))(c),
    "no-metrics": _drop("metrics"),
    "no-arrays": _drop("arrays"),
    "arrays-is-config": _replace("arrays", ConfigRecord({"a": 1})),
    "metrics-is-arrays": _replace("metrics", ArrayRecord({"x": Array(np.zeros(2, np.float32))})),
    "two-array-records": _replace("more", ArrayRecord({"x": Array(np.zeros(2, np.float32))})),
    "two-metric-records": _replace("more", MetricRecord({"num-examples": 3})),
    "unknown-dtype": lambda c: _array(
        _first_name(c), Array(dtype="float1024", shape=(3,), stype="numpy.ndarray", data=b"\0" * 12)
    )(c),
    "object-dtype": lambda c: _array(
        _first_name(c), Array(dtype="object", shape=(1,), stype="numpy.ndarray", data=b"x")
    )(c),
    "huge-shape": lambda c: _array(
        _first_name(c), Array(dtype="float32", shape=(2**62, 2**62), stype="numpy.ndarray", data=b"\0" * 16)
    )(c),
    "negative-shape": lambda c: _array(
        _first_name(c), Array(dtype="float32", shape=(-1,), stype="numpy.ndarray", data=b"")
    )(c),
    "garbage-npy": lambda c: _array(
        _first_name(c), Array(dtype="float32", shape=(2,), stype="numpy.ndarray", data=b"\x93NUMPYgarbage!")
    )(c),
    "frame-wrong-stype": lambda c: _array(
        FRAME_KEY, Array(dtype="uint8", shape=(4,), stype="other", data=b"abcd")
    )(c),
    "frame-huge-shape": lambda c: _array(
        FRAME_KEY, Array(dtype="uint8", shape=(2**40,), stype=FRAME_STYPE, data=b"abcd")
    )(c),
    "protocol-1-payload": lambda c: _array(
        "payload", Array(dtype="uint8", shape=(4,), stype=LEGACY_STYPE, data=b"abcd")
    )(c),
    "bf16-wrong-size": lambda c: _array(
        _first_name(c), Array(dtype="bfloat16", shape=(1000,), stype="fedcompress.bfloat16/1", data=b"\0\0")
    )(c),
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_hostile_reply_rejected_counted_round_goes_on(round_: Round, case: str) -> None:
    strategy, arrays = round_.run(CASES[case])
    _check(round_, strategy, arrays, rejected=True)


def test_genuine_replies_accepted_exactly(round_: Round) -> None:
    strategy, arrays = round_.run(lambda c: c)
    _check(round_, strategy, arrays, rejected=False)


# ---------------------------------------------------------------- the frame itself (a client that knows the format)
def _framed(change):  # noqa: ANN001, ANN202
    """Replace the frame by `change(frame_bytes, frame)` (bytes, or a record for the model's place)."""

    def mutate(content: RecordDict) -> RecordDict:
        if not isinstance(content["arrays"], ConfigRecord):
            pytest.skip("plain replies carry no frame")
        data = content["arrays"][FRAME_KEY]
        out = change(data, unpack(data))
        content["arrays"] = ConfigRecord({FRAME_KEY: out}) if isinstance(out, bytes) else out
        return content

    return mutate


def _resealed(data: bytes, version: int | None = None, flags: int | None = None, tail: bytes = b"") -> bytes:
    """The frame with its prefix changed and `tail` appended, under a valid checksum."""
    body = data[9:] + tail
    prefix = struct.pack(
        "<3sBB", b"FCR", data[3] if version is None else version, data[4] if flags is None else flags
    )
    return prefix + struct.pack("<I", zlib.crc32(body)) + body


def _with(frame: Frame, **changes) -> bytes:  # noqa: ANN003
    return pack(replace(frame, **changes))


def _metrics(frame: Frame, **changes) -> Metrics:  # noqa: ANN003
    assert frame.metrics is not None
    return replace(frame.metrics, **changes)


FRAME_CASES = {  # case -> (change, words the reason must hold)
    "bad-magic": (lambda d, f: b"XYZ" + d[3:], "not a fedcompress reply frame"),
    "too-short": (lambda d, f: d[:5], "not a fedcompress reply frame"),
    "other-version": (lambda d, f: _resealed(d, version=3), "protocol 3"),
    "protocol-1-version": (lambda d, f: _resealed(d, version=1), "protocol 1"),
    "unknown-flag": (lambda d, f: _resealed(d, flags=0x81), "flags"),
    "bad-checksum": (lambda d, f: d[:-1] + bytes([d[-1] ^ 1]), "checksum"),
    "truncated": (lambda d, f: _resealed(d[:-3]), "truncated"),
    "trailing-bytes": (lambda d, f: _resealed(d, tail=b"\0\0"), "after the frame"),
    "no-metrics": (lambda d, f: _with(f, metrics=None), "MetricRecord"),
    "nan-metric-inside": (
        lambda d, f: _with(f, metrics=_metrics(f, values={**f.metrics.values, "train_loss": float("nan")})),
        "nan",
    ),
    "no-weight-inside": (lambda d, f: _with(f, metrics=_metrics(f, values={"train_loss": 0.5})), "weight"),
    "metrics-named-like-the-model": (lambda d, f: _with(f, metrics=_metrics(f, name="arrays")), "clash"),
    "metrics-out-of-place": (lambda d, f: _with(f, metrics=_metrics(f, position=7)), "clash"),
    "extra-exact-tensor": (
        lambda d, f: _with(f, exact={"ghost": Exact("int64", (), bytes(8))}),
        "exact tensors",
    ),
    "exact-object-dtype": (
        lambda d, f: _with(f, exact={"ghost": Exact("object", (1,), bytes(8))}),
        "number type",
    ),
    "exact-huge-shape": (
        lambda d, f: _with(f, exact={"g": Exact("float32", (2**30, 2**30), b"")}),
        "larger than",
    ),
    "payload-garbage": (lambda d, f: _with(f, payload=b"FCMP" + bytes(30)), "payload"),
    "two-values": (lambda d, f: ConfigRecord({FRAME_KEY: d, "x": 1}), "one bytes"),
    "value-not-bytes": (lambda d, f: ConfigRecord({FRAME_KEY: "text"}), "one bytes"),
    "protocol-1-record": (
        lambda d, f: ArrayRecord(
            {"payload": Array(dtype="uint8", shape=(len(f.payload),), stype=LEGACY_STYPE, data=f.payload)}
        ),
        "protocol 1",
    ),
}


@pytest.mark.parametrize("case", sorted(FRAME_CASES))
def test_malformed_frame_rejected_with_its_reason_and_counted(round_: Round, case: str) -> None:
    change, words = FRAME_CASES[case]
    strategy, arrays = round_.run(_framed(change), expose=False)
    _check(round_, strategy, arrays, rejected=True)
    assert len(round_.reasons) >= 1 and words.lower() in round_.reasons[-1].lower(), round_.reasons[-1]


def test_metrics_beside_a_frame_that_carries_them_rejected(round_: Round) -> None:
    def twice(content: RecordDict) -> RecordDict:
        if not isinstance(content["arrays"], ConfigRecord):
            pytest.skip("plain replies carry no frame")
        content["metrics"] = MetricRecord({"num-examples": 3})
        return content

    strategy, arrays = round_.run(twice, expose=False)
    _check(round_, strategy, arrays, rejected=True)


def test_genuine_replies_accepted_exactly_as_sent(round_: Round) -> None:
    strategy, arrays = round_.run(lambda c: c, expose=False)
    _check(round_, strategy, arrays, rejected=False)


# ---------------------------------------------------------------- hypothesis: random structures and mutations
finite = st.floats(allow_nan=True, allow_infinity=True, width=64)
metric_values = st.one_of(st.integers(-(2**63), 2**63 - 1), finite, st.lists(finite, max_size=3))
dtypes = st.sampled_from(["float32", "float64", "int64", "uint8", "bool", "float16", "bfloat16", "complex64",
                          "<U3", "V8", "object", "float128x", "", "int7"])  # fmt: skip
shapes = st.lists(st.integers(-3, 2**40), min_size=0, max_size=4).map(tuple)


@st.composite
def hostile_arrays(draw: st.DrawFn) -> Array:
    data = draw(st.binary(max_size=64))
    stype = draw(st.sampled_from(["numpy.ndarray", FRAME_STYPE, LEGACY_STYPE, "fedcompress.bfloat16/1", "x"]))
    return Array(dtype=draw(dtypes), shape=draw(shapes), stype=stype, data=data)


@st.composite
def mutations(draw: st.DrawFn):  # noqa: ANN202
    kind = draw(st.sampled_from(["metric", "array", "record", "bytes"]))
    if kind == "metric":
        k = draw(st.sampled_from(["num-examples", "train_loss", "new", "fedcompress.metadata-bytes"]))
        v = draw(metric_values)
        return lambda c: _replace("metrics", MetricRecord({**dict(c["metrics"]), k: v}))(c)
    if kind == "array":
        a = draw(hostile_arrays())
        which = draw(st.sampled_from(["first", FRAME_KEY, "new"]))
        return lambda c: _array(_first_name(c) if which == "first" else which, a)(c)
    if kind == "record":
        key = draw(st.sampled_from(["arrays", "metrics", "config", "x"]))
        rec = draw(st.sampled_from(["arrays", "metrics", "config", "drop"]))
        if rec == "drop":
            return lambda c: _drop(key)(c) if key in c else c
        make = {"arrays": lambda: ArrayRecord({"w": Array(np.zeros(3, np.float32))}),
                "metrics": lambda: MetricRecord({"num-examples": 1}), "config": lambda: ConfigRecord({"a": "b"})}[rec]  # fmt: skip
        return lambda c: _replace(key, make())(c)
    pos, bit = draw(st.integers(0, 10**6)), draw(st.integers(0, 7))

    def flip(c: RecordDict) -> RecordDict:  # one bit of the first array's data
        name = next(iter(c["arrays"]))
        a = c["arrays"][name]
        data = bytearray(a.data)
        if data:
            data[pos % len(data)] ^= 1 << bit
        c["arrays"][name] = Array(dtype=a.dtype, shape=tuple(a.shape), stype=a.stype, data=bytes(data))
        return c

    return flip


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(mutate=mutations())
def test_fuzzed_replies_never_stop_the_round(round_: Round, mutate) -> None:  # noqa: ANN001
    strategy, arrays = round_.run(mutate)
    _check(round_, strategy, arrays, rejected=None)
    assert math.isfinite(float(strategy.accepted.get(1, 0)))
