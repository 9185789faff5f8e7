"""Vector quantizers: ``kmeans(k)`` (a per-tensor scalar codebook, i.e. Lloyd-Max levels) and
``pq(subvec, k)``
(product quantization: consecutive ``subvec`` values form a vector, one shared codebook of ``k`` centroids).

Both fit a few vectorised Lloyd iterations on a bounded sample with a fixed generator (so payloads do not
depend
on the seed), then assign every value/vector; the codebooks travel as side information.
"""

from __future__ import annotations

import math

import numpy as np

from . import bitpack
from .contract import Properties, Quantizer
from .errors import PayloadError
from .layout import group_lengths
from .spec import Int
from .wire import floats

_SAMPLE = 1 << 16
_PQ_SAMPLE = 1 << 14
_ITERS = 8
_CHUNK = 1 << 15


def _bits(k: int) -> int:
    return max(1, math.ceil(math.log2(k)))


def _check_symbols(symbols: np.ndarray, k: int, what: str) -> None:
    if symbols.size and int(symbols.max()) >= k:
        raise PayloadError(f"{what}: symbol {int(symbols.max())} outside the codebook of {k}")


def kmeans_1d(x: np.ndarray, k: int, rng: np.random.Generator) -> np.ndarray:
    """Sorted float32 centroids from Lloyd iterations on a sample, initialised at quantiles."""
    sample = x if x.size <= _SAMPLE else x[rng.integers(0, x.size, _SAMPLE)]
    sample = sample.astype(np.float64)
    c = np.quantile(sample, (np.arange(k) + 0.5) / k)
    for _ in range(_ITERS):
        c.sort()
        a = np.searchsorted((c[1:] + c[:-1]) / 2, sample)
        counts = np.bincount(a, minlength=k)
        sums = np.bincount(a, weights=sample, minlength=k)
        c = np.where(counts > 0, sums / np.maximum(counts, 1), c)
    c.sort()
    return c.astype(np.float32)


class _Codebook(Quantizer):
    """A quantizer with a fitted codebook of ``k`` entries: biased, deterministic, ceil(log2 k)-bit symbols."""

    k: int

    @property
    def properties(self) -> Properties:
        return Properties(lossless=False, unbiased=False, deterministic=True)

    def symbol_bits(self, nonzero: bool) -> int:
        return _bits(self.k)


class KMeans(_Codebook):
    """``kmeans(k)``: k non-uniform levels per tensor, fitted to its values."""

    name = "kmeans"
    args = (Int("k", 2, 1 << 16),)

    def encode(self, values, starts, rng, nonzero):
        fit_rng = np.random.default_rng(0)
        n = values.size
        sym = np.empty(n, bitpack.symbol_dtype(self.symbol_bits(nonzero)))
        books = []
        ends = np.append(starts[1:], n).tolist() if starts.size else []
        for s, e in zip(starts.tolist(), ends, strict=True):
            c = kmeans_1d(values[s:e], self.k, fit_rng)
            sym[s:e] = np.searchsorted((c[1:] + c[:-1]) / np.float32(2), values[s:e])
            books.append(c)
        side = np.concatenate(books).astype("<f4").tobytes() if books else b""
        return sym, side

    def decode(self, symbols, side, starts, nonzero):
        books = floats(side, starts.size * self.k, "kmeans codebooks").reshape(-1, self.k)
        _check_symbols(symbols, self.k, "kmeans")
        if starts.size == 0:
            return np.zeros(0, np.float32)
        offsets = np.repeat(
            np.arange(starts.size, dtype=np.int64) * self.k, group_lengths(starts, symbols.size)
        )
        return books.reshape(-1)[symbols.astype(np.int64) + offsets]


class PQ(_Codebook):
    """``pq(subvec, k)``: vectors of ``subvec`` consecutive values, one codebook of ``k`` centroids for
    the model."""

    name = "pq"
    args = (Int("subvec", 1, 64), Int("k", 2, 4096))
    grouping = "global"
    subvec: int

    def symbol_count(self, n: int) -> int:
        return -(-n // self.subvec)

    def _vectors(self, values: np.ndarray) -> np.ndarray:
        d = self.subvec
        m = -(-values.size // d)
        x = np.zeros(m * d, np.float32)
        x[: values.size] = values
        return x.reshape(m, d)

    def _assign(self, x: np.ndarray, c: np.ndarray) -> np.ndarray:
        out = np.empty(x.shape[0], np.int64)
        cn = np.einsum("ij,ij->i", c, c)
        for s in range(0, x.shape[0], _CHUNK):
            out[s : s + _CHUNK] = np.argmin(cn - 2 * (x[s : s + _CHUNK] @ c.T), axis=1)
        return out

    def encode(self, values, starts, rng, nonzero):
        x = self._vectors(values)
        m, d = x.shape
        bits = self.symbol_bits(nonzero)
        if m == 0:
            return np.zeros(0, bitpack.symbol_dtype(bits)), b""
        fit_rng = np.random.default_rng(0)
        sample = x if m <= _PQ_SAMPLE else x[fit_rng.integers(0, m, _PQ_SAMPLE)]
        c = sample[fit_rng.choice(sample.shape[0], self.k, replace=sample.shape[0] < self.k)].copy()
        for _ in range(_ITERS):
            a = self._assign(sample, c)
            counts = np.bincount(a, minlength=self.k)
            for j in range(d):
                sums = np.bincount(a, weights=sample[:, j], minlength=self.k)
                c[:, j] = np.where(counts > 0, sums / np.maximum(counts, 1), c[:, j])
        sym = self._assign(x, c).astype(bitpack.symbol_dtype(bits))
        return sym, c.astype("<f4").tobytes()

    def decode(self, symbols, side, starts, nonzero):
        if symbols.size == 0:
            if len(side):
                raise PayloadError("pq: codebook without vectors")
            return np.zeros(0, np.float32)
        c = floats(side, self.k * self.subvec, "pq codebook").reshape(self.k, self.subvec)
        _check_symbols(symbols, self.k, "pq")
        return c[symbols.astype(np.int64)].reshape(-1)  # padded to whole vectors; the pipeline trims
