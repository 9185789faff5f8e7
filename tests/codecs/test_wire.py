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


# ---------------------------------------------------------------- hardening (issue 11)

EXPECTED = {k: (v.shape, "float32") for k, v in model().items()}


def test_header_bomb_costs_work_in_proportion_to_the_model() -> None:
    import time
    import tracemalloc

    from fedcompress.bench.fuzz import header_bomb

    bomb = header_bomb(2_000_000)  # ~250 KB inflating to 16 MB: 2,000,000 tiny tensor entries
    assert len(bomb) < 500_000
    tracemalloc.start()
    t = time.process_time()
    with pytest.raises(PayloadError) as info:
        decode(bomb, expected=EXPECTED)
    seconds = time.process_time() - t
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    assert seconds < 0.5 and peak < 4 << 20, (seconds, peak)  # was ~11 s CPU and ~0.5 GiB
    assert "bound" in info.value.reason and len(info.value.reason) < 120


def test_small_header_bomb_is_bounded_by_the_model() -> None:
    import tracemalloc

    from fedcompress.bench.fuzz import small_header_bomb

    bomb = small_header_bomb(wire.MAX_HEADER_BYTES)
    assert len(bomb) < 1000
    tracemalloc.start()
    with pytest.raises(PayloadError, match="at most"):
        decode(bomb, expected=EXPECTED)
    assert tracemalloc.get_traced_memory()[1] < 1 << 20  # was 16 MiB whatever the model
    tracemalloc.stop()
    with pytest.raises(PayloadError):  # without a model the fixed 16 MiB cap still holds
        decode(small_header_bomb(wire.MAX_HEADER_BYTES + 1))


def test_header_entries_are_checked_as_they_are_read() -> None:
    from fedcompress.bench.fuzz import assemble

    infos = [TensorInfo(f"t{i}", (1,), "float32") for i in range(20_000)]
    raw = wire._encode_header(Header("identity", 0, tuple(infos), (0, 0, 4 * len(infos))))
    payload = assemble(raw, b"\0" * (4 * len(infos)), compress=True)
    few = {f"t{i}": ((1,), "float32") for i in range(20_000)}
    assert len(decode(payload, expected=few)) == 20_000
    few["t7"] = ((2,), "float32")
    with pytest.raises(PayloadError, match="'t7': payload shape"):
        decode(payload, expected=few)
    with pytest.raises(PayloadError, match="header length"):  # far above what 5 tensors need
        decode(payload, expected=EXPECTED)
    six = craft("identity", infos[:6], [b"", b"", b"\0" * 24])
    with pytest.raises(PayloadError, match="payload has 6, model 5") as info:
        decode(six, expected=EXPECTED)
    assert len(info.value.reason) < 120


def test_reasons_are_short_at_the_source() -> None:
    long_name = "n" * 60_000
    payload = craft("identity", [TensorInfo(long_name, (1,), "float32")], [b"", b"", b"\0" * 4])
    for expected in ({"w": ((1,), "float32")}, {long_name: ((2,), "float32")}):
        with pytest.raises(PayloadError) as info:
            decode(payload, expected=expected)
        assert len(str(info.value)) < 200 and not str(info.value).endswith("(truncated)")
    spec = "uniform(4) > " * 70 + "entropy"
    with pytest.raises(PayloadError) as info:
        decode(craft(spec, [TensorInfo("w", (1,), "float32")], [b"", b"", b"\0" * 4]))
    assert len(str(info.value)) < 300 and not str(info.value).endswith("(truncated)")
    with pytest.raises(PayloadError, match="at most 1024"):
        decode(craft("x" * 2000, [TensorInfo("w", (1,), "float32")], [b"", b"", b"\0" * 4]))


def test_rice_unary_stream_is_bounded_before_unpacking() -> None:
    from fedcompress.codecs import indices

    n, k = 1000, 2
    unary = b"\0" * 200_000 + b"\x03"  # far more quotient bits than 1000 positions can need
    data = struct.pack("<BQ", indices.MODE_RICE, k) + struct.pack("<BQ", 0, len(unary)) + unary
    with pytest.raises(PayloadError, match="unary stream of 200001 bytes, at most"):
        indices.decode(data, n)
    good = indices.encode(np.array([5, 999], np.int64), n)
    np.testing.assert_array_equal(indices.decode(good.data, n), [5, 999])


def test_bytes_after_a_zstd_frame_are_rejected() -> None:
    from fedcompress.bench.fuzz import assemble, split

    tensors = {"w": np.zeros(5000, np.float32)}  # constant symbols: entropy picks zstd
    for spec in ("fp16 > zstd", "uniform(4) > entropy"):
        payload = Pipeline.parse(spec).encode(tensors).payload
        parts = split(payload)
        assert parts.sections[2][:1] in (b"\x28", b"\x01")  # a zstd frame (entropy: after its mode byte)
        sections = [*parts.sections[:2], parts.sections[2] + b"\0"]
        header = Header(parts.header.spec, parts.header.seed, parts.header.tensors, tuple(map(len, sections)))
        with pytest.raises(PayloadError, match="1 bytes after the zstd frame"):
            decode(assemble(wire._encode_header(header), b"".join(sections)))
    tensors = {f"layer{i}.weight": np.ones(2, np.float32) for i in range(40)}
    parts = split(Pipeline.parse("identity").encode(tensors).payload)
    assert parts.compressed
    body = struct.pack("<I", len(parts.raw_header)) + zstandard.ZstdCompressor().compress(parts.raw_header)
    blob = b"".join(parts.sections)
    for tail, match in ((b"junk", "4 bytes after the zstd frame"), (b"", None)):
        rest = body + tail + blob
        prefix = wire.PREFIX.pack(
            wire.MAGIC, wire.VERSION, 1, len(body + tail), 22 + len(rest), zlib.crc32(rest)
        )
        if match:
            with pytest.raises(PayloadError, match=match):
                decode(prefix + rest)
        else:
            assert len(decode(prefix + rest)) == 40


def test_out_of_grid_symbols_and_leftover_ans_words_are_rejected() -> None:
    info = [TensorInfo("w", (4,), "float32")]
    scale = np.ones(1, "<f4").tobytes()
    with pytest.raises(PayloadError, match="outside the grid"):  # ternary: 2-bit symbols, 3 levels
        decode(craft("ternary", info, [b"", scale, bitpack.pack(np.array([0, 1, 2, 3], np.uint8), 2)]))
    sym = np.random.default_rng(0).integers(0, 5, 3000).astype(np.uint8)
    from fedcompress.codecs.entropy import MODE_ANS, Entropy, _ans_encode

    table, words = _ans_encode(sym)
    data = bytes([MODE_ANS]) + table + words
    np.testing.assert_array_equal(Entropy().decode(memoryview(data), sym.size, 3), sym)
    with pytest.raises(PayloadError, match="ANS stream"):
        Entropy().decode(memoryview(data[:-4]), sym.size, 3)
