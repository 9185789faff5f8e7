"""Encoding torch tensors on their own device, to the same bytes as the numpy path.

`Pipeline.encode` comes here when the update (or the error-feedback state) holds torch tensors. The full-size
work stays on the tensors' device: flattening with the residual, the finiteness check, selection (``topk``
with ``torch.topk``, ``threshold``, ``randk``), and for deterministic ``uniform(bits)`` (the offset and
mid-tread grids) the symbols and the error-feedback reconstruction. What crosses to the host is what the
payload needs: kept indices, a <= 2**18-value sample for the clipping search, per-group extremes, and the
symbols; the bytes themselves (index coding, entropy coding, the wire format) are made on the CPU by the
same code as for numpy. Other quantizers (casts, QSGD, ternary, sign, stochastic grids, vector
quantization) run in numpy on the kept values, which after a sparsifier are few.

Why the bytes are identical: every step is either exact whatever the order (max, min, comparisons, gathers)
or one IEEE float32 operation per element done in the same sequence as numpy (multiply, then add, then add
0.5 -- never fused), and scales and clip levels are computed by the numpy code itself on the same inputs.

The one exception, exactly: ``topk`` when several values share the k-th largest magnitude (a tie across the
selection boundary). numpy's ``argpartition`` then keeps some of them in an order of its own (introselect),
which torch cannot reproduce; the torch path keeps the tied values at the lowest positions. Both keep k of the
largest magnitudes, but the payloads differ. Real updates do hit this (exact zeros, or equal values in tensors
that barely moved; a pinned 3-round run changes its final digest if numpy adopts the torch rule), so a GPU run
and a CPU run of the same config can differ in the last bits; runs on one device repeat byte for byte.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
import torch

from . import bitpack
from .contract import Encoded, Quantizer, Sparsifier
from .feedback import ErrorFeedback
from .layout import Layout, group_lengths, is_torch
from .quantize import (
    _CLIP_MAX_GROUPS,
    Uniform,
    _inverse,
    group_sample_positions,
    mse_clip,
)
from .sparsify import RandK, Threshold, TopK, keep_count

if TYPE_CHECKING:
    from .pipeline import Pipeline

F32 = torch.float32


@dataclass
class DeviceCompressed:
    """What the payload needs from the lossy part (the numpy path's ``Compressed`` without the values)."""

    symbols: np.ndarray
    side: bytes
    index: Encoded
    nonzero: bool


def device_of(tensors: Mapping[str, object], state: Mapping[str, object] | None) -> torch.device:
    """The device of the first torch tensor (update first, then state); everything else moves there."""
    for v in [*tensors.values(), *((state or {}).values())]:
        if is_torch(v):
            return v.device
    return torch.device("cpu")


def _on(x: object, device: torch.device) -> torch.Tensor:
    return x.to(device) if is_torch(x) else torch.as_tensor(np.asarray(x), device=device)


def flatten(
    layout: Layout,
    tensors: Mapping[str, object],
    residual: Mapping[str, object] | None,
    decay: float,
    device: torch.device,
) -> torch.Tensor:
    """One new float32 vector on ``device``: the tensors (+ ``decay * residual``), as ``Layout.flatten``."""
    parts = []
    for info in layout.infos:
        x = _on(tensors[info.name], device).reshape(-1)
        if residual is None:
            parts.append(x.to(F32))
            continue
        r = _on(residual[info.name], device)
        if tuple(r.shape) != info.shape:
            raise ValueError(f"state[{info.name!r}] has shape {tuple(r.shape)}, tensor has {info.shape}")
        r = r.reshape(-1)
        if decay != 1.0:
            r = r * torch.tensor(decay, dtype=F32)
        parts.append(torch.add(x, r).to(F32))  # numpy adds in the promoted dtype, then casts
    return torch.cat(parts) if parts else torch.zeros(0, dtype=F32, device=device)


def check_finite(layout: Layout, flat: torch.Tensor, after: str = "") -> None:
    if bool(torch.isfinite(flat.sum(dtype=torch.float64))):
        return
    for i, info in enumerate(layout.infos):
        lo, hi = int(layout.offsets[i]), int(layout.offsets[i + 1])
        if not bool(torch.isfinite(flat[lo:hi]).all()):
            raise ValueError(f"tensor {info.name!r} contains NaN or Inf{after}")


def topk_positions(x: torch.Tensor, k: int) -> torch.Tensor:
    """Sorted positions of the ``k`` largest ``|x|``, ties at the k-th magnitude to the lowest positions."""
    n = x.numel()
    if k >= n:
        return torch.arange(n, dtype=torch.int64, device=x.device)
    if k <= 0:
        return torch.zeros(0, dtype=torch.int64, device=x.device)
    a = x.abs()
    t = torch.topk(a, k, sorted=False).values.min()
    above = torch.nonzero(a > t).squeeze(1)
    tied = torch.nonzero(a == t).squeeze(1)[: k - above.numel()]
    return torch.sort(torch.cat([above, tied])).values


def select(sp: Sparsifier, flat: torch.Tensor, layout: Layout, seed: int) -> torch.Tensor:
    """Kept positions (sorted int64, on the device); a sparsifier without a device path selects in numpy."""
    n, dev = flat.numel(), flat.device
    if isinstance(sp, TopK):
        if not sp.per_layer:
            return topk_positions(flat, keep_count(sp.frac, n))
        parts = []
        for i in range(len(layout.infos)):
            lo, hi = int(layout.offsets[i]), int(layout.offsets[i + 1])
            parts.append(topk_positions(flat[lo:hi], keep_count(sp.frac, hi - lo)) + lo)
        return torch.cat(parts) if parts else torch.zeros(0, dtype=torch.int64, device=dev)
    if isinstance(sp, Threshold):  # a Python float compares in float32, as numpy's does
        return torch.nonzero(flat.abs() >= sp.t).squeeze(1)
    if isinstance(sp, RandK):
        return torch.from_numpy(sp._positions(n, seed)).to(dev)
    return torch.from_numpy(np.asarray(sp.select(flat.cpu().numpy(), layout, seed), np.int64)).to(dev)


# ---------------------------------------------------------------- uniform grids on the device


def _segments(starts: np.ndarray, n: int, device: torch.device) -> tuple[np.ndarray, torch.Tensor]:
    lengths = group_lengths(starts, n)
    return lengths, torch.from_numpy(lengths).to(device)


def _spread(p: np.ndarray, lengths: torch.Tensor, device: torch.device) -> torch.Tensor:
    """Per-group float32 parameters repeated over their groups' values, on the device."""
    return torch.repeat_interleave(torch.from_numpy(np.ascontiguousarray(p, np.float32)).to(device), lengths)


def _group_reduce(v: torch.Tensor, lengths: torch.Tensor, how: str) -> np.ndarray:
    """Exact per-group max or min (order cannot change the result), as float32 on the host."""
    g = lengths.numel()
    gid = torch.repeat_interleave(torch.arange(g, device=v.device), lengths)
    out = torch.zeros(g, dtype=F32, device=v.device).scatter_reduce(0, gid, v, how, include_self=False)
    return out.cpu().numpy()


def _sample(v: torch.Tensor, starts: np.ndarray) -> np.ndarray:
    """``quantize.group_sample`` gathered on the device: only the sample crosses to the host."""
    pick = torch.from_numpy(group_sample_positions(starts, v.numel())).to(v.device)
    return v[pick].cpu().numpy()


def _floor_affine(x: torch.Tensor, mul: torch.Tensor, add: torch.Tensor, top: int) -> torch.Tensor:
    """``clip(floor(x * mul + add + 0.5), 0, top)`` as ``quantize.floor_affine``: one rounding per step."""
    t = x * mul
    t = t + add
    t = t + torch.tensor(0.5, dtype=F32)
    return torch.clamp(t, 0, top).to(torch.int32)


@dataclass
class _Grid:
    """Device symbols (int32) and what reconstructs them."""

    sym: torch.Tensor
    side: bytes
    mul: torch.Tensor  # per value: the step
    add: torch.Tensor  # per value: the offset
    sign_bit: int  # 0: mid-tread; else the bit that marks a negative value


def device_uniform(q: Uniform, v: torch.Tensor, starts: np.ndarray, nonzero: bool) -> _Grid:
    """Deterministic ``uniform`` (mid-tread or offset grid) on the device; as ``Uniform.encode``."""
    dev, n = v.device, v.numel()
    lengths, lengths_dev = _segments(starts, n, dev)
    g = starts.size
    if q._mode(nonzero) == "mid":
        levels = (1 << (q.bits - 1)) - 1
        amax = _group_reduce(v.abs(), lengths_dev, "amax")
        if 0 < g <= _CLIP_MAX_GROUPS:
            amax = mse_clip(np.abs(_sample(v, starts)), np.zeros_like(amax), amax, levels)
        scale = (amax / np.float32(levels)).astype(np.float32)
        level = torch.tensor(levels, dtype=F32)
        sym = _floor_affine(v, _spread(_inverse(scale), lengths_dev, dev), level, 2 * levels)
        shift = (-scale * np.float32(levels)).astype(np.float32)
        return _Grid(
            sym,
            scale.astype("<f4").tobytes(),
            _spread(scale, lengths_dev, dev),
            _spread(shift, lengths_dev, dev),
            0,
        )
    top = (1 << (q.bits - 1)) - 1
    mags = v.abs()
    lo = _group_reduce(mags, lengths_dev, "amin")
    hi = _group_reduce(mags, lengths_dev, "amax")
    if 0 < g <= _CLIP_MAX_GROUPS:
        hi = mse_clip(_sample(mags, starts), lo, hi, top)
    scale = ((hi - lo) / np.float32(top)).astype(np.float32)
    inv = _inverse(scale)
    sym = _floor_affine(
        mags, _spread(inv, lengths_dev, dev), _spread((-lo * inv).astype(np.float32), lengths_dev, dev), top
    )
    sym = sym | ((v < 0).to(torch.int32) << (q.bits - 1))
    side = np.stack([lo, scale], axis=1).astype("<f4").tobytes()
    return _Grid(sym, side, _spread(scale, lengths_dev, dev), _spread(lo, lengths_dev, dev), q.bits - 1)


def grid_decode(grid: _Grid) -> torch.Tensor:
    """The decoder's values for ``grid`` (as ``mid_decode`` / the offset branch of ``Uniform.decode``)."""
    if grid.sign_bit == 0:
        out = grid.sym.to(F32) * grid.mul
        return out + grid.add
    mag = (grid.sym & ((1 << grid.sign_bit) - 1)).to(F32) * grid.mul
    mag = mag + grid.add
    return torch.where((grid.sym >> grid.sign_bit).bool(), -mag, mag)


def on_device(q: Quantizer, n: int, nonzero: bool) -> bool:
    """Whether ``q`` quantizes on the device (deterministic uniform grids; one group per tensor is few)."""
    return isinstance(q, Uniform) and not q.stochastic and q._mode(nonzero) != "sign" and n > 0


# ---------------------------------------------------------------- the lossy part


def compress(
    pipe: Pipeline,
    tensors: Mapping[str, object],
    layout: Layout,
    state: Mapping[str, object] | None,
    seed: int,
) -> tuple[DeviceCompressed, dict[str, torch.Tensor] | None]:
    """The lossy part of ``pipe`` on the tensors' device; returns the payload parts and the new state (views
    of one device vector, shaped like the tensors) when the pipeline has ``ef``."""
    fb, sp, q = pipe.feedback, pipe.sparsifier, pipe.quantizer
    ef = isinstance(fb, ErrorFeedback)
    if fb is not None and not ef:
        raise ValueError(f"stateful stage {fb.spec!r} has no torch path")
    if ef and state is not None and set(state) != set(tensors):
        raise ValueError(f"state names {sorted(state)} differ from tensor names {sorted(tensors)}")
    device = device_of(tensors, state)
    flat = flatten(layout, tensors, state if ef else None, fb.decay if ef else 1.0, device)
    check_finite(layout, flat, " (after adding the error-feedback residual)" if ef else "")
    nonzero = bool(sp and sp.nonzero)
    n = layout.total
    if sp is not None:
        idx = select(sp, flat, layout, seed)
        values = flat[idx]
        factor = sp.value_scale(n, idx.numel())
        if factor != 1.0:
            values = values * torch.tensor(factor, dtype=F32)
        idx_np = idx.cpu().numpy()
        index_sec = sp.encode_index(idx_np, layout, seed)
    else:
        idx, idx_np, values, index_sec = None, None, flat, Encoded(b"", 0)
    k = values.numel()
    starts = layout.group_starts(q.grouping, idx_np, k)
    recon: torch.Tensor | None
    if on_device(q, k, nonzero):
        grid = device_uniform(q, values, starts, nonzero)
        dtype = bitpack.symbol_dtype(q.bits)
        small = torch.uint8 if dtype == np.uint8 else torch.int32
        symbols, side = grid.sym.to(small).cpu().numpy().astype(dtype, copy=False), grid.side
        recon = grid_decode(grid) if ef else None
    else:
        host = values.detach().cpu().numpy()
        if idx is None and flat.device.type == "cpu":
            host = host.copy()  # a view of flat, which error feedback changes below
        symbols, side = q.encode(host, starts, np.random.default_rng([seed, 0x51]), nonzero)
        recon = (
            torch.from_numpy(np.array(q.decode(symbols, side, starts, nonzero)[:k])).to(device)
            if ef
            else None
        )
    out = DeviceCompressed(symbols, side, index_sec, nonzero)
    if not ef:
        return out, None
    assert recon is not None
    if idx is not None:
        flat[idx] -= recon
    else:
        flat = flat - recon
    return out, {
        info.name: flat[int(layout.offsets[i]) : int(layout.offsets[i + 1])].view(info.shape)
        for i, info in enumerate(layout.infos)
    }
