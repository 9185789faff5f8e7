"""Sparsifiers: which values of the (error-compensated) update travel.

``topk(frac)`` keeps the largest magnitudes over the whole model (``per_layer``: within each tensor);
``randk(frac)`` keeps a seeded random subset, rescaled by n/k so the result is unbiased, and sends no indices
(the decoder regenerates them from the seed in the header); ``threshold(t)`` keeps ``|x| >= t``.
"""

from __future__ import annotations

import math
import struct

import numpy as np

from . import indices
from .contract import Encoded, Properties, Sparsifier
from .errors import PayloadError
from .layout import Layout
from .spec import Flag, Float

_CHUNK = 1 << 18
_EXACT_BELOW = 1 << 17
_SAMPLE_SEED = 0x5EED  # fixed: top-k does not depend on the encode seed


def keep_count(frac: float, n: int) -> int:
    """Number of values a fraction keeps: at least one of a non-empty tensor."""
    return 0 if n == 0 else min(n, max(1, round(frac * n)))


def scan_at_least(x: np.ndarray, t: float) -> np.ndarray:
    """Sorted positions with ``|x| >= t``, scanned in cache-sized chunks (no full-size temporaries)."""
    parts = []
    for s in range(0, x.size, _CHUNK):
        hits = np.flatnonzero(np.abs(x[s : s + _CHUNK]) >= t)
        if hits.size:
            parts.append(hits + s)
    return np.concatenate(parts).astype(np.int64) if parts else np.zeros(0, np.int64)


def topk_positions(x: np.ndarray, k: int) -> np.ndarray:
    """Sorted positions of the ``k`` largest ``|x|``: a sampled threshold, then exact selection on
    candidates."""
    n = x.size
    if k >= n:
        return np.arange(n, dtype=np.int64)
    if k <= 0:
        return np.zeros(0, np.int64)
    if n <= _EXACT_BELOW:
        sel = np.argpartition(np.abs(x), n - k)[n - k :]
    else:
        frac = k / n
        m = int(min(n // 4, max(1 << 16, 64 / frac)))
        sample = np.abs(x[np.random.default_rng(_SAMPLE_SEED).integers(0, n, m)])
        expect = frac * m
        above = int(min(m - 1, expect + 4.0 * math.sqrt(expect) + 8))
        t = float(np.partition(sample, m - 1 - above)[m - 1 - above])
        cand = scan_at_least(x, t)
        if cand.size < k:  # the sample was unlucky: fall back to the exact full selection
            sel = np.argpartition(np.abs(x), n - k)[n - k :]
        else:
            vals = np.abs(x[cand])
            sel = cand[np.argpartition(vals, cand.size - k)[cand.size - k :]]
    sel = sel.astype(np.int64)
    sel.sort()
    return sel


FRAC = Float("frac", 0.0, 1.0, lo_open=True)


class TopK(Sparsifier):
    """Largest magnitudes, whole model (default) or per tensor."""

    name = "topk"
    args = (FRAC, Flag("per_layer"))
    nonzero = True
    frac: float
    per_layer: bool

    @property
    def properties(self) -> Properties:
        return Properties(
            lossless=self.frac == 1.0, unbiased=self.frac == 1.0, deterministic=True, sparse=True
        )

    def select(self, flat: np.ndarray, layout: Layout, seed: int) -> np.ndarray:
        if not self.per_layer:
            return topk_positions(flat, keep_count(self.frac, flat.size))
        parts = []
        for i in range(len(layout.infos)):
            lo, hi = int(layout.offsets[i]), int(layout.offsets[i + 1])
            parts.append(topk_positions(flat[lo:hi], keep_count(self.frac, hi - lo)) + lo)
        return np.concatenate(parts) if parts else np.zeros(0, np.int64)

    def encode_index(self, idx: np.ndarray, layout: Layout, seed: int) -> Encoded:
        return indices.encode(idx, layout.total, layout.shapes)

    def decode_index(self, data: memoryview, layout: Layout, seed: int) -> np.ndarray:
        return indices.decode(data, layout.total, layout.shapes)


class Threshold(Sparsifier):
    """Every value with ``|x| >= t``: the count adapts to the update."""

    name = "threshold"
    args = (Float("t", 0.0, math.inf),)
    nonzero = True
    t: float

    @property
    def properties(self) -> Properties:
        return Properties(lossless=self.t == 0.0, unbiased=self.t == 0.0, deterministic=True, sparse=True)

    def select(self, flat: np.ndarray, layout: Layout, seed: int) -> np.ndarray:
        return scan_at_least(flat, self.t)

    def encode_index(self, idx: np.ndarray, layout: Layout, seed: int) -> Encoded:
        return indices.encode(idx, layout.total, layout.shapes)

    def decode_index(self, data: memoryview, layout: Layout, seed: int) -> np.ndarray:
        return indices.decode(data, layout.total, layout.shapes)


class RandK(Sparsifier):
    """A seeded random ``frac`` of positions, values scaled by n/k (unbiased); indices regenerated from
    the seed."""

    name = "randk"
    args = (FRAC,)
    _COUNT = struct.Struct("<Q")
    frac: float

    @property
    def properties(self) -> Properties:
        full = self.frac == 1.0
        return Properties(lossless=full, unbiased=True, deterministic=full, sparse=True)

    def _positions(self, n: int, seed: int) -> np.ndarray:
        k = keep_count(self.frac, n)
        if k == n:
            return np.arange(n, dtype=np.int64)
        rng = np.random.default_rng([seed, 0x52414E44])
        idx = rng.choice(n, size=k, replace=False).astype(np.int64)
        idx.sort()
        return idx

    def select(self, flat: np.ndarray, layout: Layout, seed: int) -> np.ndarray:
        return self._positions(flat.size, seed)

    def value_scale(self, n: int, k: int) -> float:
        return n / k if k else 1.0

    def encode_index(self, idx: np.ndarray, layout: Layout, seed: int) -> Encoded:
        return Encoded(self._COUNT.pack(idx.size), 0)

    def decode_index(self, data: memoryview, layout: Layout, seed: int) -> np.ndarray:
        n = layout.total
        if len(data) != self._COUNT.size:
            raise PayloadError(f"randk index section: {len(data)} bytes, expected {self._COUNT.size}")
        (k,) = self._COUNT.unpack(data)
        if k != keep_count(self.frac, n):
            raise PayloadError(
                f"randk: payload keeps {k} values, {self.spec} keeps {keep_count(self.frac, n)}"
            )
        return self._positions(n, seed)
