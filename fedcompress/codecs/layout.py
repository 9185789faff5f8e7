"""Where each tensor lives in one flat float32 vector, and how values are grouped for scales.

Pipelines work on one contiguous vector (global top-k needs it; per-tensor work uses slices of it), and groups
(one scale per tensor, per output channel or per block) are contiguous runs of the values being quantized.
"""

from __future__ import annotations

import sys
from collections.abc import Mapping

import numpy as np

from .wire import DTYPE_CODES, TensorInfo

Grouping = str | tuple[str, int]  # "global" | "tensor" | "channel" | ("block", n)


def is_torch(x: object) -> bool:
    """Whether ``x`` is a torch tensor (without importing torch: numpy-only callers never pay for it)."""
    torch = sys.modules.get("torch")
    return torch is not None and isinstance(x, torch.Tensor)


def _dtype_name(arr: np.ndarray, name: str) -> str:
    dtype = str(arr.dtype).removeprefix("torch.")
    if dtype not in DTYPE_CODES:
        raise ValueError(
            f"tensor {name!r}: dtype {dtype} is not supported (allowed: {', '.join(DTYPE_CODES)})"
        )
    return dtype


class Layout:
    """Names, shapes, dtypes and flat offsets of a tensor dict."""

    def __init__(self, infos: tuple[TensorInfo, ...]) -> None:
        self.infos = infos
        sizes = [info.size for info in infos]
        self.offsets = np.zeros(len(infos) + 1, np.int64)
        np.cumsum(sizes, out=self.offsets[1:])
        self.total = int(sum(sizes))  # Python int: no overflow on hostile headers
        self.shapes = tuple(info.shape for info in infos)

    @classmethod
    def of(cls, tensors: Mapping[str, np.ndarray]) -> Layout:
        infos = []
        for name, arr in tensors.items():
            if not isinstance(name, str):
                raise ValueError(f"tensor names must be strings, got {name!r}")
            arr = arr if is_torch(arr) else np.asarray(arr)
            infos.append(TensorInfo(name, tuple(int(d) for d in arr.shape), _dtype_name(arr, name)))
        return cls(tuple(infos))

    def flatten(
        self,
        tensors: Mapping[str, np.ndarray],
        residual: Mapping[str, np.ndarray] | None = None,
        decay: float = 1.0,
    ) -> np.ndarray:
        """One new float32 vector: the tensors, plus ``decay * residual`` when given."""
        flat = np.empty(self.total, np.float32)
        for i, info in enumerate(self.infos):
            out = flat[self.offsets[i] : self.offsets[i + 1]]
            x = np.asarray(tensors[info.name]).reshape(-1)
            if residual is None:
                out[...] = x
                continue
            r = np.asarray(residual[info.name])
            if r.shape != info.shape:
                raise ValueError(f"state[{info.name!r}] has shape {r.shape}, tensor has {info.shape}")
            r = r.reshape(-1)
            if decay != 1.0:
                r = r * np.float32(decay)
            np.add(x, r, out=out, casting="unsafe")
        return flat

    def check_finite(self, flat: np.ndarray, after: str = "") -> None:
        """Reject NaN/Inf (it would poison a residual forever); one cheap sum decides the common case."""
        if np.isfinite(flat.sum(dtype=np.float64)):
            return
        for name, arr in self.split(flat).items():
            if not np.isfinite(arr).all():
                raise ValueError(f"tensor {name!r} contains NaN or Inf{after}")

    def split(self, flat: np.ndarray) -> dict[str, np.ndarray]:
        """Views of ``flat`` shaped like the tensors."""
        return {
            info.name: flat[self.offsets[i] : self.offsets[i + 1]].reshape(info.shape)
            for i, info in enumerate(self.infos)
        }

    def _bounds(self, grouping: Grouping) -> np.ndarray:
        """Group starts as flat positions (dense view)."""
        if grouping == "global":
            return np.zeros(1, np.int64)
        if grouping == "channel":
            starts = []
            for i, info in enumerate(self.infos):
                rows = info.shape[0] if len(info.shape) >= 2 and info.shape[0] > 0 else 1
                step = max(1, info.size // rows)
                starts.append(np.arange(self.offsets[i], self.offsets[i + 1], step, dtype=np.int64)[:rows])
            return np.concatenate(starts) if starts else np.zeros(0, np.int64)
        return self.offsets[:-1]

    def group_starts(self, grouping: Grouping, idx: np.ndarray | None, n: int) -> np.ndarray:
        """Sorted, unique starts (all < ``n``) of non-empty groups among the ``n`` values being quantized.

        ``idx`` are the kept flat positions (sparse) or None (dense, ``n == total``).
        """
        if n == 0:
            return np.zeros(0, np.int64)
        if isinstance(grouping, tuple):
            block = grouping[1]
            seg = self._bounds("tensor")
            seg = seg if idx is None else np.searchsorted(idx, seg)
            ends = np.append(seg[1:], n)
            parts = [
                np.arange(s, e, block, dtype=np.int64)
                for s, e in zip(seg.tolist(), ends.tolist(), strict=True)
                if e > s
            ]
            return np.concatenate(parts)
        bounds = self._bounds(grouping)
        starts = bounds if idx is None else np.searchsorted(idx, bounds).astype(np.int64)
        starts = np.unique(starts)
        return starts[starts < n]


def group_lengths(starts: np.ndarray, n: int) -> np.ndarray:
    """Lengths of the groups that start at ``starts`` within ``n`` values."""
    return np.diff(np.append(starts, n))
