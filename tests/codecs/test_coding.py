"""Index coding, bit packing and entropy coding: exact round trips and sizes close to their bounds."""

from __future__ import annotations

import math

import numpy as np
import pytest

from fedcompress.codecs import PayloadError, bitpack, indices
from fedcompress.codecs.entropy import MODE_ANS, MODE_RAW, MODE_ZSTD, Entropy, entropy_bits


@pytest.mark.parametrize("bits", list(range(1, 33)))
def test_bitpack_round_trip(bits: int) -> None:
    rng = np.random.default_rng(bits)
    for n in (0, 1, 3, 7, 8, 1001):
        sym = rng.integers(0, 2**bits, n, dtype=np.uint64).astype(bitpack.symbol_dtype(bits))
        data = bitpack.pack(sym, bits)
        assert len(data) == bitpack.packed_size(n, bits) <= (n * bits + 7) // 8 + 3
        np.testing.assert_array_equal(bitpack.unpack(data, n, bits), sym)
    with pytest.raises(PayloadError):
        bitpack.unpack(b"\0" * (bitpack.packed_size(100, bits) + 1), 100, bits)


@pytest.mark.parametrize("density", [0.0, 0.0005, 0.01, 0.1, 0.5, 0.9, 1.0])
def test_indices_round_trip_and_size(density: float) -> None:
    n = 200_000
    rng = np.random.default_rng(1)
    k = round(density * n)
    idx = np.sort(rng.choice(n, k, replace=False)).astype(np.int64)
    enc = indices.encode(idx, n)
    np.testing.assert_array_equal(indices.decode(enc.data, n), idx)
    bound = (math.lgamma(n + 1) - math.lgamma(k + 1) - math.lgamma(n - k + 1)) / math.log(2) / 8
    assert len(enc.data) <= max(1.06 * bound + 32, 0) or len(enc.data) <= n / 8 + 32
    if 0 < density <= 0.1:
        assert len(enc.data) <= 1.06 * bound + 32  # Rice: within 6% of log2(C(n, k))
    if density >= 0.5:
        assert len(enc.data) <= n / 8 + 32  # never worse than a bitmap


def test_indices_reject_corruption() -> None:
    idx = np.array([3, 10, 500], np.int64)
    data = bytearray(indices.encode(idx, 1000).data)
    with pytest.raises(PayloadError, match="out of range"):
        indices.decode(bytes(data), 400)
    with pytest.raises(PayloadError):
        indices.decode(bytes(data[:-1]), 1000)
    data[0] = 9
    with pytest.raises(PayloadError, match="mode"):
        indices.decode(bytes(data), 1000)


SHAPES = [(32, 1, 5, 5), (32,), (128, 3136), (128,), (62, 128), (62,)]


def _bicluster(rng: np.random.Generator) -> tuple[np.ndarray, int]:
    """Positions the way top-k picks them in a dense layer: a few rows x a few columns, a quarter of those cells."""
    offsets = np.cumsum([0] + [int(np.prod(s)) for s in SHAPES])
    rows, cols = np.sort(rng.choice(128, 25, replace=False)), np.sort(rng.choice(3136, 125, replace=False))
    cells = (rows[:, None] * 3136 + cols[None, :]).ravel()
    fc1 = np.sort(rng.choice(cells, 750, replace=False))
    conv = np.sort(rng.choice(800, 30, replace=False))
    return np.concatenate([conv, fc1 + offsets[2]]).astype(np.int64), int(offsets[-1])


def test_grid_coding_finds_row_and_column_structure() -> None:
    idx, n = _bicluster(np.random.default_rng(0))
    flat, grid = indices.encode(idx, n), indices.encode(idx, n, SHAPES)
    assert grid.data[0] == indices.MODE_GRID and len(grid.data) < 0.75 * len(flat.data), (
        len(grid.data),
        len(flat.data),
    )
    np.testing.assert_array_equal(indices.decode(grid.data, n, SHAPES), idx)


@pytest.mark.parametrize("density", [0.0005, 0.002, 0.02, 0.3])
def test_grid_coding_never_costs_more_than_flat(density: float) -> None:
    n = sum(int(np.prod(s)) for s in SHAPES)
    rng = np.random.default_rng(2)
    idx = np.sort(rng.choice(n, round(density * n), replace=False)).astype(np.int64)
    enc = indices.encode(idx, n, SHAPES)
    assert len(enc.data) <= len(indices.encode(idx, n).data)
    np.testing.assert_array_equal(indices.decode(enc.data, n, SHAPES), idx)


def test_grid_coding_rejects_what_does_not_fit() -> None:
    idx, n = _bicluster(np.random.default_rng(1))
    data = indices.encode(idx, n, SHAPES).data
    with pytest.raises(PayloadError, match="shapes"):
        indices.decode(data, n)
    with pytest.raises(PayloadError, match="layout"):
        indices.decode(data, n, SHAPES[:-1])
    for bad in (data[:-1], data + b"\0", data[:20]):
        with pytest.raises(PayloadError):
            indices.decode(bad, n, SHAPES)
    rng = np.random.default_rng(0)
    for _ in range(300):  # any flipped byte: an error, or a valid index set
        b = bytearray(data)
        b[rng.integers(len(b))] ^= 1 << int(rng.integers(8))
        try:
            out = indices.decode(bytes(b), n, SHAPES)
        except PayloadError:
            continue
        assert out.size == 0 or (np.all(np.diff(out) > 0) and out[0] >= 0 and out[-1] < n)


def _gaussian_symbols(n: int, bits: int, seed: int = 0) -> np.ndarray:
    top = 2 ** (bits - 1) - 1
    x = np.random.default_rng(seed).standard_normal(n)
    return (np.clip(np.rint(x / (x.std() * 3 / top)), -top, top) + top).astype(bitpack.symbol_dtype(bits))


@pytest.mark.parametrize("bits", [2, 3, 4, 5, 8, 12])
def test_entropy_coder_is_close_to_entropy(bits: int) -> None:
    sym = _gaussian_symbols(300_000, bits)
    enc = Entropy().encode(sym, bits)
    bound = sym.size * entropy_bits(sym, sample=sym.size) / 8
    assert enc.coded <= 1.05 * bound
    np.testing.assert_array_equal(Entropy().decode(memoryview(enc.data), sym.size, bits), sym)


def test_entropy_coder_modes() -> None:
    rng = np.random.default_rng(0)
    uniform = rng.integers(0, 16, 10_000).astype(np.uint8)  # incompressible: raw packing wins
    assert Entropy().encode(uniform, 4).data[0] == MODE_RAW
    big = _gaussian_symbols(2_000_000, 4)  # zstd on nibbles is within 5%: no ANS for large inputs
    assert Entropy().encode(big, 4).data[0] == MODE_ZSTD
    odd = _gaussian_symbols(50_000, 3)  # 3-bit planes defeat zstd; ANS takes over
    enc = Entropy().encode(odd, 3)
    assert enc.data[0] == MODE_ANS
    corrupt = bytearray(enc.data)
    corrupt[1:5] = (2**30).to_bytes(4, "little")
    with pytest.raises(PayloadError, match="ANS table"):
        Entropy().decode(memoryview(bytes(corrupt)), odd.size, 3)
