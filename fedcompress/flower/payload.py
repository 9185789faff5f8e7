"""Encoded payloads as Flower records: one Array with our own `stype`, so Flower chunks and ships it unchanged.

One Array per message, not one per tensor: Flower frames each Array (~330 B), which would dominate small payloads.
"""

from __future__ import annotations

import numpy as np
from flwr.app import Array, ArrayRecord

STYPE = "fedcompress.payload/1"
PAYLOAD_KEY = "payload"


def payload_record(payload: bytes) -> ArrayRecord:
    return ArrayRecord({PAYLOAD_KEY: Array(dtype="uint8", shape=(len(payload),), stype=STYPE, data=payload)})


def payload_of(record: ArrayRecord) -> bytes | None:
    """The encoded bytes if this record carries a fedcompress payload, else None (plain float arrays)."""
    arr = record.get(PAYLOAD_KEY) if len(record) == 1 else None
    if arr is None or arr.stype != STYPE:
        return None
    return bytes(arr.data)


def raw_nbytes(arrays: dict[str, np.ndarray]) -> int:
    """Bytes of the tensors stored as fp32: the yardstick for compression ratios."""
    return 4 * sum(int(a.size) for a in arrays.values())


def array_data_bytes(record: ArrayRecord) -> int:
    """Bytes of array data in the record (the codec output for payloads, the raw tensors otherwise)."""
    return sum(len(a.data) for a in record.values())
