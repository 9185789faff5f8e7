"""Torch tensors in, the numpy path's bytes out: ties, float32 boundaries, dtypes and large updates.

(Every registered stage is also held to this by ``test_torch_input_gives_the_numpy_bytes`` in the stage
contracts, and the pipeline-level contract tests run on each kind of input.)
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from tensor_kinds import TORCH_KINDS, as_kind, host

from fedcompress.codecs import Pipeline, decode
from fedcompress.codecs.sparsify import topk_positions
from fedcompress.codecs.torchpath import topk_positions as torch_topk_positions


def _reference_topk(x: np.ndarray, k: int) -> np.ndarray:
    """The documented rule, written the slow obvious way: largest |x|, ties to the lowest positions."""
    order = np.argsort(-np.abs(x).astype(np.float64), kind="stable")
    return np.sort(order[:k])


def _same(spec: str, tensors: dict, kind: str, rounds: int = 2) -> None:
    pipe = Pipeline.parse(spec)
    ref = got = None
    for r in range(rounds):
        a = pipe.encode(tensors, ref, seed=r)
        b = pipe.encode(as_kind(tensors, kind), got, seed=r)
        assert a.payload == b.payload, f"{spec}: round {r}"
        if a.state is not None:
            for name, v in host(b.state).items():
                np.testing.assert_array_equal(v, a.state[name])
        ref, got = a.state, b.state


@pytest.mark.parametrize("n", [1000, 300_000])  # numpy: exact selection, and sampled threshold + candidates
@pytest.mark.parametrize("kind", TORCH_KINDS)
def test_topk_matches_numpy_without_ties_and_takes_lowest_positions_with_them(n: int, kind: str) -> None:
    rng = np.random.default_rng(n)
    device = "cuda" if kind == "torch-cuda" else "cpu"
    distinct = rng.permutation(n).astype(np.float32) * rng.choice([-1, 1], n).astype(np.float32)
    for k in (1, 7, n // 10, n - 1):  # every magnitude distinct: the two paths keep the same positions
        got = torch_topk_positions(torch.from_numpy(distinct).to(device), k).cpu().numpy()
        np.testing.assert_array_equal(got, topk_positions(distinct, k))
    _same("topk(0.1) > ef > uniform(4) > entropy", {"w": distinct.reshape(-1, 100) * 1e-6}, kind)
    tied = rng.integers(-4, 5, n).astype(np.float32)  # nine values: the k-th magnitude is heavily tied
    tied[rng.integers(0, n, 50)] = -0.0
    for k in (1, 7, n // 10, n // 3, n - 1):  # the torch rule, documented in torchpath
        got = torch_topk_positions(torch.from_numpy(tied).to(device), k).cpu().numpy()
        np.testing.assert_array_equal(got, _reference_topk(tied, k))


@pytest.mark.parametrize("kind", TORCH_KINDS)
def test_threshold_compares_in_float32_like_numpy(kind: str) -> None:
    t = 0.1000000020  # above float32(0.1) in float64, equal to it once rounded to float32
    x = np.array([np.float32(0.1), -np.float32(0.1), np.nextafter(np.float32(0.1), 0), 0.5], np.float32)
    _same(f"threshold({t!r}) > ef", {"w": x}, kind)
    assert np.flatnonzero(decode(Pipeline.parse(f"threshold({t!r})").encode({"w": x}).payload)["w"]).size == 3


@pytest.mark.parametrize("dtype", [np.float16, np.float64])
@pytest.mark.parametrize("kind", TORCH_KINDS)
def test_other_float_dtypes_and_decay(dtype, kind: str) -> None:
    rng = np.random.default_rng(3)
    tensors = {"w": rng.standard_t(3, (64, 33)).astype(dtype), "b": rng.normal(size=33).astype(dtype)}
    _same("topk(0.1) > ef(0.7) > uniform(4) > entropy", tensors, kind, rounds=3)
    _same("uniform(4, per_channel) > ef(0.5)", tensors, kind, rounds=3)


@pytest.mark.parametrize("kind", TORCH_KINDS)
def test_a_model_sized_update_and_many_groups(kind: str) -> None:
    rng = np.random.default_rng(5)
    tensors = {
        "conv": (rng.standard_t(3, (64, 32, 3, 3)) * 0.01).astype(np.float32),
        "fc": (rng.standard_t(3, (512, 400)) * 0.01).astype(np.float32),  # > 2**17: sampled top-k
        "bias": rng.normal(size=512).astype(np.float32),
    }
    for spec in (
        "topk(0.01) > ef > uniform(4) > entropy",
        "uniform(4, block=64) > ef > entropy",  # thousands of groups: no clipping search, reduceat paths
        "uniform(8, per_channel) > ef",
        "topk(0.05) > ef > uniform(4, block=16)",
    ):
        _same(spec, tensors, kind, rounds=2)


@pytest.mark.parametrize("kind", TORCH_KINDS)
def test_torch_state_with_numpy_update_and_errors(kind: str) -> None:
    rng = np.random.default_rng(1)
    tensors = {"w": rng.normal(size=(20, 10)).astype(np.float32)}
    pipe = Pipeline.parse("topk(0.2) > ef > uniform(4)")
    first = pipe.encode(as_kind(tensors, kind), seed=0)
    mixed = pipe.encode(tensors, first.state, seed=1)  # the update in numpy, the residual on the device
    assert mixed.payload == pipe.encode(tensors, host(first.state), seed=1).payload
    bad = as_kind({"w": np.where(tensors["w"] > 1, np.nan, tensors["w"]).astype(np.float32)}, kind)
    with pytest.raises(ValueError, match="tensor 'w' contains NaN or Inf"):
        pipe.encode(bad)
    with pytest.raises(ValueError, match=r"state\['w'\] has shape"):
        pipe.encode(as_kind(tensors, kind), as_kind({"w": np.zeros(3, np.float32)}, kind))
