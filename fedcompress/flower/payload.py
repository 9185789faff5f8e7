"""Encoded payloads as Flower records: one Array with our own `stype`, so Flower chunks and ships it unchanged.

One Array per message for the coded tensors, not one per tensor: Flower frames each Array (~330 B), which would
dominate small payloads. Tensors that are not coded (integer and bool buffers, 0-d tensors) ride beside it as
plain arrays under their own names, exactly.
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np
from flwr.app import Array, ArrayRecord

from fedcompress.errors import ConfigError

STYPE = "fedcompress.payload/1"
PAYLOAD_KEY = "payload"


def payload_record(payload: bytes, exact: Mapping[str, Array] | None = None) -> ArrayRecord:
    """The payload, and the exact (uncoded) tensors as they are."""
    exact = dict(exact or {})
    if PAYLOAD_KEY in exact:
        raise ConfigError(f"a model tensor is named {PAYLOAD_KEY!r}, which the payload record reserves")
    return ArrayRecord(
        {PAYLOAD_KEY: Array(dtype="uint8", shape=(len(payload),), stype=STYPE, data=payload), **exact}
    )


def payload_of(record: ArrayRecord) -> bytes | None:
    """The encoded bytes if this record carries a fedcompress payload, else None (plain arrays)."""
    arr = record.get(PAYLOAD_KEY)
    if arr is None or arr.stype != STYPE:
        return None
    return bytes(arr.data)


def raw_nbytes(arrays: Mapping[str, np.ndarray]) -> int:
    """Bytes of the tensors stored as fp32: the yardstick for compression ratios."""
    return 4 * sum(int(np.size(a)) for a in arrays.values())


def array_data_bytes(record: ArrayRecord) -> int:
    """Bytes of array data in the record (the codec output for payloads, the raw tensors otherwise)."""
    return sum(len(a.data) for a in record.values())
