"""The wire format rejects hostile payloads before allocating: lengths, checksum, version, codec, bounds,
NaN."""

from __future__ import annotations

import struct
import zlib

import numpy as np
import pytest
import zstandard
from codecs_contract import model

from fedcompress.codecs import PayloadError, Pipeline, bitpack, decode, wire
from fedcompress.codecs.wire import Header, TensorInfo


def craft(spec: str, tensors: list[TensorInfo], sections: list[bytes], seed: int = 0) -> bytes:
    payload, _ = wire.pack(Header(spec, seed, tuple(tensors), tuple(len(s) for s in sections)), sections)
    return payload


def refresh_crc(payload: bytearray) -> bytes:
    struct.pack_into("<I", payload, 18, zlib.crc32(payload[wire.PREFIX_SIZE :]))
    return bytes(payload)


def test_layout_of_prefix() -> None:
    payload = Pipeline.parse("uniform(4) > entropy").encode(model()).payload
    assert payload[:4] == b"FCMP" and payload[4] == wire.VERSION
    assert struct.unpack_from("<Q", payload, 10)[0] == len(payload)


def test_bad_magic_version_flags() -> None:
    payload = bytearray(Pipeline.parse("uniform(4)").encode(model()).payload)
    with pytest.raises(PayloadError, match="magic"):
        decode(b"XXXX" + bytes(payload[4:]))
    bad = bytearray(payload)
    bad[4] = 99
    with pytest.raises(PayloadError, match="unknown payload version 99"):
        decode(bytes(bad))
    bad = bytearray(payload)
    bad[5] = 0x80
    with pytest.raises(PayloadError, match="flags"):
        decode(refresh_crc(bad))
    with pytest.raises(PayloadError, match="checksum"):
        decode(bytes(payload[:-1]) + bytes([payload[-1] ^ 0xFF]))
    with pytest.raises(PayloadError, match="trailing"):
        decode(bytes(payload) + b"\0")
    with pytest.raises(PayloadError, match="bytes"):
        decode("not bytes")  # type: ignore[arg-type]


def test_unknown_codec_is_rejected() -> None:
    payload = craft("lzma(9)", [TensorInfo("w", (2,), "float32")], [b"", b"", b"\0" * 8])
    with pytest.raises(PayloadError, match="unknown stage 'lzma'"):
        decode(payload)


def test_huge_declared_shape_is_rejected_before_allocation() -> None:
    payload = craft("identity", [TensorInfo("w", (1 << 40, 1 << 20), "float32")], [b"", b"", b""])
    with pytest.raises(PayloadError, match="bound"):
        decode(payload)
    small = craft("identity", [TensorInfo("w", (1000,), "float32")], [b"", b"", b"\0" * 4000])
    assert decode(small)["w"].shape == (1000,)
    with pytest.raises(PayloadError, match="bound"):
        decode(small, max_output_bytes=3999)


def test_zstd_bomb_is_rejected() -> None:
    bomb = zstandard.ZstdCompressor().compress(b"\0" * 50_000_000)
    assert len(bomb) < 10_000
    payload = craft("zstd", [TensorInfo("w", (10,), "float32")], [b"", b"", bomb])
    with pytest.raises(PayloadError, match="declares 50000000 bytes"):
        decode(payload)
    # A frame that hides its size (streaming) is rejected too.
    stream = zstandard.ZstdCompressor(write_content_size=False).compress(b"\0" * 40)
    with pytest.raises(PayloadError, match="zstd"):
        decode(craft("zstd", [TensorInfo("w", (10,), "float32")], [b"", b"", stream]))


def test_nan_and_inf_are_rejected() -> None:
    values = bitpack.pack(np.array([1.0, np.nan], np.float32).view(np.uint32), 32)
    with pytest.raises(PayloadError, match="NaN"):
        decode(craft("identity", [TensorInfo("w", (2,), "float32")], [b"", b"", values]))
    scales = np.array([np.inf], "<f4").tobytes()
    with pytest.raises(PayloadError, match="NaN or Inf"):
        decode(craft("uniform(8)", [TensorInfo("w", (2,), "float32")], [b"", scales, b"\1\2"]))
    huge = np.array([3e38], "<f4").tobytes()  # finite scale, infinite product
    with pytest.raises(PayloadError, match="NaN or Inf"):
        decode(craft("uniform(8)", [TensorInfo("w", (2,), "float32")], [b"", huge, b"\0\xfe"]))


def test_section_and_header_inconsistencies() -> None:
    info = [TensorInfo("w", (4,), "float32")]
    with pytest.raises(PayloadError, match="packed symbols"):
        decode(craft("uniform(8)", info, [b"", np.ones(1, "<f4").tobytes(), b"\0" * 3]))
    with pytest.raises(PayloadError, match="uniform scales"):
        decode(craft("uniform(8)", info, [b"", b"\0" * 5, b"\0" * 4]))
    with pytest.raises(PayloadError, match="sections"):
        decode(craft("identity", info, [b"", b"\0" * 16]))
    with pytest.raises(PayloadError, match="index section"):
        decode(craft("identity", info, [b"\0", b"", b"\0" * 16]))
    with pytest.raises(PayloadError, match="indices for 4"):
        decode(craft("topk(0.5)", info, [struct.pack("<BQ", 2, 9), b"", b""]))
    with pytest.raises(PayloadError, match="unknown value coding mode"):
        decode(craft("entropy", info, [b"", b"", b"\x07"]))
    with pytest.raises(PayloadError, match="unknown dtype"):
        raw = bytearray(craft("identity", info, [b"", b"", b"\0" * 16]))
        header_at = wire.PREFIX_SIZE + 2 + len("identity") + 12 + 2 + 1
        raw[header_at] = 200
        decode(refresh_crc(raw))


def test_long_headers_are_compressed_and_names_survive() -> None:
    tensors = {f"layer{i}.block.attention.weight": np.full(3, i, np.float32) for i in range(50)}
    res = Pipeline.parse("identity").encode(tensors)
    assert res.payload[5] & wire.FLAG_HEADER_ZSTD
    out = decode(res.payload)
    assert list(out) == list(tensors) and out["layer7.block.attention.weight"][0] == 7
    assert res.metadata_bytes < 50 * 30  # names compressed well below their raw size


def test_encode_rejects_bad_input() -> None:
    pipe = Pipeline.parse("uniform(4)")
    with pytest.raises(ValueError, match="NaN or Inf"):
        pipe.encode({"w": np.array([1, np.inf], np.float32)})
    with pytest.raises(ValueError, match="dtype"):
        pipe.encode({"w": np.array(["a"])})
    with pytest.raises(ValueError, match="seed"):
        pipe.encode({"w": np.ones(3, np.float32)}, seed=-1)
    with pytest.raises(ValueError, match="state"):
        Pipeline.parse("topk(0.5) > ef").encode({"w": np.ones(3, np.float32)}, state={"v": np.ones(3)})


def test_dtypes_and_empty_models_round_trip() -> None:
    tensors = {
        "h": np.arange(6, dtype=np.float16).reshape(2, 3),
        "d": np.linspace(-1, 1, 5),
        "i": np.arange(4),
        "empty": np.zeros((0, 3), np.float32),
    }
    out = decode(
        Pipeline.parse("entropy").encode(tensors).payload,
        expected={
            "h": ((2, 3), "float16"),
            "d": ((5,), "float64"),
            "i": ((4,), "int64"),
            "empty": ((0, 3), "float32"),
        },
    )
    assert out["h"].dtype == np.float32 and np.array_equal(out["h"], tensors["h"].astype(np.float32))
    assert out["empty"].shape == (0, 3)
    for spec in ("topk(0.1) > ef > uniform(4) > entropy", "uniform(4, stochastic)", "kmeans(4)", "pq(2, 4)"):
        assert decode(Pipeline.parse(spec).encode({}).payload) == {}
        assert decode(Pipeline.parse(spec).encode({"e": np.zeros(0, np.float32)}).payload)["e"].size == 0
