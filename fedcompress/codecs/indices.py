"""Compact coding of sorted index sets: a bitmap or Rice-coded gaps, whichever is smaller at this density;
with the tensors' shapes, also per tensor as a bicluster (which rows, which columns, which cells of that
sub-matrix), whichever is smallest.

Gaps between kept positions of a sparse update are close to geometric, for which Rice coding (unary quotient,
``b`` fixed remainder bits) is within a few percent of the entropy. The unary quotients and the
remainders go in
two separate bit streams so both directions are fully vectorised: the decoder finds quotients as distances
between set bits of the unary stream.
"""

from __future__ import annotations

import struct
from collections.abc import Sequence

import numpy as np

from . import bitpack
from .contract import Encoded
from .errors import PayloadError
from .wire import put_varint

MODE_ALL, MODE_BITMAP, MODE_RICE, MODE_GRID = 0, 1, 2, 3
_HEAD = struct.Struct("<BQ")
_RICE = struct.Struct("<BQ")
MAX_RICE_BITS = 32


def _rice_cost(gaps: np.ndarray, b: int) -> int:
    k = gaps.size
    unary_bits = int(np.sum(gaps >> b)) + k
    return (unary_bits + 7) // 8 + (bitpack.packed_size(k, b) if b else 0)


def encode(idx: np.ndarray, n: int, shapes: Sequence[tuple[int, ...]] | None = None) -> Encoded:
    """Code sorted unique ``idx`` (int64, all < n). With the ``shapes`` of the tensors the n positions are laid
    out in (flat, in order), the per-tensor grid coding is tried too and the smaller one is kept."""
    flat = _encode_flat(idx, n)
    if not shapes or idx.size == 0 or idx.size == n:
        return flat
    grid = _encode_grid(idx, n, shapes)
    return grid if len(grid.data) < len(flat.data) else flat


def _encode_flat(idx: np.ndarray, n: int) -> Encoded:
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


def decode(data: memoryview | bytes, n: int, shapes: Sequence[tuple[int, ...]] | None = None) -> np.ndarray:
    """Inverse of :func:`encode`; every count and length is checked against ``n`` and the section size
    before anything in proportion to the section is allocated."""
    (mode, k), body = _fields(data, _HEAD, "mode and count")
    if k > n:
        raise PayloadError(f"index section declares {k} indices for {n} parameters")
    if mode == MODE_GRID:
        if not shapes:
            raise PayloadError("grid-coded index section without the tensors' shapes")
        return _decode_grid(body, n, k, shapes)
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


# ---------------------------------------------------------------- grid (per-tensor bicluster) coding
#
# Top-k positions of a model update are not independent: in a weight matrix they gather in the rows of the
# output units with large errors and the columns of the inputs that were active (FEMNIST CNN, fc1: 746 kept
# positions in 25 of 128 rows and 125 of 3,136 columns). Coding, per tensor, the set of rows, the set of
# columns and the cells of that sub-matrix costs ~30% fewer bits than independent positions (the
# log2 C(n, k) bound this module's flat coding reaches).

KIND_EMPTY, KIND_FLAT, KIND_BICLUSTER = 0, 1, 2


def _read_uvarint(data: memoryview | bytes, pos: int) -> tuple[int, int]:
    v = shift = 0
    for _ in range(10):
        if pos >= len(data):
            raise PayloadError("grid index section truncated")
        b = data[pos]
        pos += 1
        v |= (b & 0x7F) << shift
        if b < 0x80:
            return v, pos
        shift += 7
    raise PayloadError("grid index section holds an overlong integer")


def _put_set(out: bytearray, idx: np.ndarray, n: int) -> None:
    """A flat-coded set without its fixed-width header: mode byte, varint count (Rice: b, varint unary length)."""
    data = _encode_flat(idx, n).data
    (mode, k), body = _HEAD.unpack(data[: _HEAD.size]), data[_HEAD.size :]
    out.append(mode)
    put_varint(out, k)
    if mode == MODE_RICE:
        (b, unary_len), body = _RICE.unpack(body[: _RICE.size]), body[_RICE.size :]
        out.append(b)
        put_varint(out, unary_len)
    out += body


def _byte_and_uvarint(data: memoryview | bytes, pos: int) -> tuple[int, int, int]:
    """A byte, then a varint: (byte, value, position after them)."""
    if pos >= len(data):
        raise PayloadError("grid index section truncated")
    value, end = _read_uvarint(data, pos + 1)
    return data[pos], value, end


def _take_set(data: memoryview | bytes, pos: int, n: int) -> tuple[np.ndarray, int]:
    """Inverse of :func:`_put_set`: rebuilds the flat section and checks it with :func:`decode`."""
    mode, k, pos = _byte_and_uvarint(data, pos)
    if k > n:
        raise PayloadError(f"grid index section declares {k} indices for {n} positions")
    head = _HEAD.pack(mode, k)
    if mode == MODE_RICE:
        b, unary_len, pos = _byte_and_uvarint(data, pos)
        if b > MAX_RICE_BITS:
            raise PayloadError(f"Rice parameter {b} out of range 0..{MAX_RICE_BITS}")
        head += _RICE.pack(b, unary_len)
        size = unary_len + (bitpack.packed_size(k, b) if b else 0)
    elif mode == MODE_BITMAP:
        size = (n + 7) // 8
    elif mode == MODE_ALL:
        size = 0
    else:
        raise PayloadError(f"unknown index coding mode {mode}")
    if size > len(data) - pos:
        raise PayloadError(f"grid index section truncated: {size} bytes declared, {len(data) - pos} left")
    return decode(head + bytes(data[pos : pos + size]), n), pos + size


def _matrix(shape: tuple[int, ...]) -> tuple[int, int]:
    """A tensor seen as rows x columns: the first axis against the rest (a vector or scalar is one row)."""
    rows = int(shape[0]) if len(shape) > 1 else 1
    return rows, (_prod(shape) // rows if rows else 0)


def _encode_grid(idx: np.ndarray, n: int, shapes: Sequence[tuple[int, ...]]) -> Encoded:
    out = bytearray(_HEAD.pack(MODE_GRID, idx.size))
    start = 0
    bounds = np.searchsorted(idx, np.cumsum([_prod(s) for s in shapes]))
    lo = 0
    for shape, hi in zip(shapes, bounds, strict=True):
        rows, cols = _matrix(shape)
        local = idx[lo:hi] - start
        start, lo = start + rows * cols, int(hi)
        if local.size == 0:
            out.append(KIND_EMPTY)
            continue
        flat = bytearray([KIND_FLAT])
        _put_set(flat, local, rows * cols)
        if rows > 1:
            r, c = local // cols, local % cols
            row_set, col_set = np.unique(r), np.unique(c)
            cells = np.searchsorted(row_set, r) * col_set.size + np.searchsorted(col_set, c)
            bic = bytearray([KIND_BICLUSTER])
            _put_set(bic, row_set, rows)
            _put_set(bic, col_set, cols)
            _put_set(bic, np.sort(cells), row_set.size * col_set.size)
            if len(bic) < len(flat):
                flat = bic
        out += flat
    if start != n:
        raise ValueError(f"shapes hold {start} positions, the index set is over {n}")
    return Encoded(bytes(out), len(out) - _HEAD.size)


def _prod(shape: tuple[int, ...]) -> int:
    return int(np.prod(shape, dtype=np.int64)) if shape else 1


def _decode_grid(body: memoryview | bytes, n: int, k: int, shapes: Sequence[tuple[int, ...]]) -> np.ndarray:
    if sum(_prod(s) for s in shapes) != n:
        raise PayloadError(
            f"grid index section: the layout holds {sum(_prod(s) for s in shapes)} positions, not {n}"
        )
    parts, pos, start, total = [], 0, 0, 0
    for shape in shapes:
        rows, cols = _matrix(shape)
        if pos >= len(body):
            raise PayloadError("grid index section truncated")
        kind, pos = body[pos], pos + 1
        if kind == KIND_FLAT:
            local, pos = _take_set(body, pos, rows * cols)
        elif kind == KIND_BICLUSTER:
            row_set, pos = _take_set(body, pos, rows)
            col_set, pos = _take_set(body, pos, cols)
            cells, pos = _take_set(body, pos, row_set.size * col_set.size)
            local = row_set[cells // max(col_set.size, 1)] * cols + col_set[cells % max(col_set.size, 1)]
        elif kind == KIND_EMPTY:
            local = np.zeros(0, np.int64)
        else:
            raise PayloadError(f"grid index section: unknown tensor kind {kind}")
        total += local.size
        if total > k:
            raise PayloadError(f"grid index section holds more than the {k} indices it declares")
        parts.append(local + start)
        start += rows * cols
    if pos != len(body):
        raise PayloadError(f"grid index section: {len(body) - pos} bytes past its last tensor")
    if total != k:
        raise PayloadError(f"grid index section holds {total} indices, header declares {k}")
    return np.concatenate(parts).astype(np.int64) if parts else np.zeros(0, np.int64)
