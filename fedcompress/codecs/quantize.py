"""Scalar quantizers: each value becomes an integer symbol, with one scale (or two) per group.

Two shapes of uniform grid, Q(x) = round(x / S) * S in both:
- *mid-tread* (dense values): symbols ``round(x / S) + L`` with ``S = max|x| / L``, ``L = 2**(bits-1) - 1``;
- *offset* (values a top-k/threshold sparsifier kept, all bounded away from zero): sign bit plus
  ``round((|x| - lo) / S)`` with ``lo`` the group's smallest kept magnitude. No kept value can round to zero
  and no level is spent on the empty band ``(-lo, lo)`` -- the fix for a max-abs/7 scale that zeroed 13.6% of
  kept top-k values while still paying for their indices.
Deterministic grids clip outliers where that lowers the squared error (:func:`mse_clip`; error feedback
returns
the clipped part); ``stochastic`` keeps the full range and replaces round with floor(y + U[0,1)), so it stays
unbiased.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import numpy as np

from . import bitpack
from .contract import LOSSLESS, Properties, Quantizer
from .errors import PayloadError
from .layout import Grouping, group_lengths
from .spec import Flag, Int
from .wire import floats

_CHUNK = 1 << 18
_FEW_GROUPS = 256
Param = float | np.ndarray


def _at(p: Param, s: int, e: int) -> Param:
    return p[s:e] if isinstance(p, np.ndarray) else p


def per_group(fn: Callable[..., None], n: int, starts: np.ndarray, *params: np.ndarray) -> None:
    """Call ``fn(lo, hi, *params)`` per group with scalars (few groups) or once with per-element arrays."""
    if starts.size == 0:
        return
    if starts.size <= _FEW_GROUPS:
        ends = np.append(starts[1:], n).tolist()
        for g, (s, e) in enumerate(zip(starts.tolist(), ends, strict=True)):
            fn(s, e, *(p[g].item() for p in params))
    else:
        lengths = group_lengths(starts, n)
        fn(0, n, *(np.repeat(p, lengths) for p in params))


def group_absmax(v: np.ndarray, starts: np.ndarray) -> np.ndarray:
    """max |v| per group, without a full-size temporary when groups are few."""
    if starts.size == 0:
        return np.zeros(0, np.float32)
    if starts.size <= _FEW_GROUPS:
        ends = np.append(starts[1:], v.size).tolist()
        return np.array(
            [
                max(float(v[s:e].max()), -float(v[s:e].min()))
                for s, e in zip(starts.tolist(), ends, strict=True)
            ],
            np.float32,
        )
    return np.maximum.reduceat(np.abs(v), starts).astype(np.float32)


def group_sum(v: np.ndarray, starts: np.ndarray) -> np.ndarray:
    """Sum per group in float64."""
    if starts.size == 0:
        return np.zeros(0, np.float64)
    return np.add.reduceat(v, starts, dtype=np.float64)


def floor_affine(
    x: np.ndarray, mul: Param, add: Param, top: float, rng: np.random.Generator | None, out: np.ndarray
) -> None:
    """``out = clip(floor(x * mul + add + u), 0, top)``; u = 0.5 (nearest) or U[0, 1) (stochastic)."""
    for s in range(0, x.size, _CHUNK):
        e = min(x.size, s + _CHUNK)
        t = np.multiply(x[s:e], _at(mul, s, e), dtype=np.float32)
        t += _at(add, s, e)
        if rng is None:
            t += np.float32(0.5)
        else:
            t += rng.random(e - s, dtype=np.float32)
        np.clip(t, 0, top, out=t)
        np.copyto(out[s:e], t, casting="unsafe")


def affine(sym: np.ndarray, mul: Param, add: Param, out: np.ndarray) -> None:
    """``out = sym * mul + add`` in float32, chunked."""
    for s in range(0, sym.size, _CHUNK):
        e = min(sym.size, s + _CHUNK)
        o = out[s:e]
        np.multiply(sym[s:e], _at(mul, s, e), out=o, dtype=np.float32)
        o += _at(add, s, e)


def _inverse(scale: np.ndarray) -> np.ndarray:
    safe = np.where(scale > 0, scale, np.float32(1))
    return np.where(scale > 0, np.float32(1) / safe, np.float32(0)).astype(np.float32)


def _side(count: int, data: memoryview | bytes, what: str, per: int = 1) -> np.ndarray:
    arr = floats(data, count * per, what)
    if (arr < 0).any():
        raise PayloadError(f"{what}: negative scale")
    return arr.reshape(count, per) if per > 1 else arr


# ---------------------------------------------------------------- scale choice

_CLIP_MAX_GROUPS = 4096  # more groups are small blocks/channels: max-abs is cheap and close enough there
_CLIP_GRID = np.geomspace(1.0, 1.0 / 512, 48).astype(np.float32)


def group_sample_positions(starts: np.ndarray, n: int) -> np.ndarray:
    """(groups, m) positions of a sample of each group's values, with replacement, from a fixed generator."""
    g = starts.size
    m = int(min(4096, max(64, (1 << 18) // max(g, 1))))
    lengths = group_lengths(starts, n)
    u = np.random.default_rng(0).random((g, m))
    pick = starts[:, None] + (u * lengths[:, None]).astype(np.int64)
    return np.minimum(pick, n - 1)


def group_sample(v: np.ndarray, starts: np.ndarray) -> np.ndarray:
    """A (groups, m) sample of each group's values (:func:`group_sample_positions`)."""
    return v[group_sample_positions(starts, v.size)]


def mse_clip(sample: np.ndarray, lo: np.ndarray, hi: np.ndarray, top: int) -> np.ndarray:
    """Per group, the clip magnitude in ``(lo, hi]`` whose ``top``-step grid from ``lo`` has the least squared
    error on ``sample`` (magnitudes, shape (groups, m)).

    Heavy-tailed updates make max-abs scales waste almost every level on a few outliers (on a Student-t update
    a max-abs 4-bit grid rounds >99% of values to zero); clipping the outliers (error feedback returns
    what was
    clipped) keeps the levels where the values are.
    """
    a = (sample - lo[:, None]).astype(np.float32)
    span = (hi - lo).astype(np.float32)
    best_err = np.full(lo.size, np.inf)
    best = span.copy()
    for frac in _CLIP_GRID:
        c = span * frac
        step = c / np.float32(top)
        inv = np.where(step > 0, np.float32(1) / np.where(step > 0, step, 1), 0).astype(np.float32)
        q = np.minimum(np.rint(a * inv[:, None]), np.float32(top)) * step[:, None]
        err = np.square(a - q).sum(axis=1, dtype=np.float64)
        better = err < best_err
        best_err = np.where(better, err, best_err)
        best = np.where(better, c, best)
    return (lo + best).astype(np.float32)


# ---------------------------------------------------------------- shared grids


def mid_encode(
    v: np.ndarray,
    starts: np.ndarray,
    scale: np.ndarray,
    levels: int,
    bits: int,
    rng: np.random.Generator | None,
) -> np.ndarray:
    """Mid-tread symbols ``round(v / scale) + levels`` in ``[0, 2 * levels]``."""
    sym = np.empty(v.size, bitpack.symbol_dtype(bits))
    inv = _inverse(scale)

    def run(s: int, e: int, mul: Param) -> None:
        floor_affine(v[s:e], mul, np.float32(levels), 2 * levels, rng, sym[s:e])

    per_group(run, v.size, starts, inv)
    return sym


def mid_decode(sym: np.ndarray, starts: np.ndarray, scale: np.ndarray, levels: int) -> np.ndarray:
    if sym.size and int(sym.max()) > 2 * levels:
        raise PayloadError(f"symbol {int(sym.max())} outside the grid of {2 * levels + 1} levels")
    out = np.empty(sym.size, np.float32)
    shift = (-scale * np.float32(levels)).astype(np.float32)

    def run(s: int, e: int, mul: Param, add: Param) -> None:
        affine(sym[s:e], mul, add, out[s:e])

    per_group(run, sym.size, starts, scale.astype(np.float32), shift)
    return out


def sign_encode(v: np.ndarray, starts: np.ndarray, stochastic: bool, rng: np.random.Generator) -> tuple:
    """1-bit symbols (1 = negative) with magnitude mean|v| (deterministic) or max|v| (stochastic,
    unbiased)."""
    n = v.size
    if stochastic:
        mag = group_absmax(v, starts)
        inv = np.repeat(_inverse(mag), group_lengths(starts, n)) if n else np.zeros(0, np.float32)
        # P(positive) = (1 + v / c) / 2  =>  negative iff u >= that.
        sym = (rng.random(n, dtype=np.float32) >= (np.float32(1) + v * inv) * np.float32(0.5)).astype(
            np.uint8
        )
    else:
        lengths = group_lengths(starts, n)
        mag = (group_sum(np.abs(v), starts) / np.maximum(lengths, 1)).astype(np.float32)
        sym = (v < 0).astype(np.uint8)
    return sym, mag


def sign_decode(sym: np.ndarray, starts: np.ndarray, mag: np.ndarray) -> np.ndarray:
    out = np.empty(sym.size, np.float32)
    per_group(lambda s, e, m: affine(sym[s:e], -2 * m, m, out[s:e]), sym.size, starts, mag)
    return out


# ---------------------------------------------------------------- stages


class Identity(Quantizer):
    """Raw fp32 bits: lossless."""

    name = "identity"
    grouping = "global"

    @property
    def properties(self) -> Properties:
        return LOSSLESS

    def symbol_bits(self, nonzero: bool) -> int:
        return 32

    def encode(self, values, starts, rng, nonzero):
        return np.ascontiguousarray(values, np.float32).view(np.uint32), b""

    def decode(self, symbols, side, starts, nonzero):
        if len(side):
            raise PayloadError("identity: unexpected side information")
        return symbols.astype(np.uint32, copy=False).view(np.float32)


class _Fixed(Quantizer):
    """A quantizer without arguments: deterministic, biased, its spec is its name."""

    @property
    def properties(self) -> Properties:
        return Properties(lossless=False, unbiased=False, deterministic=True)


class _Cast16(_Fixed):
    """A 16-bit float cast: no side information, 16 bits a value; subclasses say how to cast."""

    grouping = "global"

    def symbol_bits(self, nonzero: bool) -> int:
        return 16

    def encode(self, values, starts, rng, nonzero):
        return self._to16(np.clip(values, -self._MAX, self._MAX)), b""

    def decode(self, symbols, side, starts, nonzero):
        if len(side):
            raise PayloadError(f"{self.name}: unexpected side information")
        return self._from16(symbols)


class FP16(_Cast16):
    """IEEE half precision (values clipped to +-65504 so nothing becomes Inf)."""

    name = "fp16"
    _MAX = 65504.0

    @staticmethod
    def _to16(values: np.ndarray) -> np.ndarray:
        return values.astype(np.float16).view(np.uint16)

    @staticmethod
    def _from16(symbols: np.ndarray) -> np.ndarray:
        return symbols.astype(np.uint16, copy=False).view(np.float16).astype(np.float32)


class BF16(_Cast16):
    """bfloat16 (fp32's exponent, 8-bit mantissa), round to nearest even."""

    name = "bf16"
    _MAX = float(np.array([0x7F7F0000], np.uint32).view(np.float32)[0])

    @staticmethod
    def _to16(values: np.ndarray) -> np.ndarray:
        u = values.astype(np.float32).view(np.uint32)
        u = u + np.uint32(0x7FFF) + ((u >> np.uint32(16)) & np.uint32(1))
        return (u >> np.uint32(16)).astype(np.uint16)

    @staticmethod
    def _from16(symbols: np.ndarray) -> np.ndarray:
        return (symbols.astype(np.uint32) << np.uint32(16)).view(np.float32)


class Uniform(Quantizer):
    """``uniform(bits[, stochastic][, block=N | per_channel])``: 1..16-bit uniform grid, one scale per
    group."""

    name = "uniform"
    args = (
        Int("bits", 1, 16),
        Flag("stochastic"),
        Flag("per_channel"),
        Int("block", 2, 1 << 24, None, keyword_only=True),
    )
    bits: int
    stochastic: bool
    per_channel: bool
    block: int | None

    def validate(self) -> None:
        if self.block is not None and self.per_channel:
            raise self.fail("block=N and per_channel exclude each other")

    @property
    def grouping(self) -> Grouping:
        return ("block", self.block) if self.block else "channel" if self.per_channel else "tensor"

    @property
    def properties(self) -> Properties:
        return Properties(lossless=False, unbiased=self.stochastic, deterministic=not self.stochastic)

    def symbol_bits(self, nonzero: bool) -> int:
        return self.bits

    def _mode(self, nonzero: bool) -> str:
        return "sign" if self.bits == 1 else "offset" if nonzero else "mid"

    def encode(self, values, starts, rng, nonzero):
        mode = self._mode(nonzero)
        r = rng if self.stochastic else None
        if mode == "sign":
            sym, mag = sign_encode(values, starts, self.stochastic, rng)
            return sym, mag.astype("<f4").tobytes()
        if mode == "mid":
            levels = (1 << (self.bits - 1)) - 1
            amax = group_absmax(values, starts)
            if not self.stochastic and 0 < starts.size <= _CLIP_MAX_GROUPS:
                zero = np.zeros_like(amax)
                amax = mse_clip(np.abs(group_sample(values, starts)), zero, amax, levels)
            scale = (amax / np.float32(levels)).astype(np.float32)
            return mid_encode(values, starts, scale, levels, self.bits, r), scale.astype("<f4").tobytes()
        # offset: sign bit on top, (bits-1)-bit magnitude above the group's smallest kept magnitude.
        top = (1 << (self.bits - 1)) - 1
        mags = np.abs(values)
        n = values.size
        if n:
            lo = np.minimum.reduceat(mags, starts).astype(np.float32)
            hi = np.maximum.reduceat(mags, starts).astype(np.float32)
        else:
            lo = hi = np.zeros(0, np.float32)
        if not self.stochastic and 0 < starts.size <= _CLIP_MAX_GROUPS:
            hi = mse_clip(group_sample(mags, starts), lo, hi, top)
        scale = ((hi - lo) / np.float32(top)).astype(np.float32)
        inv = _inverse(scale)
        lengths = group_lengths(starts, n)
        sym = np.empty(n, bitpack.symbol_dtype(self.bits))
        floor_affine(mags, np.repeat(inv, lengths), np.repeat(-lo * inv, lengths), top, r, sym)
        sym |= (values < 0).astype(sym.dtype) << (self.bits - 1)
        return sym, np.stack([lo, scale], axis=1).astype("<f4").tobytes()

    def decode(self, symbols, side, starts, nonzero):
        mode = self._mode(nonzero)
        if mode == "sign":
            return sign_decode(symbols, starts, _side(starts.size, side, "uniform scales"))
        if mode == "mid":
            levels = (1 << (self.bits - 1)) - 1
            return mid_decode(symbols, starts, _side(starts.size, side, "uniform scales"), levels)
        params = _side(starts.size, side, "uniform offsets/scales", per=2)
        if starts.size == 0:
            return np.zeros(0, np.float32)
        lengths = group_lengths(starts, symbols.size)
        top = (1 << (self.bits - 1)) - 1
        out = np.empty(symbols.size, np.float32)
        affine(
            symbols & symbols.dtype.type(top),
            np.repeat(params[:, 1], lengths),
            np.repeat(params[:, 0], lengths),
            out,
        )
        np.negative(out, out=out, where=(symbols >> (self.bits - 1)).astype(bool))
        return out


class QSGD(Quantizer):
    """``qsgd(levels)``: stochastic rounding of ``v / ||v||_2 * levels`` per tensor; unbiased."""

    name = "qsgd"
    args = (Int("levels", 1, 32767),)
    levels: int

    @property
    def properties(self) -> Properties:
        return Properties(lossless=False, unbiased=True, deterministic=False)

    def symbol_bits(self, nonzero: bool) -> int:
        return max(1, math.ceil(math.log2(2 * self.levels + 1)))

    def encode(self, values, starts, rng, nonzero):
        norms = np.sqrt(group_sum(np.square(values, dtype=np.float64), starts)).astype(np.float32)
        scale = (norms / np.float32(self.levels)).astype(np.float32)
        sym = mid_encode(values, starts, scale, self.levels, self.symbol_bits(nonzero), rng)
        return sym, scale.astype("<f4").tobytes()

    def decode(self, symbols, side, starts, nonzero):
        return mid_decode(symbols, starts, _side(starts.size, side, "qsgd scales"), self.levels)


class Ternary(Quantizer):
    """``ternary[(stochastic)]``: values to {-a, 0, +a}.

    After top-k/threshold (STC): kept values become +-mean|kept| (1 bit). Dense: TWN threshold 0.7
    mean|v| with
    a = mean magnitude above it (2 bits). ``stochastic``: TernGrad, +-max|v| with probability |v|/max
    (unbiased).
    """

    name = "ternary"
    args = (Flag("stochastic"),)
    stochastic: bool

    @property
    def properties(self) -> Properties:
        return Properties(lossless=False, unbiased=self.stochastic, deterministic=not self.stochastic)

    def symbol_bits(self, nonzero: bool) -> int:
        return 1 if nonzero and not self.stochastic else 2

    def encode(self, values, starts, rng, nonzero):
        if self.stochastic:
            scale = group_absmax(values, starts)
            return mid_encode(values, starts, scale, 1, 2, rng), scale.astype("<f4").tobytes()
        if nonzero:
            sym, mag = sign_encode(values, starts, False, rng)
            return sym, mag.astype("<f4").tobytes()
        n = values.size
        lengths = group_lengths(starts, n)
        mags = np.abs(values)
        delta = (0.7 * group_sum(mags, starts) / np.maximum(lengths, 1)).astype(np.float32)
        above = mags > np.repeat(delta, lengths)
        count = group_sum(above.astype(np.float32), starts)
        alpha = (group_sum(np.where(above, mags, 0), starts) / np.maximum(count, 1)).astype(np.float32)
        sym = (np.uint8(1) + (above & (values > 0)) - (above & (values < 0)).astype(np.uint8)).astype(
            np.uint8
        )
        return sym, alpha.astype("<f4").tobytes()

    def decode(self, symbols, side, starts, nonzero):
        if not self.stochastic and nonzero:
            return sign_decode(symbols, starts, _side(starts.size, side, "ternary magnitudes"))
        return mid_decode(symbols, starts, _side(starts.size, side, "ternary magnitudes"), 1)


class Sign(_Fixed):
    """``sign``: 1 bit per value, magnitude mean|v| per tensor (scaled signSGD; use with ``ef``)."""

    name = "sign"

    def symbol_bits(self, nonzero: bool) -> int:
        return 1

    def encode(self, values, starts, rng, nonzero):
        sym, mag = sign_encode(values, starts, False, rng)
        return sym, mag.astype("<f4").tobytes()

    def decode(self, symbols, side, starts, nonzero):
        return sign_decode(symbols, starts, _side(starts.size, side, "sign magnitudes"))
