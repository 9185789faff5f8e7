"""Width slicing of one global model (HeteroFL, Diao et al. 2021): a narrower model is the leading block of
every tensor, and each coordinate is averaged over the clients whose model holds it."""

from __future__ import annotations

from collections import OrderedDict

import numpy as np

Arrays = OrderedDict[str, np.ndarray]


def split_clients(k: int, counts: dict[str, int]) -> dict[str, int]:
    """Clients per round for each tier, proportional to its clients (largest remainder, >= 1 if it has any)."""
    total = sum(counts.values())
    quota = {t: k * c / total for t, c in counts.items()}
    out = {t: min(counts[t], max(1 if counts[t] else 0, int(q))) for t, q in quota.items()}
    for t in sorted(quota, key=lambda t: -(quota[t] - int(quota[t]))):
        if sum(out.values()) >= k:
            break
        if out[t] < counts[t]:
            out[t] += 1
    return out


def leading(shape: tuple[int, ...]) -> tuple[slice, ...]:
    """The index of the leading block of a tensor with this (smaller) shape."""
    return tuple(slice(0, s) for s in shape)


def slice_like(full: Arrays, shapes: dict[str, tuple[int, ...]]) -> Arrays:
    """The leading block of each tensor (HeteroFL's sub-model): channel-major flattening keeps fc inputs aligned."""
    return OrderedDict((k, np.ascontiguousarray(full[k][leading(shape)])) for k, shape in shapes.items())


def heterofl_aggregate(full: Arrays, updates: list[tuple[Arrays, float]]) -> Arrays:
    """Weighted mean per coordinate over the sub-models that hold it; coordinates no client holds keep their value."""
    out = OrderedDict()
    for k, g in full.items():
        acc = np.zeros_like(g, dtype=np.float64)
        cnt = np.zeros_like(g, dtype=np.float64)
        for arrays, weight in updates:
            block = leading(arrays[k].shape)
            acc[block] += weight * arrays[k]
            cnt[block] += weight
        out[k] = np.where(cnt > 0, acc / np.maximum(cnt, 1e-12), g).astype(np.float32)
    return out


SLICED_FROM_KEY = "fedcompress.sliced-from"  # train config: the width whose seeded model a client slices


def initial_slice(widest: dict[str, np.ndarray], own: dict[str, np.ndarray]) -> Arrays:
    """A sliced tier's round-0 model as its client rebuilds it: the leading block of the seeded widest model
    (so a compressed first downlink needs no full model)."""
    return slice_like(OrderedDict(widest), {k: tuple(v.shape) for k, v in own.items()})
