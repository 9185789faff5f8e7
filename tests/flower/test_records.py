"""Wire sizes are Flower's own serialization, counted exactly (and cheaply)."""

import numpy as np
from flwr.app import ConfigRecord, Message, RecordDict
from flwr.supercore.inflatable.inflatable_object import get_all_nested_objects
from flwr.supercore.task_identity import TaskIdentity

from fedcompress.flower.payload import payload_of, payload_record
from fedcompress.flower.records import numpy_to_record, record_to_numpy, wire_bytes


def test_wire_bytes_equals_the_sum_of_deflated_objects() -> None:
    TaskIdentity.run_id, TaskIdentity.node_id, TaskIdentity.task_id = 1, 0, 1
    rng = np.random.default_rng(0)
    arrays = {"big": rng.standard_normal((1500, 1000)).astype(np.float32), "zeros": np.zeros(7, np.float32)}
    record = numpy_to_record(arrays)  # 6 MB: more than one 5 MiB chunk
    msg = Message(
        RecordDict({"arrays": record, "config": ConfigRecord({"x": 1})}), dst_node_id=9, message_type="train"
    )
    for obj in (record, msg):
        assert wire_bytes(obj) == sum(len(o.deflate()) for o in get_all_nested_objects(obj).values())
    assert 6_000_028 < wire_bytes(record) < 6_000_028 * 1.001
    np.testing.assert_array_equal(record_to_numpy(record)["big"], arrays["big"])


def test_payload_record_round_trip() -> None:
    blob = bytes(range(256)) * 3
    rec = payload_record(blob)
    assert payload_of(rec) == blob and payload_of(numpy_to_record({"w": np.ones(3, np.float32)})) is None
    assert len(blob) < wire_bytes(rec) < len(blob) + 400
