"""Inputs of every kind the codecs accept: numpy arrays, torch tensors on the CPU, torch tensors on CUDA.

The CPU kinds always run; the CUDA kind is skipped, with the reason, where this machine has no CUDA device.
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np
import pytest
import torch

HAS_CUDA = torch.cuda.is_available()
NO_CUDA = f"no CUDA device here (torch {torch.__version__}, CUDA build: {torch.version.cuda})"
KINDS = [
    "numpy",
    "torch-cpu",
    pytest.param("torch-cuda", marks=pytest.mark.skipif(not HAS_CUDA, reason=NO_CUDA)),
]
TORCH_KINDS = KINDS[1:]


def as_kind(tensors: Mapping[str, np.ndarray] | None, kind: str) -> dict | None:
    """Copies of numpy tensors as ``kind`` (the originals stay untouched)."""
    if tensors is None or kind == "numpy":
        return None if tensors is None else {k: np.array(v) for k, v in tensors.items()}
    device = "cuda" if kind == "torch-cuda" else "cpu"
    return {k: torch.from_numpy(np.array(v)).to(device) for k, v in tensors.items()}


def host(tensors: Mapping | None) -> dict[str, np.ndarray] | None:
    """Any tensors back as numpy arrays, checking torch results are float32."""
    if tensors is None:
        return None
    out = {}
    for k, v in tensors.items():
        if isinstance(v, torch.Tensor):
            assert v.dtype == torch.float32
            v = v.cpu().numpy()
        out[k] = v
    return out
