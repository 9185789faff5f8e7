"""Coders: integer symbols to bytes, losslessly.

- (no coder stage) ``raw``: bit-packed symbols;
- ``zstd[(level)]``: zstd over the bit-packed symbols (bit planes make 16/32-bit symbols byte-shuffled);
- ``entropy``: chosen per payload by measurement -- zstd on packed symbols (fast, ~1.01x the empirical entropy
  for 4-bit Gaussian-ish symbols) unless it lands more than 5% (and 16 KiB) above the entropy estimate,
  in which case
  constriction's ANS with the payload's own categorical model is tried too and the smaller one is kept.
"""

from __future__ import annotations

import struct

import numpy as np
import zstandard

from . import bitpack
from .contract import Coder, Encoded
from .errors import PayloadError
from .spec import Int
from .wire import zstd_decompress

MODE_RAW, MODE_ZSTD, MODE_ANS = 0, 1, 2
_ANS_HEAD = struct.Struct("<IIB")
MAX_ANS_ALPHABET = 1 << 12
ANS_ALWAYS_BELOW = 1 << 20  # ANS is cheap here (~5 ms per million symbols): always measure it
ANS_SLACK = 1.05  # above: ANS decodes ~15 ns/symbol, zstd ~1; pay that only for a real gain
ANS_MIN_GAIN = 1 << 14


def entropy_bits(symbols: np.ndarray, sample: int = 1 << 20) -> float:
    """Empirical entropy in bits per symbol (estimated on a strided sample for long inputs)."""
    if symbols.size == 0:
        return 0.0
    step = max(1, symbols.size // sample)
    counts = np.bincount(symbols[::step]).astype(np.float64)
    p = counts[counts > 0] / counts.sum()
    return float(-(p * np.log2(p)).sum())


def _zstd(data: bytes, level: int) -> bytes:
    return zstandard.ZstdCompressor(level=level).compress(data)


def _ans_encode(symbols: np.ndarray) -> tuple[bytes, bytes] | None:
    import constriction

    lo, hi = int(symbols.min()), int(symbols.max())
    m = hi - lo + 1
    if (
        m > MAX_ANS_ALPHABET or m < 2
    ):  # one symbol: nothing to code (zstd's run-length does it in a few bytes)
        return None
    counts = np.bincount(symbols.astype(np.int64) - lo, minlength=m)
    width = 1 if counts.max() < 1 << 8 else 2 if counts.max() < 1 << 16 else 4
    table = counts.astype(f"<u{width}").tobytes()
    model = constriction.stream.model.Categorical(counts.astype(np.float64), perfect=False)
    coder = constriction.stream.stack.AnsCoder()
    coder.encode_reverse((symbols.astype(np.int32) - lo), model)
    words = coder.get_compressed().astype("<u4").tobytes()
    return _ANS_HEAD.pack(lo, m, width) + table, words


def _ans_decode(data: memoryview, n: int, bits: int) -> np.ndarray:
    import constriction

    if len(data) < _ANS_HEAD.size:
        raise PayloadError("ANS section truncated")
    lo, m, width = _ANS_HEAD.unpack(data[: _ANS_HEAD.size])
    if width not in (1, 2, 4) or m == 0 or m > MAX_ANS_ALPHABET or lo + m > (1 << bits):
        raise PayloadError(
            f"ANS table: alphabet [{lo}, {lo + m}) or count width {width} invalid for {bits} bits"
        )
    end = _ANS_HEAD.size + m * width
    if len(data) < end or (len(data) - end) % 4:
        raise PayloadError("ANS section: table or words truncated")
    counts = np.frombuffer(data[_ANS_HEAD.size : end], f"<u{width}").astype(np.float64)
    if counts.sum() != n:
        raise PayloadError(f"ANS table counts {int(counts.sum())} symbols, expected {n}")
    words = np.frombuffer(data[end:], "<u4").astype(np.uint32)
    try:
        model = constriction.stream.model.Categorical(counts, perfect=False)
        coder = constriction.stream.stack.AnsCoder(words)
        out = coder.decode(model, n)
        empty = coder.is_empty()
    except Exception as exc:  # constriction raises its own types on malformed streams
        raise PayloadError(f"ANS stream is corrupted ({type(exc).__name__}: {str(exc)[:80]})") from exc
    if not empty:  # a whole stream ends exactly where the last symbol does
        raise PayloadError("ANS stream is corrupted (words left over after the last symbol)")
    return (np.asarray(out, np.int64) + lo).astype(bitpack.symbol_dtype(bits))


class Raw(Coder):
    """Bit-packed symbols, no entropy coding (the default when a spec names no coder)."""

    name = "raw"

    def encode(self, symbols: np.ndarray, bits: int) -> Encoded:
        data = bitpack.pack(symbols, bits)
        return Encoded(data, len(data))

    def decode(self, data: memoryview, n: int, bits: int) -> np.ndarray:
        return bitpack.unpack(data, n, bits)


class Zstd(Coder):
    """zstd over bit-packed symbols."""

    name = "zstd"
    args = (Int("level", 1, 22, 3),)
    level: int

    def encode(self, symbols: np.ndarray, bits: int) -> Encoded:
        frame = _zstd(bitpack.pack(symbols, bits), self.level)
        return Encoded(frame, len(frame))

    def decode(self, data: memoryview, n: int, bits: int) -> np.ndarray:
        return bitpack.unpack(zstd_decompress(data, bitpack.packed_size(n, bits), "zstd values"), n, bits)


class Entropy(Coder):
    """Smallest of packed, zstd(packed) and ANS, measured per payload (ANS only when it can pay off)."""

    name = "entropy"
    level = 1  # measured: level 1 is as tight as 3 on nibble-packed symbols, and 2.5x faster

    def encode(self, symbols: np.ndarray, bits: int) -> Encoded:
        packed = bitpack.pack(symbols, bits)
        n = symbols.size
        if n == 0:
            return Encoded(bytes([MODE_RAW]) + packed, len(packed))
        frame = _zstd(packed, self.level)
        best = (MODE_ZSTD, b"", frame) if len(frame) < len(packed) else (MODE_RAW, b"", packed)
        if bits <= 16:
            bound = n * entropy_bits(symbols) / 8
            excess = len(best[2]) - bound
            if n <= ANS_ALWAYS_BELOW or (excess > (ANS_SLACK - 1) * bound and excess > ANS_MIN_GAIN):
                ans = _ans_encode(symbols)
                if ans is not None and len(ans[0]) + len(ans[1]) < len(best[1]) + len(best[2]):
                    best = (MODE_ANS, *ans)
        mode, table, coded = best
        return Encoded(bytes([mode]) + table + coded, len(coded))

    def decode(self, data: memoryview, n: int, bits: int) -> np.ndarray:
        if len(data) < 1:
            raise PayloadError("value section truncated")
        mode, body = data[0], data[1:]
        if mode == MODE_RAW:
            return bitpack.unpack(body, n, bits)
        if mode == MODE_ZSTD:
            return bitpack.unpack(
                zstd_decompress(body, bitpack.packed_size(n, bits), "entropy values"), n, bits
            )
        if mode == MODE_ANS:
            return _ans_decode(body, n, bits)
        raise PayloadError(f"unknown value coding mode {mode}")
