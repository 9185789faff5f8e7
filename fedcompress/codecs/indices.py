"""Compact coding of sorted index sets: a bitmap or Rice-coded gaps, whichever is smaller at this density.

Gaps between kept positions of a sparse update are close to geometric, for which Rice coding (unary quotient,
``b`` fixed remainder bits) is within a few percent of the entropy. The unary quotients and the
remainders go in
two separate bit streams so both directions are fully vectorised: the decoder finds quotients as distances
between set bits of the unary stream.
"""

from __future__ import annotations

import struct

import numpy as np

from . import bitpack
from .contract import Encoded
from .errors import PayloadError

MODE_ALL, MODE_BITMAP, MODE_RICE = 0, 1, 2
_HEAD = struct.Struct("<BQ")
_RICE = struct.Struct("<BQ")
MAX_RICE_BITS = 32


def _rice_cost(gaps: np.ndarray, b: int) -> int:
    k = gaps.size
    unary_bits = int(np.sum(gaps >> b)) + k
    return (unary_bits + 7) // 8 + (bitpack.packed_size(k, b) if b else 0)


def encode(idx: np.ndarray, n: int) -> Encoded:
    """Code sorted unique ``idx`` (int64, all < n)."""
    k = int(idx.size)
    if k == n:
        return Encoded(_HEAD.pack(MODE_ALL, k), 0)
    bitmap_cost = (n + 7) // 8
    gaps = np.diff(idx, prepend=np.int64(-1)) - 1 if k else np.zeros(0, np.int64)
    best_b, best_cost = 0, None
    if k:
        mean = float(gaps.mean())
        center = int(np.log2(max(mean * 0.69, 1.0)))
        for b in range(max(0, center - 1), min(MAX_RICE_BITS, center + 3) + 1):
            cost = _rice_cost(gaps, b)
            if best_cost is None or cost < best_cost:
                best_b, best_cost = b, cost
    else:
        best_cost = 0
    if bitmap_cost < best_cost:
        mask = np.zeros(n, np.uint8)
        mask[idx] = 1
        bits = np.packbits(mask, bitorder="little").tobytes()
        return Encoded(_HEAD.pack(MODE_BITMAP, k) + bits, len(bits))
    b = best_b
    q = gaps >> b
    ones = np.cumsum(q + 1) - 1
    stream = np.zeros(int(ones[-1]) + 1 if k else 0, np.uint8)
    stream[ones] = 1
    unary = np.packbits(stream, bitorder="little").tobytes()
    rem = bitpack.pack((gaps & ((1 << b) - 1)).astype(np.uint64), b) if b else b""
    data = unary + rem
    return Encoded(_HEAD.pack(MODE_RICE, k) + _RICE.pack(b, len(unary)) + data, len(data))


def _fields(data: memoryview | bytes, st: struct.Struct, what: str) -> tuple[tuple, memoryview | bytes]:
    """Fixed-size fields at the start of ``data`` and the rest."""
    if len(data) < st.size:
        raise PayloadError(f"index section truncated ({what})")
    return st.unpack(data[: st.size]), data[st.size :]


def decode(data: memoryview | bytes, n: int) -> np.ndarray:
    """Inverse of :func:`encode`; every count and length is checked against ``n`` and the section size
    before anything in proportion to the section is allocated."""
    (mode, k), body = _fields(data, _HEAD, "mode and count")
    if k > n:
        raise PayloadError(f"index section declares {k} indices for {n} parameters")
    if mode == MODE_ALL:
        if k != n or len(body):
            raise PayloadError("index section: 'all' mode with a wrong count or extra bytes")
        return np.arange(n, dtype=np.int64)
    if mode == MODE_BITMAP:
        if len(body) != (n + 7) // 8:
            raise PayloadError(f"index bitmap: {len(body)} bytes, expected {(n + 7) // 8}")
        idx = np.flatnonzero(np.unpackbits(np.frombuffer(body, np.uint8), count=n, bitorder="little"))
        if idx.size != k:
            raise PayloadError(f"index bitmap has {idx.size} set bits, header declares {k}")
        return idx.astype(np.int64)
    if mode != MODE_RICE:
        raise PayloadError(f"unknown index coding mode {mode}")
    (b, unary_len), body = _fields(body, _RICE, "Rice parameters")
    if b > MAX_RICE_BITS:
        raise PayloadError(f"Rice parameter {b} out of range 0..{MAX_RICE_BITS}")
    rem_len = bitpack.packed_size(k, b) if b else 0
    if unary_len + rem_len != len(body):
        raise PayloadError(f"index streams: {len(body)} bytes, expected {unary_len} + {rem_len}")
    if k == 0:
        return np.zeros(0, np.int64)
    if unary_len * 8 < k:
        raise PayloadError(f"unary stream too short for {k} indices")
    # k terminators plus the quotients, whose sum is at most (n - k) >> b: unpacked at 8 bytes a byte, so
    # the length is bounded by the model before unpacking.
    max_unary = (k + ((n - k) >> b) + 7) // 8
    if unary_len > max_unary:
        raise PayloadError(f"unary stream of {unary_len} bytes, at most {max_unary} for {k} of {n} indices")
    ones = np.flatnonzero(np.unpackbits(np.frombuffer(body[:unary_len], np.uint8), bitorder="little"))
    if ones.size != k:
        raise PayloadError(f"unary stream has {ones.size} terminators, expected {k}")
    q = np.diff(ones, prepend=np.int64(-1)) - 1
    rem = bitpack.unpack(body[unary_len:], k, b).astype(np.int64) if b else 0
    if int(q.max()) > (n >> b):
        raise PayloadError("index gaps exceed the tensor size")
    idx = np.cumsum((q << b) + rem + 1) - 1
    if int(idx[-1]) >= n:
        raise PayloadError(f"index {int(idx[-1])} out of range for {n} parameters")
    return idx.astype(np.int64)
