"""The reply frame: everything a compressed message carries of ours, in one byte string.

Flower frames every record and Array it ships (a header naming its children by 64-character ids, a JSON or
protobuf body, a .npy header inside each Array): ~900 B around a 2 KB payload when the codec payload, the exact
tensors and the train metrics each travel as their own records. A frame packs them into one value, so a
compressed message needs one record (see payload.py); the server unpacks it and restores the user's
MetricRecord before any strategy sees the reply. No pickle; every length is checked against what is left.

Layout (integers little-endian, `varint` = unsigned LEB128, `zigzag` = signed varint)::

    magic b"FCR" | version u8 (= the protocol version) | flags u8 (bit 0: metrics) | crc32 u32 of the rest
    payload: varint length + the codec payload (its own format: fedcompress/codecs/wire.py)
    metadata_bytes: varint (the codec's bookkeeping bytes, for the ledger)
    exact tensors: varint count; each: name (varint length + UTF-8) | dtype (u8 length + ASCII) |
                   ndim u8 | dims varint * ndim | raw little-endian data (bf16: its 16-bit patterns)
    metrics (when flags & 1): position u8 | record name | varint count; each: key | tag u8 | value
                   tags: 0 int (zigzag), 1 float (f64), 2 list of int, 3 list of float (varint n, then values)
"""

from __future__ import annotations

import math
import struct
import zlib
from collections.abc import Mapping
from dataclasses import dataclass, field

import numpy as np

from fedcompress.codecs.wire import put_varint
from fedcompress.errors import PayloadError
from fedcompress.flower.protocol import PROTOCOL_VERSION

MAGIC = b"FCR"
VERSION = PROTOCOL_VERSION
FLAG_METRICS = 1
_PREFIX = struct.Struct("<3sBBI")
MAX_NAME = 1000  # bytes of a tensor name, record name or metric key
MAX_NDIM = 8
INT_TAG, FLOAT_TAG, INTS_TAG, FLOATS_TAG = 0, 1, 2, 3
BF16 = "bfloat16"
Metric = int | float | list[int] | list[float]


@dataclass(frozen=True)
class Exact:
    """A tensor that travels bit for bit beside the codec payload (integer buffers, BatchNorm statistics)."""

    dtype: str  # numpy's name ("int64", "float32", "bool") or "bfloat16"
    shape: tuple[int, ...]
    data: bytes  # raw little-endian values

    def numpy(self) -> np.ndarray:
        """As numpy (bf16 widened to float32 exactly, as records.py reads bf16 arrays)."""
        if self.dtype == BF16:
            bits = np.frombuffer(self.data, dtype="<u2").astype(np.uint32) << 16
            return bits.view(np.float32).reshape(self.shape)
        return (
            np.frombuffer(self.data, dtype=np.dtype(self.dtype).newbyteorder("<")).reshape(self.shape).copy()
        )


@dataclass(frozen=True)
class Metrics:
    """A reply's MetricRecord, carried in the frame: its name, its place among the reply's records, values."""

    name: str
    position: int
    values: Mapping[str, Metric]


@dataclass(frozen=True)
class Frame:
    payload: bytes
    metadata_bytes: int = 0
    exact: Mapping[str, Exact] = field(default_factory=dict)
    metrics: Metrics | None = None


def foldable(values: Mapping[str, object]) -> bool:
    """Whether metric values fit the frame exactly (64-bit ints, floats, lists of one of them)."""
    return all(_tag(v) is not None for v in values.values())


def pack(frame: Frame) -> bytes:
    out = bytearray()
    _bytes(out, frame.payload)
    put_varint(out, frame.metadata_bytes)
    put_varint(out, len(frame.exact))
    for name, t in frame.exact.items():
        _text(out, name)
        dtype = t.dtype.encode("ascii")
        out += bytes([len(dtype)]) + dtype + bytes([len(t.shape)])
        for d in t.shape:
            put_varint(out, d)
        out += t.data
    flags = 0
    if frame.metrics is not None:
        flags |= FLAG_METRICS
        out.append(frame.metrics.position)
        _text(out, frame.metrics.name)
        put_varint(out, len(frame.metrics.values))
        for key, v in frame.metrics.values.items():
            _text(out, key)
            tag = _tag(v)
            if tag is None:
                raise ValueError(f"metric {key!r}: {type(v).__name__} does not fit a frame")
            out.append(tag)
            _value(out, tag, v)
    return _PREFIX.pack(MAGIC, VERSION, flags, zlib.crc32(out)) + bytes(out)


def unpack(data: bytes | memoryview) -> Frame:
    """The frame in `data`; `PayloadError` naming what is wrong if it is not one this version reads."""
    data = bytes(data)
    if len(data) < _PREFIX.size or data[:3] != MAGIC:
        raise PayloadError("not a fedcompress reply frame (bad magic or too short)")
    _, version, flags, crc = _PREFIX.unpack_from(data)
    if version != VERSION:
        raise PayloadError(f"frame of fedcompress protocol {version}; this side reads protocol {VERSION}")
    if flags & ~FLAG_METRICS:
        raise PayloadError(f"frame flags {flags:#x} unknown to protocol {VERSION}")
    if zlib.crc32(data[_PREFIX.size :]) != crc:
        raise PayloadError("frame checksum mismatch")
    r = _Reader(data, _PREFIX.size)
    payload = r.take(r.varint())
    metadata = r.varint()
    exact: dict[str, Exact] = {}
    for _ in range(r.count()):
        name = r.text()
        dtype, shape = r.take(r.byte()).decode("ascii", "replace"), r.shape()
        if name in exact:
            raise PayloadError(f"exact tensor {name[:60]!r} twice")
        exact[name] = Exact(dtype, shape, r.take(math.prod(shape) * _itemsize(name, dtype)))
    metrics = None
    if flags & FLAG_METRICS:
        position, name, values = r.byte(), r.text(), {}
        for _ in range(r.count()):
            key = r.text()
            if key in values:
                raise PayloadError(f"metric {key[:60]!r} twice")
            values[key] = r.metric(key)
        metrics = Metrics(name, position, values)
    if r.pos != len(data):
        raise PayloadError(f"{len(data) - r.pos} bytes after the frame's end")
    return Frame(payload, metadata, exact, metrics)


def _tag(v: object) -> int | None:
    if isinstance(v, bool):
        return None
    if isinstance(v, int):
        return INT_TAG if -(2**63) <= v < 2**63 else None
    if isinstance(v, float):
        return FLOAT_TAG
    if isinstance(v, list) and all(isinstance(x, float) for x in v):
        return FLOATS_TAG
    if isinstance(v, list) and all(_tag(x) == INT_TAG for x in v):
        return INTS_TAG
    return None


def _value(out: bytearray, tag: int, v: Metric) -> None:
    if tag == INT_TAG:
        put_varint(out, (v << 1) ^ (v >> 63))  # type: ignore[operator]
    elif tag == FLOAT_TAG:
        out += struct.pack("<d", v)
    else:
        put_varint(out, len(v))  # type: ignore[arg-type]
        for x in v:  # type: ignore[union-attr]
            _value(out, tag - 2, x)


def _bytes(out: bytearray, b: bytes) -> None:
    put_varint(out, len(b))
    out += b


def _text(out: bytearray, s: str) -> None:
    _bytes(out, s.encode("utf-8"))


def _itemsize(name: str, dtype: str) -> int:
    if dtype == BF16:
        return 2
    try:
        dt = np.dtype(dtype)
    except (TypeError, ValueError):
        raise PayloadError(f"exact tensor {name[:60]!r}: unknown dtype {dtype[:40]!r}") from None
    if dt.kind not in "biuf" or dt.name != dtype:
        raise PayloadError(f"exact tensor {name[:60]!r}: dtype {dtype[:40]!r} is not a number type")
    return dt.itemsize


class _Reader:
    """Bounds-checked reads; anything past the end or out of range is a PayloadError."""

    def __init__(self, data: bytes, pos: int) -> None:
        self.data, self.pos = data, pos

    def take(self, n: int) -> bytes:
        if n > len(self.data) - self.pos:
            raise PayloadError(f"frame truncated: {n} bytes declared, {len(self.data) - self.pos} left")
        self.pos += n
        return self.data[self.pos - n : self.pos]

    def byte(self) -> int:
        return self.take(1)[0]

    def varint(self, max_bytes: int = 10) -> int:
        n = shift = 0
        for _ in range(max_bytes):
            b = self.byte()
            n |= (b & 0x7F) << shift
            if b < 0x80:
                return n
            shift += 7
        raise PayloadError("frame holds an overlong integer")

    def count(self) -> int:
        n = self.varint()
        if n > len(self.data) - self.pos:  # every entry takes at least one byte
            raise PayloadError(f"frame declares {n} entries, more than its bytes can hold")
        return n

    def text(self) -> str:
        n = self.varint()
        if n > MAX_NAME:
            raise PayloadError(f"frame holds a name of {n} bytes")
        try:
            return self.take(n).decode("utf-8")
        except UnicodeDecodeError:
            raise PayloadError("frame holds a name that is not UTF-8") from None

    def shape(self) -> tuple[int, ...]:
        ndim = self.byte()
        if ndim > MAX_NDIM:
            raise PayloadError(f"exact tensor of {ndim} dimensions")
        shape = tuple(self.varint() for _ in range(ndim))
        if any(d >= 2**31 for d in shape) or math.prod(shape) > len(self.data):
            raise PayloadError(f"exact tensor shape {shape} larger than the frame")
        return shape

    def metric(self, key: str) -> Metric:
        tag = self.byte()
        if tag in (INT_TAG, FLOAT_TAG):
            return self.scalar(tag)
        if tag in (INTS_TAG, FLOATS_TAG):
            return [self.scalar(tag - 2) for _ in range(self.count())]  # type: ignore[return-value]
        raise PayloadError(f"metric {key[:60]!r}: unknown value tag {tag}")

    def scalar(self, tag: int) -> int | float:
        if tag == FLOAT_TAG:
            return struct.unpack("<d", self.take(8))[0]
        z = self.varint()
        if z >= 2**64:
            raise PayloadError("frame holds an integer metric beyond 64 bits")
        return (z >> 1) ^ -(z & 1)
