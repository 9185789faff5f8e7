"""k-means weight sharing (Deep Compression's vector quantization): each weight tensor becomes a small
codebook of 2^bits float centroids plus a packed `bits`-wide index per weight.

Clustering is 1-D, so each Lloyd step is a `bucketize` against centroid midpoints and a `bincount`: no
(n x k) distance matrix. Centroids start evenly spaced between min and max (linear init keeps the rare
large weights, which matter most, as Han et al. found). Exact zeros from pruning can be kept as their own
centroid so sparsity survives sharing.
"""

from __future__ import annotations

import io
from dataclasses import dataclass, field

import numpy as np
import torch
from torch import nn

from fedcompress.errors import ConfigError

FORMAT = "fedcompress.kmeans/1"


def _check_bits(bits: int) -> int:
    if not isinstance(bits, int) or not 1 <= bits <= 8:
        raise ConfigError(f"kmeans bits must be an integer in [1, 8], got {bits!r}")
    return bits


def kmeans_1d(values: torch.Tensor, k: int, iters: int = 30) -> tuple[torch.Tensor, torch.Tensor]:
    """Cluster a flat float tensor into at most k centroids; returns (sorted codebook [k], indices long)."""
    v = values.detach().flatten().float()
    if v.numel() == 0:
        return torch.zeros(k), torch.zeros(0, dtype=torch.long)
    lo, hi = float(v.min()), float(v.max())
    centroids = torch.linspace(lo, hi, k) if hi > lo else torch.full((k,), lo)
    idx = torch.zeros_like(v, dtype=torch.long)
    for _ in range(iters):
        centroids = torch.sort(centroids).values
        idx = torch.bucketize(v, (centroids[1:] + centroids[:-1]) / 2)
        counts = torch.bincount(idx, minlength=k)
        sums = torch.zeros(k).index_add_(0, idx, v)
        new = torch.where(counts > 0, sums / counts.clamp(min=1), centroids)
        if torch.equal(new, centroids):
            break
        centroids = new
    centroids = torch.sort(centroids).values
    idx = torch.bucketize(v, (centroids[1:] + centroids[:-1]) / 2)
    return centroids, idx


def pack_indices(idx: torch.Tensor, bits: int) -> torch.Tensor:
    """Pack integer codes < 2^bits into a uint8 tensor, little-endian bit order."""
    a = idx.detach().cpu().numpy().astype(np.uint8).reshape(-1)
    bit_planes = (a[:, None] >> np.arange(bits, dtype=np.uint8)) & 1
    return torch.from_numpy(np.packbits(bit_planes.reshape(-1), bitorder="little"))


def unpack_indices(packed: torch.Tensor, bits: int, count: int) -> torch.Tensor:
    """Inverse of `pack_indices`."""
    flat = np.unpackbits(packed.numpy(), bitorder="little")[: count * bits].reshape(count, bits)
    return torch.from_numpy((flat.astype(np.int64) << np.arange(bits)).sum(1))


@dataclass
class SharedTensor:
    """One weight tensor as codebook + packed indices."""

    codebook: torch.Tensor
    packed: torch.Tensor
    shape: tuple[int, ...]
    bits: int

    def decode(self) -> torch.Tensor:
        n = int(np.prod(self.shape)) if self.shape else 1
        return self.codebook[unpack_indices(self.packed, self.bits, n)].reshape(self.shape)


@dataclass
class SharedModel:
    """A state dict whose large weights are k-means shared; the rest (biases, small tensors) stays dense."""

    bits: int
    shared: dict[str, SharedTensor] = field(default_factory=dict)
    dense: dict[str, torch.Tensor] = field(default_factory=dict)

    def state_dict(self) -> dict[str, torch.Tensor]:
        """Float state dict, ready for `model.load_state_dict` on the device."""
        out = {k: v.clone() for k, v in self.dense.items()}
        out.update({k: s.decode() for k, s in self.shared.items()})
        return out

    def to_bytes(self) -> bytes:
        """The artefact a device stores: one `torch.save` of codebooks, packed indices and dense tensors."""
        payload = {
            "format": FORMAT,
            "bits": self.bits,
            "shared": {k: (s.codebook, s.packed, list(s.shape)) for k, s in self.shared.items()},
            "dense": self.dense,
        }
        buf = io.BytesIO()
        torch.save(payload, buf)
        return buf.getvalue()

    @classmethod
    def from_bytes(cls, data: bytes) -> SharedModel:
        payload = torch.load(io.BytesIO(data), weights_only=True)
        if payload.get("format") != FORMAT:
            raise ConfigError(f"not a {FORMAT} artefact (format={payload.get('format')!r})")
        bits = int(payload["bits"])
        shared = {k: SharedTensor(c, p, tuple(s), bits) for k, (c, p, s) in payload["shared"].items()}
        return cls(bits, shared, dict(payload["dense"]))


def share_tensor(w: torch.Tensor, bits: int, *, keep_zero: bool = True, iters: int = 30) -> SharedTensor:
    """k-means a tensor; with `keep_zero` and some exact zeros, 0 is centroid 0, others share 2^bits-1."""
    k = 2 ** _check_bits(bits)
    flat = w.detach().flatten().float()
    zeros = flat == 0
    if keep_zero and bool(zeros.any()) and k > 1:
        book, sub_idx = kmeans_1d(flat[~zeros], k - 1, iters)
        codebook = torch.cat([torch.zeros(1), book])
        idx = torch.zeros_like(flat, dtype=torch.long)
        idx[~zeros] = sub_idx + 1
    else:
        codebook, idx = kmeans_1d(flat, k, iters)
    return SharedTensor(codebook, pack_indices(idx, bits), tuple(w.shape), bits)


def kmeans_share(
    model: nn.Module, bits: int = 4, *, min_numel: int = 256, keep_zero: bool = True, iters: int = 30
) -> SharedModel:
    """Share every floating tensor with >= `min_numel` entries; the model's weights are replaced in place by
    their decoded values (so it can be evaluated or fine-tuned as usual) and the compact form is returned."""
    _check_bits(bits)
    result = SharedModel(bits)
    with torch.no_grad():
        for name, t in model.state_dict().items():
            if t.is_floating_point() and t.numel() >= min_numel and t.numel() > 2**bits:
                st = share_tensor(t, bits, keep_zero=keep_zero, iters=iters)
                result.shared[name] = st
                t.copy_(st.decode())
            else:
                result.dense[name] = t.detach().clone()
    return result
