"""The structural wire size equals Flower's own serialization exactly: the sum of `len(deflate())` over the unique
(content-addressed) objects, for messages with several records, arrays, chunks and repeated content."""

from __future__ import annotations

import numpy as np
import pytest
from flwr.app import Array, ArrayRecord, ConfigRecord, Error, Message, MetricRecord, RecordDict
from flwr.app.message import array as array_module
from flwr.supercore.inflatable.inflatable_object import get_all_nested_objects

from fedcompress.flower.compat import set_task_identity
from fedcompress.flower.records import numpy_to_record, wire_bytes, wire_bytes_of
from fedcompress.flower.wiresize import wire_size

MIB = 2**20


def flower_bytes(obj: object) -> int:
    """What Flower pushes: every unique object, deflated."""
    return sum(len(o.deflate()) for o in get_all_nested_objects(obj).values())  # type: ignore[arg-type]


def check(obj: object) -> None:
    assert wire_size(obj) == flower_bytes(obj)  # type: ignore[arg-type]
    assert wire_bytes(obj) == flower_bytes(obj)  # type: ignore[arg-type]
    if isinstance(obj, Message) and obj.has_content():
        for record in obj.content.values():  # a message and its model in one walk
            if isinstance(record, ArrayRecord):
                assert wire_bytes_of(obj, record) == (flower_bytes(obj), flower_bytes(record))


@pytest.fixture(autouse=True)
def _identity() -> None:
    set_task_identity()


def _train(content: RecordDict) -> Message:
    return Message(content, dst_node_id=12345, message_type="train")


def test_chunked_arrays_several_records_and_repeats() -> None:
    rng = np.random.default_rng(0)
    big = rng.standard_normal(3 * MIB).astype(np.float32)  # 12 MiB: chunks of 5, 5 and 2 MiB
    zeros = np.zeros(3 * MIB, np.float32)  # 12 MiB of zeros: two identical chunks and a short one
    five = np.frombuffer(
        zeros.tobytes()[: 5 * MIB], np.uint8
    )  # equal to one of zeros' chunks (another Array)
    model = numpy_to_record(
        {"big": big, "zeros": zeros, "five": five, "w": rng.standard_normal((64, 32)).astype(np.float32),
         "b1": np.zeros(32, np.float32), "b2": np.zeros(32, np.float32),  # identical Arrays: sent once
         "steps": np.array(7, np.int64), "empty": np.zeros((0, 3), np.float32)}
    )  # fmt: skip
    same_model = numpy_to_record({"w": np.zeros(32, np.float32)})  # an Array equal to b1 in another record
    content = RecordDict(
        {
            "arrays": model,
            "other": same_model,
            "copy": numpy_to_record({"w": np.zeros(32, np.float32)}),  # a record equal to "other"
            "config": ConfigRecord({"lr": 0.1, "name": "x", "blob": b"\x00\x01", "list": [1, 2]}),
            "metrics": MetricRecord({"num-examples": 10, "loss": 0.5}),
            "metrics2": MetricRecord({"num-examples": 10, "loss": 0.5}),  # equal to "metrics"
        }
    )
    msg = _train(content)
    for obj in (msg, content, model, same_model):
        check(obj)
    assert wire_size(model) > 24 * MIB + 5 * MIB  # big's 12 MiB, zeros' 5 + 2 (one chunk sent once), ...


def test_reply_error_and_custom_stype() -> None:
    sent = _train(RecordDict({"config": ConfigRecord({"fedcompress.round": 3})}))
    payload = ArrayRecord(
        {"p": Array(dtype="uint8", shape=(11,), stype="fedcompress.payload/1", data=b"x" * 11)}
    )
    reply = Message(RecordDict({"arrays": payload, "metrics": MetricRecord({"a": 1.0})}), reply_to=sent)
    error = Message(Error(code=0, reason="a client failed: ValueError"), reply_to=sent)
    for obj in (sent, reply, error, payload):
        check(obj)


@pytest.mark.parametrize("seed", range(40))
def test_random_structures_with_small_chunks(seed: int, monkeypatch: pytest.MonkeyPatch) -> None:
    """Many chunks per array (chunk size patched where Flower reads it), random repeats of arrays, chunks,
    records and names, odd dtypes and shapes."""
    rng = np.random.default_rng(seed)
    monkeypatch.setattr(array_module, "FLWR_PRIVATE_MAX_ARRAY_CHUNK_SIZE", int(rng.integers(1, 64)))
    pool = [
        rng.integers(
            0, 3, size=int(rng.integers(0, 200)), dtype=np.uint8
        ),  # small alphabets: repeated chunks
        np.zeros(int(rng.integers(1, 300)), np.float32),
        rng.standard_normal(int(rng.integers(1, 100))).astype(np.float16),
        np.array(int(rng.integers(0, 5)), np.int64),
        rng.random((3, 4)) > 0.5,
    ]
    records: dict[str, object] = {}
    for r in range(int(rng.integers(1, 5))):
        arrays = {f"t{i}-ü": pool[int(rng.integers(len(pool)))] for i in range(int(rng.integers(0, 6)))}
        records[f"rec{r}"] = numpy_to_record(arrays)
        if rng.random() < 0.3:
            records[f"dup{r}"] = numpy_to_record(arrays)
    records["config"] = ConfigRecord({"k": int(rng.integers(3))})
    content = RecordDict(records)  # type: ignore[arg-type]
    for obj in (_train(content), content):
        check(obj)


def test_arrays_differing_in_one_byte_are_not_merged() -> None:
    """Content that a fingerprint cannot tell apart is still compared byte for byte."""
    a = np.zeros(100_003, np.uint8)
    b = a.copy()
    b[50_001] = 1
    record = numpy_to_record({"a": a, "b": b, "c": a.copy()})
    check(record)
    check(_train(RecordDict({"x": record, "y": numpy_to_record({"b": b})})))
