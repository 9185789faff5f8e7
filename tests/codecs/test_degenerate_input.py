"""Updates that are all zero (a client that did not move, a downlink delta in the first round) must code."""

import numpy as np
import pytest

from fedcompress.codecs import Pipeline, decode

SPECS = [
    "uniform(4) > entropy",
    "topk(0.1) > uniform(4) > entropy",
    "topk(0.01) > ef > ternary > entropy",
    "uniform(8, stochastic) > entropy",
    "qsgd(16) > entropy",
    "sign > entropy",
    "fp16 > zstd",
]


@pytest.mark.parametrize("spec", SPECS)
@pytest.mark.parametrize("value", [0.0, 0.25])
def test_constant_tensors_round_trip(spec: str, value: float) -> None:
    tensors = {"w": np.full((64, 32), value, np.float32), "b": np.full(5, value, np.float32)}
    res = Pipeline.parse(spec).encode(tensors, seed=0)
    out = decode(res.payload, expected={k: (v.shape, "float32") for k, v in tensors.items()})
    assert set(out) == {"w", "b"} and all(np.isfinite(v).all() for v in out.values())
    if value == 0.0:
        assert all(not v.any() for v in out.values())
    assert len(res.payload) < 600
