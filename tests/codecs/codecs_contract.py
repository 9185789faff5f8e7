"""``CodecContract``: the behaviour every codec promises. Each codec's test class inherits it and sets
``spec``
plus its declared error; nothing here is specific to one codec."""

from __future__ import annotations

import numpy as np
import pytest

from fedcompress.codecs import PayloadError, Pipeline, decode


def model(seed: int = 0, scale: float = 1.0) -> dict[str, np.ndarray]:
    """A small heavy-tailed update: conv, bias, dense, a 1-D norm and an odd-sized tensor."""
    rng = np.random.default_rng(seed)
    shapes = {
        "conv.weight": (16, 3, 3, 3),
        "conv.bias": (16,),
        "fc.weight": (40, 64),
        "norm": (7,),
        "odd": (5, 3),
    }
    return {k: (rng.standard_t(3, size=s) * scale * 0.01).astype(np.float32) for k, s in shapes.items()}


def flat(tensors: dict[str, np.ndarray]) -> np.ndarray:
    return np.concatenate([t.reshape(-1) for t in tensors.values()])


def bias_ratio(pipe: Pipeline, tensors: dict[str, np.ndarray], seeds: int) -> float:
    """Pooled squared bias of the mean over seeds, over its expectation for an unbiased codec (sum var /
    seeds).

    About 1 for an unbiased codec; a biased codec's bias does not shrink with more seeds, so the ratio grows.
    """
    x = flat(tensors).astype(np.float64)
    outs = np.stack([flat(decode(pipe.encode(tensors, seed=s).payload)) for s in range(seeds)]).astype(
        np.float64
    )
    bias2 = np.sum((outs.mean(0) - x) ** 2)
    noise = np.sum(outs.var(0, ddof=1)) / seeds
    return float(bias2 / noise) if noise > 0 else (0.0 if bias2 == 0 else np.inf)


class CodecContract:
    """Inherit and set ``spec``; ``max_rel_error`` bounds max|error| / max|x| and ``rms_rel_error`` bounds
    rms(error) / rms(x) of one round trip (``None``: not declared). Lossless codecs must be exact."""

    spec: str
    max_rel_error: float | None = None
    rms_rel_error: float | None = None
    unbiased_seeds = 300

    @pytest.fixture
    def pipe(self) -> Pipeline:
        return Pipeline.parse(self.spec)

    @pytest.fixture
    def tensors(self) -> dict[str, np.ndarray]:
        return model()

    def test_spec_is_canonical(self, pipe: Pipeline) -> None:
        again = Pipeline.parse(pipe.spec)
        assert again == pipe and again.spec == pipe.spec
        assert Pipeline.from_toml({"spec": pipe.spec}) == pipe

    def test_round_trip_within_declared_error(self, pipe: Pipeline, tensors) -> None:
        out = decode(pipe.encode(tensors, seed=5).payload)
        assert list(out) == list(tensors)
        for name, x in tensors.items():
            assert out[name].shape == x.shape and out[name].dtype == np.float32
        x, y = flat(tensors), flat(out)
        if pipe.properties.lossless:
            np.testing.assert_array_equal(y, x)
            return
        assert np.isfinite(y).all()
        if self.max_rel_error is not None:
            assert np.abs(y - x).max() <= self.max_rel_error * np.abs(x).max() * (1 + 1e-5)
        if self.rms_rel_error is not None:
            assert np.sqrt(np.mean((y - x) ** 2)) <= self.rms_rel_error * np.sqrt(np.mean(x**2))

    def test_size_accounting(self, pipe: Pipeline, tensors) -> None:
        res = pipe.encode(tensors, seed=1)
        assert res.num_bytes == len(res.payload)
        assert res.metadata_bytes + res.value_bytes + res.index_bytes == res.num_bytes
        assert res.metadata_bytes >= 22  # at least the fixed prefix
        assert res.raw_bytes == 4 * sum(t.size for t in tensors.values())

    def test_deterministic_given_seed(self, pipe: Pipeline, tensors) -> None:
        a, b = pipe.encode(tensors, seed=7).payload, pipe.encode(tensors, seed=7).payload
        assert a == b
        other = pipe.encode(tensors, seed=8)
        if pipe.properties.deterministic:
            np.testing.assert_array_equal(flat(decode(other.payload)), flat(decode(a)))
        else:
            assert not np.array_equal(flat(decode(other.payload)), flat(decode(a)))

    def test_unbiased_when_declared(self, pipe: Pipeline) -> None:
        if not pipe.properties.unbiased or pipe.properties.lossless:
            return  # nothing claimed (lossless codecs are exact, checked by the round trip)
        small = {"w": model(3)["fc.weight"][:8], "b": model(4)["conv.bias"]}
        assert bias_ratio(pipe, small, self.unbiased_seeds) < 2.0

    def test_error_feedback_returns_what_was_dropped(self, pipe: Pipeline, tensors) -> None:
        if not pipe.properties.error_feedback:
            assert pipe.encode(tensors).state is None
            return
        residual = model(9, scale=0.3)
        res = pipe.encode(tensors, residual, seed=2)
        out = decode(res.payload)
        decay = np.float32(pipe.feedback.decay)
        for name, x in tensors.items():
            r = residual[name] if decay == 1 else residual[name] * decay
            np.testing.assert_array_equal(res.state[name], (x + r) - out[name])

    def test_rejects_corruption(self, pipe: Pipeline, tensors) -> None:
        payload = pipe.encode(tensors, seed=3).payload
        expected = {k: (v.shape, "float32") for k, v in tensors.items()}
        decode(payload, expected=expected)
        with pytest.raises(PayloadError, match="truncated"):
            decode(payload[:-1])
        with pytest.raises(PayloadError, match="truncated"):
            decode(payload[:10])
        rng = np.random.default_rng(0)
        for pos in rng.integers(0, len(payload), 16).tolist():
            bad = bytearray(payload)
            bad[pos] ^= 1 << int(rng.integers(8))
            with pytest.raises(PayloadError):
                decode(bytes(bad))
        wrong_shape = dict(expected, **{"fc.weight": ((64, 40), "float32")})
        with pytest.raises(PayloadError, match="shape"):
            decode(payload, expected=wrong_shape)
        with pytest.raises(PayloadError, match="names"):
            decode(payload, expected={k: v for k, v in expected.items() if k != "odd"})
        with pytest.raises(PayloadError, match="dtype"):
            decode(payload, expected=dict(expected, norm=((7,), "float16")))
        with pytest.raises(PayloadError, match="bound"):
            decode(payload, max_output_bytes=100)
