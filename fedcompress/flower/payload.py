"""Compressed models as Flower records: one frame (frame.py) in one record, under the model's key.

Flower serializes every record, Array and chunk as an object of its own, with a header naming its children by
64-character ids and a body (a numpy Array's body adds a .npy header): a payload Array inside an ArrayRecord
beside a MetricRecord cost ~600 B a reply. So the frame (codec payload, exact tensors, train metrics) travels
as the one bytes value of a ConfigRecord: one object, no children. A frame above `INLINE_MAX` goes as one
Array of our stype instead, which Flower chunks (a ConfigRecord is not chunked, and a transport bounds the
size of one object). Plain models stay plain ArrayRecords.
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np
from flwr.app import Array, ArrayRecord, ConfigRecord

from fedcompress.errors import PayloadError
from fedcompress.flower.frame import BF16, Exact, Frame, pack, unpack
from fedcompress.flower.protocol import FRAME_KEY, FRAME_STYPE, LEGACY_STYPE, PROTOCOL_VERSION
from fedcompress.flower.records import BF16_STYPE

INLINE_MAX = 1 << 20  # frames up to 1 MiB ride in a ConfigRecord; larger ones in a chunked Array
Record = ArrayRecord | ConfigRecord


def frame_record(frame: Frame) -> Record:
    """The record that carries `frame` (a ConfigRecord, or an Array-holding ArrayRecord when large)."""
    data = pack(frame)
    if len(data) <= INLINE_MAX:
        return ConfigRecord({FRAME_KEY: data})
    return ArrayRecord({FRAME_KEY: Array(dtype="uint8", shape=(len(data),), stype=FRAME_STYPE, data=data)})


def payload_record(
    payload: bytes, exact: Mapping[str, Array] | None = None, metadata_bytes: int = 0
) -> Record:
    """A frame of a codec payload and the exact (uncoded) tensors, as they are."""
    return frame_record(Frame(payload, metadata_bytes, {k: exact_of(a) for k, a in (exact or {}).items()}))


def read_frame(record: object) -> Frame | None:
    """The frame a record carries, or None for plain arrays.

    Raises PayloadError, naming what was wrong, for a record in a format this side does not read: protocol 1's
    payload Array, another fedcompress stype, a malformed container, a frame of another protocol version.
    """
    if isinstance(record, ConfigRecord):
        if list(record) != [FRAME_KEY] or not isinstance(record[FRAME_KEY], bytes):
            names = sorted(str(k)[:40] for k in record)[:4]
            raise PayloadError(
                f"a ConfigRecord in the model's place must hold one bytes {FRAME_KEY!r}, holds {names}"
            )
        return unpack(record[FRAME_KEY])
    if not isinstance(record, ArrayRecord):
        raise PayloadError(f"the model's place holds a {type(record).__name__}")
    ours = {a.stype for a in record.values() if a.stype.startswith("fedcompress.") and a.stype != BF16_STYPE}
    if not ours:
        return None
    if LEGACY_STYPE in ours:
        raise PayloadError(
            f"payload in fedcompress protocol 1's format (stype {LEGACY_STYPE!r}); this side speaks protocol "
            f"{PROTOCOL_VERSION}: update fedcompress on the node"
        )
    array = record.get(FRAME_KEY)
    if ours != {FRAME_STYPE} or len(record) != 1 or array is None or array.stype != FRAME_STYPE:
        raise PayloadError(f"unknown array format {sorted(ours)[0][:60]!r} or a frame Array not alone")
    if array.dtype != "uint8" or tuple(array.shape) != (len(array.data),):
        raise PayloadError(
            f"frame Array declares {array.dtype[:20]} {tuple(array.shape)[:4]}, holds {len(array.data)} bytes"
        )
    return unpack(array.data)


def payload_of(record: object) -> bytes | None:
    """The codec payload if this record carries a frame, else None (plain arrays)."""
    frame = read_frame(record)
    return None if frame is None else frame.payload


def exact_of(array: Array) -> Exact:
    """A record's Array as an exact tensor of a frame (raw little-endian bytes; bf16 as its 16-bit patterns)."""
    if array.stype == BF16_STYPE:
        return Exact(BF16, tuple(array.shape), bytes(array.data))
    v = array.numpy()  # (tobytes, not ascontiguousarray, which makes 0-d tensors 1-d)
    return Exact(v.dtype.name, tuple(v.shape), v.astype(v.dtype.newbyteorder("<"), copy=False).tobytes())


def raw_nbytes(arrays: Mapping[str, np.ndarray]) -> int:
    """Bytes of the tensors stored as fp32: the yardstick for compression ratios."""
    return 4 * sum(int(np.size(a)) for a in arrays.values())


def array_data_bytes(record: Record) -> int:
    """Bytes of data in the record: a frame's length, or the raw tensors' data of plain arrays."""
    if isinstance(record, ConfigRecord):
        return sum(len(v) for v in record.values() if isinstance(v, bytes))
    return sum(len(a.data) for a in record.values())
