"""Contract test bases, one per stage kind: every registered stage has a test class that inherits the base of
its kind (``test_stage_contracts.py``; a meta-test fails when one is missing).

Each class sets ``stage`` (the registry name) and ``example`` (a spec of that stage alone); the bases check
what the kind promises as its declared :class:`Properties` say: round trips and error bounds, byte
accounting, determinism given a seed, and rejection of corrupt input with :class:`PayloadError` only.
"""

from __future__ import annotations

import numpy as np
import pytest
from codecs_contract import bias_ratio, flat, model
from tensor_kinds import KINDS, TORCH_KINDS, as_kind, host

from fedcompress.codecs import STAGES, PayloadError, Pipeline, decode
from fedcompress.codecs.contract import Coder, Quantizer, Sparsifier, Stage, Stateful
from fedcompress.codecs.layout import Layout
from fedcompress.codecs.pipeline import make_stage
from fedcompress.codecs.spec import parse_stage


def _flip(data: bytes, rng: np.random.Generator) -> bytes:
    bad = bytearray(data)
    pos = int(rng.integers(len(bad)))
    bad[pos] ^= 1 << int(rng.integers(8))
    return bytes(bad)


class StageContract:
    """What every stage promises: it is registered under its name with its kind, its spec is canonical, and
    bad arguments fail naming the stage and the argument."""

    stage: str
    example: str
    base: type[Stage] = Stage
    #: (spec text, argument named in the error) pairs that must be rejected
    bad_args: tuple[tuple[str, str], ...] = ()

    def alone(self) -> str:
        """A spec of this stage alone."""
        return self.example

    @pytest.fixture
    def st(self) -> Stage:
        return make_stage(parse_stage(self.alone()))

    def test_registered_with_its_kind(self, st: Stage) -> None:
        assert type(st) is STAGES[self.stage] and isinstance(st, self.base)
        assert st.name == self.stage and st.usage.startswith(self.stage)

    def test_spec_is_canonical(self, st: Stage) -> None:
        again = make_stage(parse_stage(st.spec))
        assert again == st and again.spec == st.spec and hash(again) == hash(st)
        assert repr(st) == f"{type(st).__name__}({st.spec!r})"
        assert type(st)(**{a.name: getattr(st, a.name) for a in st.args}) == st

    def test_bad_arguments_name_stage_and_argument(self) -> None:
        alone = self.alone()
        extra = alone[:-1] + ", zz=1)" if alone.endswith(")") else alone + "(zz=1)"
        cases = [*self.bad_args, (f"{self.stage}(1, 2, 3, 4, 5)", ""), (extra, "zz")]
        for text, arg in cases:
            with pytest.raises(ValueError) as info:
                make_stage(parse_stage(text))
            msg = str(info.value)
            assert msg.startswith(f"{self.stage}:") and arg in msg and len(msg) < 300, msg

    def byte_specs(self) -> list[str]:
        """Pipelines holding this stage whose bytes must not depend on the input's array type."""
        return [self.alone()]

    @pytest.mark.parametrize("kind", TORCH_KINDS)
    def test_torch_input_gives_the_numpy_bytes(self, kind: str) -> None:
        """Over rounds of error feedback, torch tensors (any device) give numpy's payload and residual."""
        for spec in self.byte_specs():
            pipe = Pipeline.parse(spec)
            ref = got = None
            for r in range(3):
                tensors = model(20 + r, scale=1.0 + r)
                a = pipe.encode(tensors, ref, seed=r)
                b = pipe.encode(as_kind(tensors, kind), got, seed=r)
                assert a.payload == b.payload, f"{spec}: round {r}"
                assert (a.state is None) == (b.state is None)
                if a.state is not None:
                    assert all(v.device.type == kind[6:] for v in b.state.values())  # stays on its device
                    for name, v in host(b.state).items():
                        np.testing.assert_array_equal(v, a.state[name], err_msg=f"{spec}: round {r}")
                ref, got = a.state, b.state


class SparsifierContract(StageContract):
    base = Sparsifier

    def byte_specs(self) -> list[str]:
        return [self.alone(), f"{self.alone()} > ef > uniform(4) > entropy", f"{self.alone()} > ef > sign"]

    @pytest.fixture
    def x(self) -> tuple[np.ndarray, Layout]:
        tensors = model(11)
        return flat(tensors), Layout.of(tensors)

    def test_select_returns_sorted_unique_positions(self, st: Sparsifier, x) -> None:
        v, layout = x
        idx = st.select(v, layout, 3)
        assert idx.dtype == np.int64 and idx.ndim == 1
        assert np.all(np.diff(idx) > 0) and (idx.size == 0 or 0 <= idx[0] <= idx[-1] < v.size)
        assert st.properties.sparse

    def test_index_round_trip_and_accounting(self, st: Sparsifier, x) -> None:
        v, layout = x
        idx = st.select(v, layout, 3)
        enc = st.encode_index(idx, layout, 3)
        assert 0 <= enc.coded <= len(enc.data)
        np.testing.assert_array_equal(st.decode_index(memoryview(enc.data), layout, 3), idx)

    def test_deterministic_given_seed(self, st: Sparsifier, x) -> None:
        v, layout = x
        a, b = st.select(v, layout, 5), st.select(v, layout, 5)
        np.testing.assert_array_equal(a, b)
        other = st.select(v, layout, 6)
        assert np.array_equal(a, other) == st.properties.deterministic

    @pytest.mark.parametrize("kind", KINDS)
    def test_kept_values_travel_exactly(self, x, kind: str) -> None:
        tensors = model(11)
        v = flat(tensors)
        pipe = Pipeline.parse(self.example)
        out = flat(decode(pipe.encode(as_kind(tensors, kind), seed=4).payload))
        kept = np.flatnonzero(out)
        scale = pipe.sparsifier.value_scale(v.size, kept.size)
        np.testing.assert_allclose(out[kept], v[kept] * np.float32(scale), rtol=1e-6)
        if pipe.properties.lossless:
            np.testing.assert_array_equal(out, v)

    def test_rejects_corrupt_index(self, st: Sparsifier, x) -> None:
        v, layout = x
        data = st.encode_index(st.select(v, layout, 3), layout, 3).data
        for bad in (data[:-1], data + b"\0", b"", b"\xff" * len(data)):
            with pytest.raises(PayloadError):
                st.decode_index(memoryview(bad), layout, 3)
        rng = np.random.default_rng(0)
        for _ in range(32):
            try:
                idx = st.decode_index(memoryview(_flip(data, rng)), layout, 3)
            except PayloadError:
                continue
            assert idx.size == 0 or (np.all(np.diff(idx) > 0) and idx[0] >= 0 and idx[-1] < v.size)


class QuantizerContract(StageContract):
    """``max_rel_error``: max|error| / max|x| of one round trip; ``rms_rel_error``: rms(error) / rms(x)."""

    base = Quantizer
    max_rel_error: float | None = None
    rms_rel_error: float | None = None

    def _run(self, q: Quantizer, values: np.ndarray, seed: int, nonzero: bool = False):
        layout = Layout.of({"a": values[:300], "b": values[300:]})
        starts = layout.group_starts(q.grouping, None, values.size)
        sym, side = q.encode(values.copy(), starts, np.random.default_rng(seed), nonzero)
        return sym, side, starts

    @pytest.fixture
    def values(self) -> np.ndarray:
        return flat(model(12))[:1200].copy()

    def test_round_trip_within_declared_error(self, st: Quantizer, values) -> None:
        sym, side, starts = self._run(st, values, 1)
        bits = st.symbol_bits(False)
        assert sym.size == st.symbol_count(values.size) and (sym.size == 0 or int(sym.max()) < 2**bits)
        out = st.decode(sym, side, starts, False)[: values.size]
        assert out.dtype == np.float32 and out.shape == values.shape and np.isfinite(out).all()
        if st.properties.lossless:
            np.testing.assert_array_equal(out, values)
        if self.max_rel_error is not None:
            assert np.abs(out - values).max() <= self.max_rel_error * np.abs(values).max() * (1 + 1e-5)
        if self.rms_rel_error is not None:
            assert np.sqrt(np.mean((out - values) ** 2)) <= self.rms_rel_error * np.sqrt(np.mean(values**2))

    def test_nonzero_mode_keeps_signs(self, st: Quantizer, values) -> None:
        kept = values[np.abs(values) >= np.quantile(np.abs(values), 0.8)]
        sym, side, starts = self._run(st, kept, 2, nonzero=True)
        out = st.decode(sym, side, starts, True)[: kept.size]
        assert np.isfinite(out).all() and out.shape == kept.shape
        if st.name not in ("kmeans", "pq"):  # codebooks may merge across zero; scalar grids may not
            assert np.all(np.sign(out[out != 0]) == np.sign(kept[out != 0]))

    def test_deterministic_given_seed(self, st: Quantizer, values) -> None:
        a = self._run(st, values, 7)
        b = self._run(st, values, 7)
        np.testing.assert_array_equal(a[0], b[0])
        assert a[1] == b[1]
        c = self._run(st, values, 8)
        same = np.array_equal(a[0], c[0]) and a[1] == c[1]
        assert same == st.properties.deterministic

    def byte_specs(self) -> list[str]:
        return [self.alone(), f"{self.alone()} > ef", f"topk(0.1) > ef > {self.alone()} > entropy"]

    @pytest.mark.parametrize("kind", KINDS)
    def test_size_accounting(self, values, kind: str) -> None:
        res = Pipeline.parse(self.example).encode(as_kind({"w": values}, kind), seed=1)
        assert res.metadata_bytes + res.value_bytes + res.index_bytes == res.num_bytes
        assert res.index_bytes == 0 and res.raw_bytes == 4 * values.size

    def test_unbiased_when_declared(self, st: Quantizer) -> None:
        if st.properties.unbiased and not st.properties.lossless:
            small = {"w": model(3)["fc.weight"][:8], "b": model(4)["conv.bias"]}
            assert bias_ratio(Pipeline.parse(self.example), small, 300) < 2.0

    def test_rejects_corrupt_side_information(self, st: Quantizer, values) -> None:
        sym, side, starts = self._run(st, values, 1)
        bads = [side + b"\0\0\0\0"]
        if side:
            bads += [side[:-4], side[:-4] + np.array([np.nan], "<f4").tobytes()]
        for bad in bads:
            with pytest.raises(PayloadError):
                st.decode(sym, bad, starts, False)


class CoderContract(StageContract):
    """Lossless coders: exact round trips at every bit width, exact rejection of truncated or padded data."""

    base = Coder

    def byte_specs(self) -> list[str]:
        return [self.alone(), f"topk(0.1) > ef > uniform(4) > {self.alone()}", f"uniform(8) > {self.alone()}"]

    @pytest.mark.parametrize("bits", [1, 2, 3, 4, 8, 12, 16, 32])
    def test_round_trip_is_exact(self, st: Coder, bits: int) -> None:
        assert st.properties.lossless
        rng = np.random.default_rng(bits)
        dtype = np.uint8 if bits <= 8 else np.uint16 if bits <= 16 else np.uint32
        for n in (0, 1, 1000):
            for sym in (
                rng.integers(0, 2**bits, n, dtype=np.uint64).astype(dtype),
                np.minimum(rng.geometric(0.3, n) - 1, 2**bits - 1).astype(dtype),
            ):
                enc = st.encode(sym, bits)
                assert 0 <= enc.coded <= len(enc.data)
                assert enc.data == st.encode(sym, bits).data  # deterministic
                out = st.decode(memoryview(enc.data), n, bits)
                assert out.dtype == dtype
                np.testing.assert_array_equal(out, sym)

    def test_rejects_corrupt_data(self, st: Coder) -> None:
        rng = np.random.default_rng(0)
        sym = np.minimum(rng.geometric(0.3, 3000) - 1, 15).astype(np.uint8)
        data = st.encode(sym, 4).data
        for bad in (data[:-1], data + b"\0", b""):
            with pytest.raises(PayloadError):
                st.decode(memoryview(bad), sym.size, 4)
        for _ in range(32):
            try:
                out = st.decode(memoryview(_flip(data, rng)), sym.size, 4)
            except PayloadError:
                continue
            assert out.shape == sym.shape and (out.size == 0 or int(out.max()) < 16)


class StatefulContract(StageContract):
    """Stateful wrappers: ``example`` is a whole pipeline containing the wrapper; the new state is exactly
    what the decoder did not get, and the state carries the update over rounds."""

    base = Stateful

    def alone(self) -> str:
        return Pipeline.parse(self.example).feedback.spec

    def byte_specs(self) -> list[str]:
        return [self.example, "topk(0.05) > ef > uniform(4) > entropy", "uniform(4, block=32) > ef", "ef"]

    @pytest.mark.parametrize("kind", KINDS)
    def test_new_state_is_what_was_dropped(self, kind: str) -> None:
        pipe = Pipeline.parse(self.example)
        assert pipe.properties.error_feedback
        tensors, residual = model(1), model(2, scale=0.3)
        res = pipe.encode(as_kind(tensors, kind), as_kind(residual, kind), seed=2)
        out = decode(res.payload)
        decay = np.float32(pipe.feedback.decay)
        state = host(res.state)
        for name, x in tensors.items():
            r = residual[name] if decay == 1 else residual[name] * decay
            np.testing.assert_array_equal(state[name], (x + r) - out[name])
            assert state[name].shape == x.shape and state[name].dtype == np.float32

    @pytest.mark.parametrize("kind", KINDS)
    def test_state_carries_the_update_over_rounds(self, kind: str) -> None:
        pipe = Pipeline.parse(self.example)
        tensors = model(3)
        state, total = None, np.zeros(sum(t.size for t in tensors.values()))
        for r in range(5):
            res = pipe.encode(as_kind(tensors, kind), state, seed=r)
            state = res.state
            total += flat(decode(res.payload))
        if pipe.feedback.decay == 1.0:
            np.testing.assert_allclose(total + flat(host(state)), 5 * flat(tensors), rtol=1e-4, atol=1e-5)

    @pytest.mark.parametrize("kind", KINDS)
    def test_deterministic_given_seed(self, kind: str) -> None:
        pipe = Pipeline.parse(self.example)
        a = pipe.encode(as_kind(model(1), kind), as_kind(model(2), kind), seed=9)
        b = pipe.encode(as_kind(model(1), kind), as_kind(model(2), kind), seed=9)
        assert a.payload == b.payload
        for name, v in host(a.state).items():
            np.testing.assert_array_equal(v, host(b.state)[name])

    @pytest.mark.parametrize("kind", KINDS)
    def test_rejects_bad_state(self, kind: str) -> None:
        pipe = Pipeline.parse(self.example)
        tensors = as_kind(model(1), kind)
        with pytest.raises(ValueError, match="state names"):
            pipe.encode(tensors, as_kind({"other": np.zeros(3, np.float32)}, kind))
        bad = as_kind(dict(model(2), norm=np.full(7, np.nan, np.float32)), kind)
        with pytest.raises(ValueError, match="NaN"):
            pipe.encode(tensors, bad)
        assert pipe.encode(tensors, None).state is not None  # first round: no residual yet
