"""Vectorised bit packing of integer symbols (1..32 bits) without Python loops over elements.

A ``b``-bit symbol is split into planes of 8, 4, 2 and 1 bits (e.g. 7 = 4 + 2 + 1, 16 = 8 + 8), each packed
with a fast numpy path. Splitting also helps zstd: 16- and 32-bit symbols become byte planes ("byte shuffle").
"""

from __future__ import annotations

import numpy as np

from .errors import PayloadError


def planes(bits: int) -> list[int]:
    """Plane widths, low bits first."""
    if not 1 <= bits <= 32:
        raise ValueError(f"bits must be in 1..32, got {bits}")
    out = [8] * (bits // 8)
    rest = bits % 8
    for width in (4, 2, 1):
        if rest >= width:
            out.append(width)
            rest -= width
    return out


def symbol_dtype(bits: int) -> np.dtype:
    """Smallest unsigned dtype holding ``bits``-bit symbols."""
    return np.dtype(np.uint8 if bits <= 8 else np.uint16 if bits <= 16 else np.uint32)


def packed_size(n: int, bits: int) -> int:
    """Bytes that :func:`pack` produces for ``n`` symbols."""
    return sum((n * w + 7) // 8 for w in planes(bits))


def _pack_plane(p: np.ndarray, width: int) -> np.ndarray:
    """Pack a uint8 array whose values are < 2**width."""
    if width == 8:
        return p
    if width == 1:
        return np.packbits(p, bitorder="little")
    per = 8 // width
    n = p.size
    full = n - n % per
    head = p[:full].reshape(-1, per)
    if width == 4:
        out = head[:, 0] | (head[:, 1] << 4)
    else:  # width == 2
        out = head[:, 0] | (head[:, 1] << 2) | (head[:, 2] << 4) | (head[:, 3] << 6)
    if full < n:
        tail = 0
        for j, v in enumerate(p[full:].tolist()):
            tail |= int(v) << (width * j)
        out = np.concatenate([out, np.array([tail], np.uint8)])
    return out


def _unpack_plane(buf: np.ndarray, n: int, width: int) -> np.ndarray:
    if width == 8:
        return buf[:n]
    if width == 1:
        return np.unpackbits(buf, count=n, bitorder="little")
    per = 8 // width
    mask = np.uint8((1 << width) - 1)
    out = np.empty((buf.size, per), np.uint8)
    np.bitwise_and(buf, mask, out=out[:, 0])
    for j in range(1, per - 1):
        np.bitwise_and(buf >> np.uint8(width * j), mask, out=out[:, j])
    np.right_shift(buf, np.uint8(width * (per - 1)), out=out[:, per - 1])
    return out.reshape(-1)[:n]


def pack(symbols: np.ndarray, bits: int) -> bytes:
    """Pack non-negative integer ``symbols`` (each < 2**bits) into ``packed_size(n, bits)`` bytes."""
    widths = planes(bits)
    if symbols.dtype == np.uint8 and widths == [bits]:
        return _pack_plane(np.ascontiguousarray(symbols), bits).tobytes()
    if bits in (16, 32) and symbols.dtype == symbol_dtype(bits):
        # Byte planes: transpose the little-endian bytes.
        view = (
            np.ascontiguousarray(symbols).astype(symbols.dtype.newbyteorder("<"), copy=False).view(np.uint8)
        )
        return np.ascontiguousarray(view.reshape(-1, bits // 8).T).tobytes()
    values = symbols.astype(np.uint32, copy=False)
    parts = []
    shift = 0
    for width in widths:
        plane = ((values >> np.uint32(shift)) & np.uint32((1 << width) - 1)).astype(np.uint8)
        parts.append(_pack_plane(plane, width).tobytes())
        shift += width
    return b"".join(parts)


def unpack(data: bytes | memoryview, n: int, bits: int) -> np.ndarray:
    """Inverse of :func:`pack`; raises :class:`PayloadError` if ``data`` has the wrong length."""
    expected = packed_size(n, bits)
    if len(data) != expected:
        raise PayloadError(
            f"packed symbols: {len(data)} bytes, expected {expected} for {n} x {bits}-bit symbols"
        )
    buf = np.frombuffer(data, np.uint8)
    dtype = symbol_dtype(bits)
    widths = planes(bits)
    if widths == [bits] and bits <= 8:
        return _unpack_plane(buf, n, bits).copy() if bits == 8 else _unpack_plane(buf, n, bits)
    if bits in (16, 32):
        nbytes = bits // 8
        return (
            np.ascontiguousarray(buf.reshape(nbytes, n).T)
            .view(dtype.newbyteorder("<"))
            .reshape(n)
            .astype(dtype)
        )
    out = np.zeros(n, np.uint32)
    shift = 0
    pos = 0
    for width in widths:
        size = (n * width + 7) // 8
        plane = _unpack_plane(buf[pos : pos + size], n, width)
        out |= plane.astype(np.uint32) << np.uint32(shift)
        pos += size
        shift += width
    return out.astype(dtype)
