"""The frame (fedcompress/flower/frame.py): exact round trips, and nothing but PayloadError on hostile bytes."""

from __future__ import annotations

import contextlib
import struct
import zlib

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from fedcompress.errors import PayloadError
from fedcompress.flower.frame import Exact, Frame, Metrics, foldable, pack, unpack

GENUINE = Frame(
    payload=bytes(range(200)),
    metadata_bytes=187,
    exact={"bn.num_batches_tracked": Exact("int64", (), np.int64(12).tobytes())},
    metrics=Metrics("metrics", 0, {"num-examples": 214, "train_loss": 0.6931471805599453}),
)


def test_metrics_round_trip_exactly_with_their_types() -> None:
    values = {
        "num-examples": 214, "zero": 0, "min": -(2**63), "max": 2**63 - 1, "loss": 0.1, "neg-zero": -0.0,
        "tiny": 5e-324, "ints": [1, -2, 3], "floats": [0.5, float("inf")], "empty": [], "ключ": 1.5,
    }  # fmt: skip
    got = unpack(pack(Frame(b"p", 3, {}, Metrics("m", 2, values)))).metrics
    assert got is not None and (got.name, got.position) == ("m", 2)
    assert list(got.values) == list(values)
    for k, v in values.items():
        assert type(got.values[k]) is type(v) and repr(got.values[k]) == repr(v)
        if isinstance(v, list):
            assert [type(x) for x in got.values[k]] == [type(x) for x in v]


def test_nan_metric_travels_as_is_for_the_server_to_judge() -> None:
    got = unpack(pack(Frame(b"", 0, {}, Metrics("m", 0, {"x": float("nan")})))).metrics
    assert got is not None and np.isnan(got.values["x"])


@pytest.mark.parametrize("value", [True, 2**63, -(2**63) - 1, "text", [1, 2.0], [True]])
def test_values_a_frame_cannot_carry_exactly_are_not_folded(value: object) -> None:
    assert not foldable({"k": value})
    with pytest.raises(ValueError):
        pack(Frame(b"", 0, {}, Metrics("m", 0, {"k": value})))  # type: ignore[dict-item]


def test_exact_tensors_round_trip_bit_for_bit() -> None:
    tensors = {
        "step": np.array(7, np.int64),
        "mask": np.array([[True, False]]),
        "var": np.array([1.5, -0.0, 3e-8], np.float32),
        "half": np.array([65504.0], np.float16),
        "u": np.arange(5, dtype=np.uint8),
    }
    frame = Frame(b"x", 0, {k: Exact(v.dtype.name, v.shape, v.tobytes()) for k, v in tensors.items()})
    got = unpack(pack(frame))
    for k, v in tensors.items():
        out = got.exact[k].numpy()
        assert out.dtype == v.dtype and out.shape == v.shape and out.tobytes() == v.tobytes()


def test_genuine_frame_is_small() -> None:
    """9 bytes of prefix; the rest is the payload, two varints and what the metrics and tensors need."""
    plain = pack(Frame(GENUINE.payload, 187))
    assert len(plain) == 9 + 2 + len(GENUINE.payload) + 2 + 1


def _resealed(body: bytes) -> bytes:
    data = pack(GENUINE)
    return data[:5] + struct.pack("<I", zlib.crc32(body)) + body


@settings(max_examples=300, deadline=None)
@given(
    cuts=st.lists(st.tuples(st.integers(0, 10**6), st.integers(0, 255)), min_size=1, max_size=6),
    trim=st.integers(0, 40),
)
def test_mutated_frames_under_a_valid_checksum_raise_only_payload_errors(cuts, trim) -> None:  # noqa: ANN001
    """Past the checksum (a hostile client recomputes it), every malformed field is a PayloadError."""
    body = bytearray(pack(GENUINE)[9:])
    for pos, value in cuts:
        body[pos % len(body)] = value
    body = body[: len(body) - trim]
    try:
        frame = unpack(_resealed(bytes(body)))
    except PayloadError:
        return
    assert isinstance(frame, Frame)


@settings(max_examples=200, deadline=None)
@given(data=st.binary(max_size=200))
def test_random_bytes_raise_only_payload_errors(data: bytes) -> None:
    for candidate in (data, b"FCR\x02\x01" + struct.pack("<I", zlib.crc32(data)) + data):
        with contextlib.suppress(PayloadError):
            unpack(candidate)
