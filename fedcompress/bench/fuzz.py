"""Fuzzing the payload decoder with mutations of real payloads of every registered stage.

    nice -n 19 python -m fedcompress.bench.fuzz --cases-per-stage 10000 [--time-limit 5] [--memory-every 10]

For each registered stage, real payloads of pipelines that use it are mutated (truncation, bit flips, spliced
sections, inflated shapes and section lengths, decompression and header bombs, NaN/Inf, inconsistent coder
tables...), and wherever the mutation would otherwise stop at the checksum the CRC32 is recomputed so the
inner parsers are reached. Every case must either raise :class:`PayloadError` (reason <= 300 characters) or
decode to finite float32 tensors with exactly the expected names and shapes. The table counts, per stage and
per mutation class: cases, rejections, accepted payloads (decoded fine: the mutation left them valid),
unexpected exceptions, bad outputs, hangs (over the per-case time limit), and the peak memory one decode
allocated (tracemalloc, on every n-th case and every bomb: tracing slows decoding several times).
Exit status 1 when anything unexpected happened.
"""

from __future__ import annotations

import argparse
import functools
import signal
import struct
import sys
import time
import tracemalloc
import zlib
from collections import Counter, defaultdict
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

import numpy as np
import zstandard

from fedcompress.codecs import STAGES, PayloadError, Pipeline, decode, wire

# Pipelines whose payloads are mutated, by the registered stage they exercise (each spec names it).
SPECS: dict[str, list[str]] = {
    "topk": ["topk(0.1) > uniform(4) > entropy", "topk(0.01) > ef > uniform(4) > entropy", "topk(0.5)"],
    "randk": ["randk(0.05) > zstd", "randk(0.3) > ef > uniform(4, stochastic) > entropy"],
    "threshold": ["threshold(0.01)", "threshold(0.02) > pq(2, 16) > entropy"],
    "ef": ["topk(0.003) > ef > ternary > entropy", "ef(0.5) > sign > entropy"],
    "identity": ["identity", "topk(0.2)"],
    "fp16": ["fp16", "fp16 > entropy"],
    "bf16": ["bf16", "bf16 > zstd"],
    "uniform": [
        "uniform(4)",
        "uniform(8, stochastic)",
        "uniform(4, block=64) > entropy",
        "uniform(4, per_channel)",
        "uniform(1)",
        "uniform(16) > zstd",
    ],
    "qsgd": ["qsgd(4)", "qsgd(8) > entropy"],
    "ternary": ["ternary", "ternary(stochastic) > entropy", "topk(0.1) > ternary"],
    "sign": ["sign", "sign > zstd"],
    "kmeans": ["kmeans(16)", "topk(0.2) > kmeans(8) > entropy"],
    "pq": ["pq(4, 16)", "pq(2, 64) > entropy"],
    "raw": ["uniform(3)", "topk(0.05) > qsgd(2)"],
    "zstd": ["fp16 > zstd", "randk(0.1) > uniform(8) > zstd(9)"],
    "entropy": ["uniform(3) > entropy", "uniform(4) > entropy", "topk(0.05) > uniform(6) > entropy"],
}

SHAPES = {
    "conv.weight": (16, 3, 3, 3),
    "conv.bias": (16,),
    "fc.weight": (40, 64),
    "norm": (7,),
    "odd": (5, 3),
}


def model(seed: int) -> dict[str, np.ndarray]:
    """A small heavy-tailed update (3,062 parameters in five tensors)."""
    rng = np.random.default_rng(seed)
    return {k: (rng.standard_t(3, size=s) * 0.01).astype(np.float32) for k, s in SHAPES.items()}


EXPECTED = {k: (s, "float32") for k, s in SHAPES.items()}


@dataclass
class Parts:
    """A payload taken apart: the header (parsed and raw) and the section bytes."""

    header: wire.Header
    raw_header: bytes
    compressed: bool
    sections: list[bytes]


def split(payload: bytes) -> Parts:
    _, _, flags, header_len, _, _ = wire.PREFIX.unpack(payload[: wire.PREFIX_SIZE])
    body = payload[wire.PREFIX_SIZE : wire.PREFIX_SIZE + header_len]
    raw = wire.zstd_decompress(body[4:], struct.unpack("<I", body[:4])[0], "header") if flags & 1 else body
    header = wire._decode_header(raw)
    sections, pos = [], wire.PREFIX_SIZE + header_len
    for n in header.section_lengths:
        sections.append(payload[pos : pos + n])
        pos += n
    return Parts(header, bytes(raw), bool(flags & 1), sections)


def assemble(
    raw_header: bytes, blob: bytes, compress: bool = False, flags: int | None = None, level: int = 3
) -> bytes:
    """Prefix (right total length, recomputed CRC32) + header (zstd-compressed when asked) + ``blob``."""
    body = raw_header
    if compress:
        body = struct.pack("<I", len(raw_header)) + zstandard.ZstdCompressor(level=level).compress(raw_header)
    rest = body + blob
    fl = (1 if compress else 0) if flags is None else flags
    prefix = wire.PREFIX.pack(
        wire.MAGIC, wire.VERSION, fl, len(body), wire.PREFIX_SIZE + len(rest), zlib.crc32(rest)
    )
    return prefix + rest


def rebuild(parts: Parts, header: wire.Header | None = None, sections: list[bytes] | None = None) -> bytes:
    """Re-pack with a changed header or sections; section lengths follow the sections unless the header
    passed in says otherwise."""
    sections = parts.sections if sections is None else sections
    if header is None:
        header = wire.Header(
            parts.header.spec, parts.header.seed, parts.header.tensors, tuple(len(s) for s in sections)
        )
    return assemble(wire._encode_header(header), b"".join(sections), parts.compressed)


def refresh_crc(payload: bytes | bytearray) -> bytes:
    out = bytearray(payload)
    if len(out) >= wire.PREFIX_SIZE:
        struct.pack_into("<I", out, 18, zlib.crc32(out[wire.PREFIX_SIZE :]))
    return bytes(out)


def fix_total(payload: bytes | bytearray) -> bytes:
    out = bytearray(payload)
    if len(out) >= wire.PREFIX_SIZE:
        struct.pack_into("<Q", out, 10, len(out))
    return refresh_crc(out)


def _flip_bytes(data: bytes, rng: np.random.Generator, flips: int) -> bytes:
    if not data:
        return data
    out = bytearray(data)
    for _ in range(flips):
        pos = int(rng.integers(len(out)))
        out[pos] ^= 1 << int(rng.integers(8))
    return bytes(out)


@functools.lru_cache(maxsize=4)
def header_bomb(entries: int = 2_000_000, spec: str = "identity") -> bytes:
    """A small payload whose compressed header inflates to ~16 MB of ``entries`` tiny tensor entries."""
    alpha = np.frombuffer(b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789_.", np.uint8)
    i = np.arange(entries, dtype=np.int64)
    ent = np.zeros((entries, 8), np.uint8)
    ent[:, 0] = 4
    for col, shift in enumerate((18, 12, 6, 0)):
        ent[:, 2 + col] = alpha[(i >> shift) & 63]
    raw = struct.pack("<H", len(spec)) + spec.encode() + struct.pack("<QI", 0, entries)
    raw += ent.tobytes() + struct.pack("<B3Q", 3, 0, 0, 0)
    return assemble(raw, b"", compress=True, level=9)  # ~430 KB for 2,000,000 entries


@functools.lru_cache(maxsize=4)
def small_header_bomb(raw_len: int = wire.MAX_HEADER_BYTES) -> bytes:
    """A few hundred bytes whose header declares (and inflates to) ``raw_len`` bytes of zeros."""
    frame = zstandard.ZstdCompressor(level=19).compress(b"\0" * raw_len)
    body = struct.pack("<I", raw_len) + frame
    prefix = wire.PREFIX.pack(
        wire.MAGIC, wire.VERSION, 1, len(body), wire.PREFIX_SIZE + len(body), zlib.crc32(body)
    )
    return prefix + body


# ---------------------------------------------------------------- mutation classes
# Each takes (parts, payload, donor parts, rng) and returns a mutated payload.


def pick(rng: np.random.Generator, options: list) -> int:
    return options[int(rng.integers(len(options)))]


Mutation = Callable[[Parts, bytes, Parts, np.random.Generator], bytes]


def m_truncate(parts: Parts, payload: bytes, donor: Parts, rng: np.random.Generator) -> bytes:
    if rng.random() < 0.5:  # one section cut short, the header's lengths and the CRC made consistent
        sections = list(parts.sections)
        i = pick(rng, [j for j, sec in enumerate(sections) if sec])
        sections[i] = sections[i][: int(rng.integers(0, len(sections[i])))]
        return rebuild(parts, sections=sections)
    out = payload[: int(rng.integers(0, len(payload)))]
    return (
        fix_total(out) if rng.random() < 0.6 else out
    )  # the whole payload cut (lengths and CRC fixed or not)


def m_bitflip(parts: Parts, payload: bytes, donor: Parts, rng: np.random.Generator) -> bytes:
    return _flip_bytes(payload, rng, int(rng.integers(1, 4)))  # CRC left alone: must be caught there


def m_bitflip_crc(parts: Parts, payload: bytes, donor: Parts, rng: np.random.Generator) -> bytes:
    if rng.random() < 0.3:  # inside the (uncompressed) header
        raw = _flip_bytes(parts.raw_header, rng, int(rng.integers(1, 3)))
        return assemble(raw, b"".join(parts.sections), parts.compressed)
    i = int(rng.integers(len(parts.sections)))
    sections = list(parts.sections)
    sections[i] = _flip_bytes(sections[i], rng, int(rng.integers(1, 6)))
    return rebuild(parts, sections=sections)


def m_splice(parts: Parts, payload: bytes, donor: Parts, rng: np.random.Generator) -> bytes:
    sections = list(parts.sections)
    i = int(rng.integers(len(sections)))
    choice = rng.random()
    if choice < 0.4:
        sections[i] = donor.sections[int(rng.integers(len(donor.sections)))]
    elif choice < 0.7:
        j = int(rng.integers(len(sections)))
        sections[i], sections[j] = sections[j], sections[i]
    else:  # a piece of one section pasted into another
        src = sections[int(rng.integers(len(sections)))]
        a = int(rng.integers(0, len(src) + 1))
        b = int(rng.integers(a, len(src) + 1))
        at = int(rng.integers(0, len(sections[i]) + 1))
        sections[i] = sections[i][:at] + src[a:b] + sections[i][at:]
    if rng.random() < 0.3:  # or the donor's header (spec, seed, tensors) over our sections
        h = donor.header
        return rebuild(
            parts, wire.Header(h.spec, h.seed, h.tensors, tuple(len(s) for s in sections)), sections
        )
    return rebuild(parts, sections=sections)


def m_shape(parts: Parts, payload: bytes, donor: Parts, rng: np.random.Generator) -> bytes:
    tensors = list(parts.header.tensors)
    i = int(rng.integers(len(tensors)))
    t = tensors[i]
    shape = list(t.shape)
    choice = rng.random()
    huge = [1 << 62, (1 << 64) - 1, 1 << 40, 1 << 31, 10**9]
    if choice < 0.3 and shape:
        shape[int(rng.integers(len(shape)))] = huge[int(rng.integers(len(huge)))]
    elif choice < 0.5 and shape:
        shape[int(rng.integers(len(shape)))] *= int(rng.integers(2, 1000))
    elif choice < 0.6:
        shape = [0, *shape]
    elif choice < 0.7:
        shape = shape + [1] * int(rng.integers(1, 40))
    elif choice < 0.8:
        tensors[i] = wire.TensorInfo(t.name + "x" * int(rng.integers(1, 3000)), tuple(shape), t.dtype)
        shape = None
    elif choice < 0.9:
        tensors.append(
            wire.TensorInfo(f"extra{int(rng.integers(1 << 30))}", (int(rng.integers(1, 1 << 20)),), t.dtype)
        )
        shape = None
    else:
        codes = list(wire.DTYPE_CODES)
        tensors[i] = wire.TensorInfo(t.name, tuple(shape), codes[int(rng.integers(len(codes)))])
        shape = None
    if shape is not None:
        tensors[i] = wire.TensorInfo(t.name, tuple(shape), t.dtype)
    h = parts.header
    try:
        return rebuild(parts, wire.Header(h.spec, h.seed, tuple(tensors), h.section_lengths))
    except (ValueError, struct.error):  # more dimensions than the format allows: write the entry by hand
        return m_header_bytes(parts, payload, donor, rng)


def m_section_lengths(parts: Parts, payload: bytes, donor: Parts, rng: np.random.Generator) -> bytes:
    lengths = list(parts.header.section_lengths)
    blob = b"".join(parts.sections)
    choice = rng.random()
    if choice < 0.4:  # move the boundary: lengths still add up
        i = int(rng.integers(len(lengths) - 1))
        d = int(rng.integers(-8, 9))
        d = max(-lengths[i], min(d, lengths[i + 1]))
        lengths[i] += d
        lengths[i + 1] -= d
    elif choice < 0.7:  # inflate one and pad the blob with junk to match
        i = int(rng.integers(len(lengths)))
        extra = int(rng.integers(1, 1 << int(rng.integers(1, 16))))
        lengths[i] += extra
        pad = bytes(rng.integers(0, 256, extra, dtype=np.uint8)) if rng.random() < 0.5 else b"\0" * extra
        blob = blob + pad
    elif choice < 0.85:  # declared far beyond the payload
        lengths[int(rng.integers(len(lengths)))] = pick(rng, [1 << 62, (1 << 64) - 1, 1 << 33])
    else:  # a different number of sections
        lengths = lengths + [0] * int(rng.integers(1, 14)) if rng.random() < 0.5 else lengths[:-1]
        if len(lengths) < len(parts.sections):
            lengths[-1] += len(parts.sections[-1])
    h = parts.header
    return assemble(
        wire._encode_header(wire.Header(h.spec, h.seed, h.tensors, tuple(lengths))), blob, parts.compressed
    )


def m_header_bytes(parts: Parts, payload: bytes, donor: Parts, rng: np.random.Generator) -> bytes:
    """Raw header edits: counts, lengths and dims overwritten with extreme values; spec swapped."""
    raw = bytearray(parts.raw_header)
    choice = rng.random()
    spec_len = struct.unpack_from("<H", raw, 0)[0]
    if choice < 0.3:  # the tensor count
        struct.pack_into("<I", raw, 2 + spec_len + 8, pick(rng, [0, 1, 6, 1 << 20, (1 << 32) - 1]))
    elif choice < 0.55:  # any 8 aligned bytes: dims, lengths, seed
        pos = int(rng.integers(0, max(1, len(raw) - 8)))
        struct.pack_into("<Q", raw, pos, pick(rng, [0, 1, 1 << 32, 1 << 62, (1 << 64) - 1]))
    elif choice < 0.8:  # another spec, possibly invalid or hostile
        specs = [
            "lzma(9)",
            "topk(0.5) > ef",
            "uniform(17)",
            "kmeans(65536)",
            "pq(64, 4096)",
            "x" * 5000,
            "uniform(4) > " * 300 + "entropy",
            "topk(1e-300)",
            "zstd(22)",
            donor.header.spec,
        ]
        new = specs[int(rng.integers(len(specs)))].encode()
        raw = bytearray(struct.pack("<H", len(new)) + new + bytes(raw[2 + spec_len :]))
    else:
        raw = bytearray(_flip_bytes(bytes(raw), rng, 4))
    if rng.random() < 0.2:
        raw += bytes(rng.integers(0, 256, int(rng.integers(1, 64)), dtype=np.uint8))
    return assemble(bytes(raw), b"".join(parts.sections), parts.compressed)


def m_bomb(parts: Parts, payload: bytes, donor: Parts, rng: np.random.Generator) -> bytes:
    choice = rng.random()
    if choice < 0.15:
        return small_header_bomb(pick(rng, [wire.MAX_HEADER_BYTES, 1 << 20, 4096]))
    if choice < 0.25:
        return header_bomb(pick(rng, [50_000, 200_000]))
    sections = list(parts.sections)
    i = 2 if rng.random() < 0.7 else int(rng.integers(len(sections)))  # mostly the coded values
    size = pick(rng, [1 << 16, 1 << 20, 1 << 24])
    frame = _zero_frame(size)
    if choice < 0.45:
        sections[i] = frame
    elif choice < 0.65:
        sections[i] = bytes([1]) + frame  # entropy coder, zstd mode
    elif choice < 0.85:  # a valid-size frame with bytes after it
        body = sections[i]
        if body[:1] == b"\x01" and _is_frame(body[1:]):
            sections[i] = body + bytes(rng.integers(0, 256, int(rng.integers(1, 9)), dtype=np.uint8))
        else:
            sections[i] = zstandard.ZstdCompressor().compress(body) + b"\0"
    else:  # a frame that hides its size
        sections[i] = _zero_frame(size, False)
    return rebuild(parts, sections=sections)


def _is_frame(data: bytes) -> bool:
    try:
        return zstandard.frame_content_size(data) > 0
    except zstandard.ZstdError:
        return False


@functools.lru_cache(maxsize=8)
def _zero_frame(size: int, content_size: bool = True) -> bytes:
    return zstandard.ZstdCompressor(level=19, write_content_size=content_size).compress(b"\0" * size)


def m_nan_inf(parts: Parts, payload: bytes, donor: Parts, rng: np.random.Generator) -> bytes:
    sections = list(parts.sections)
    bad = [np.nan, np.inf, -np.inf, 3e38, -3e38, 1e-45]
    i = 1 if sections[1] and rng.random() < 0.7 else int(rng.integers(len(sections)))
    data = bytearray(sections[i])
    if len(data) >= 4:
        for _ in range(int(rng.integers(1, 4))):
            pos = int(rng.integers(0, len(data) - 3))
            pos -= pos % 4 if rng.random() < 0.8 else 0
            struct.pack_into("<f", data, pos, bad[int(rng.integers(len(bad)))])
    sections[i] = bytes(data)
    return rebuild(parts, sections=sections)


def m_coder_tables(parts: Parts, payload: bytes, donor: Parts, rng: np.random.Generator) -> bytes:
    """Mode bytes, ANS tables (lo, alphabet, count width, counts), Rice parameters, index modes and counts."""
    sections = list(parts.sections)
    idx, val = bytearray(sections[0]), bytearray(sections[2])
    choice = rng.random()
    if choice < 0.35 and val:
        val[0] = pick(rng, [0, 1, 2, 3, 255])
        if val[0] == 2 and len(val) >= 10 and rng.random() < 0.7:  # ANS head: lo u32, m u32, width u8
            field_ = int(rng.integers(3))
            if field_ == 0:
                struct.pack_into("<I", val, 1, pick(rng, [0, 1, 15, 1 << 16, (1 << 32) - 1]))
            elif field_ == 1:
                struct.pack_into("<I", val, 5, pick(rng, [0, 1, 2, 4096, 4097, (1 << 32) - 1]))
            else:
                val[9] = pick(rng, [0, 1, 2, 3, 4, 8, 255])
    elif choice < 0.55 and len(val) > 10 and val[0] == 2:  # ANS counts
        lo, m, width = struct.unpack_from("<IIB", val, 1)
        if 0 < m <= 4096 and width in (1, 2, 4) and len(val) >= 10 + m * width:
            j = int(rng.integers(m))
            v = pick(rng, [0, 1, (1 << (8 * width)) - 1])
            val[10 + j * width : 10 + (j + 1) * width] = v.to_bytes(width, "little")
    elif choice < 0.85 and len(idx) >= 9:  # index: mode, count, Rice b and unary length
        f = int(rng.integers(4))
        if f == 0:
            idx[0] = pick(rng, [0, 1, 2, 3, 200])
        elif f == 1:
            struct.pack_into("<Q", idx, 1, pick(rng, [0, 1, 3062, 3063, 1 << 40, (1 << 64) - 1]))
        elif len(idx) >= 18 and idx[0] == 2:
            if f == 2:
                idx[9] = pick(rng, [0, 1, 31, 32, 33, 255])
            else:
                struct.pack_into("<Q", idx, 10, pick(rng, [0, 1, 1 << 20, (1 << 64) - 1, len(idx) - 18]))
    else:  # randk count / raw section content replaced with random bytes of the same length
        j = int(rng.integers(3))
        sections[j] = bytes(rng.integers(0, 256, len(sections[j]), dtype=np.uint8))
        return rebuild(parts, sections=sections)
    sections[0], sections[2] = bytes(idx), bytes(val)
    return rebuild(parts, sections=sections)


def m_garbage(parts: Parts, payload: bytes, donor: Parts, rng: np.random.Generator) -> bytes:
    """Random bytes after a valid prefix (CRC and length right) or random sections of random lengths."""
    if rng.random() < 0.5:
        n = int(rng.integers(0, 512))
        return assemble(bytes(rng.integers(0, 256, n, dtype=np.uint8)), b"", bool(rng.random() < 0.3))
    sections = [bytes(rng.integers(0, 256, int(rng.integers(0, 64)), dtype=np.uint8)) for _ in range(3)]
    return rebuild(parts, sections=sections)


MUTATIONS: dict[str, Mutation] = {
    "truncate": m_truncate,
    "bitflip": m_bitflip,
    "bitflip_crc": m_bitflip_crc,
    "splice": m_splice,
    "shape": m_shape,
    "section_len": m_section_lengths,
    "header_bytes": m_header_bytes,
    "bomb": m_bomb,
    "nan_inf": m_nan_inf,
    "coder_tables": m_coder_tables,
    "garbage": m_garbage,
}


# ---------------------------------------------------------------- running cases


class Hang(Exception):
    pass


def _alarm(signum, frame):  # noqa: ANN001
    raise Hang


@dataclass
class Outcome:
    kind: str  # "rejected" | "accepted" | "unexpected" | "bad_output" | "long_reason" | "hang"
    detail: str = ""
    seconds: float = 0.0
    peak: int = 0
    traced: bool = False


def check(
    payload: bytes, expected: dict = EXPECTED, time_limit: float = 0.0, memory: bool = False
) -> Outcome:
    """Decode ``payload`` and classify what happened (see the module docstring)."""
    if time_limit:
        signal.signal(signal.SIGALRM, _alarm)
        signal.setitimer(signal.ITIMER_REAL, time_limit)
    if memory:  # traced from here: the peak is what this one decode allocated at most
        tracemalloc.start()
    t = time.perf_counter()
    try:
        out = decode(payload, expected=expected)
    except PayloadError as exc:
        reason = str(exc)
        long = len(reason) > PayloadError.MAX_REASON or reason.endswith("(truncated)")  # cut, not built short
        kind = "long_reason" if long else "rejected"
        return _done(Outcome(kind, str(exc)[:120]), t, memory, time_limit)
    except Hang:
        return _done(Outcome("hang"), t, memory, 0)
    except Exception as exc:  # noqa: BLE001 - this is what the fuzzer looks for
        return _done(
            Outcome("unexpected", f"{type(exc).__name__}: {str(exc)[:160]}"),
            t,
            memory,
            time_limit,
        )
    res = _done(Outcome("accepted"), t, memory, time_limit)
    problem = _output_problem(out, expected)
    if problem:
        res.kind, res.detail = "bad_output", problem
    return res


def _done(o: Outcome, t: float, memory: bool, time_limit: float) -> Outcome:
    if time_limit:
        signal.setitimer(signal.ITIMER_REAL, 0)
    o.seconds = time.perf_counter() - t
    if memory:
        o.peak = tracemalloc.get_traced_memory()[1]
        o.traced = True
        tracemalloc.stop()
    if time_limit and o.seconds > time_limit and o.kind != "hang":
        o.kind, o.detail = "hang", f"{o.seconds:.1f}s ({o.kind})"
    return o


def _output_problem(out: dict, expected: dict) -> str:
    if list(out) != list(expected) and set(out) != set(expected):
        return f"names {sorted(out)[:5]}"
    for name, (shape, _) in expected.items():
        arr = out[name]
        if not isinstance(arr, np.ndarray) or arr.shape != tuple(shape) or arr.dtype != np.float32:
            return f"{name}: {getattr(arr, 'shape', None)} {getattr(arr, 'dtype', None)}"
        if not np.isfinite(arr).all():
            return f"{name}: not finite"
    return ""


@dataclass
class Corpus:
    """Real payloads per registered stage (two seeds of every spec that names it)."""

    payloads: dict[str, list[tuple[str, bytes, Parts]]] = field(default_factory=dict)

    @classmethod
    def build(cls, seeds: tuple[int, ...] = (1, 2)) -> Corpus:
        missing = sorted(set(STAGES) - set(SPECS))
        if missing:
            raise RuntimeError(f"no fuzz specs for registered stages {missing}")
        corpus = cls()
        for stage, specs in SPECS.items():
            rows = []
            for spec in specs:
                pipe = Pipeline.parse(spec)
                used = {s.name for s in (pipe.sparsifier, pipe.feedback, pipe.quantizer, pipe.coder) if s}
                if stage not in used:
                    raise RuntimeError(f"fuzz spec {spec!r} does not use {stage}")
                state = None
                for seed in seeds:
                    res = pipe.encode(model(seed), state=state, seed=seed)
                    state = res.state
                    rows.append((spec, res.payload, split(res.payload)))
            corpus.payloads[stage] = rows
        return corpus

    def cases(self, stage: str, n: int, seed: int = 0) -> Iterator[tuple[str, str, bytes]]:
        """``n`` (mutation class, spec, mutated payload) for ``stage``, classes in rotation."""
        rng = np.random.default_rng([seed, sum(stage.encode())])
        rows = self.payloads[stage]
        donors = [r for rows_ in self.payloads.values() for r in rows_]
        names = list(MUTATIONS)
        for i in range(n):
            name = names[i % len(names)]
            spec, payload, parts = rows[int(rng.integers(len(rows)))]
            donor = donors[int(rng.integers(len(donors)))][2]
            yield name, spec, MUTATIONS[name](parts, payload, donor, rng)


@dataclass
class Tally:
    cases: int = 0
    kinds: Counter = field(default_factory=Counter)
    traced: int = 0
    peak: int = 0
    slowest: float = 0.0
    examples: list[str] = field(default_factory=list)

    def add(self, o: Outcome, label: str) -> None:
        self.cases += 1
        self.kinds[o.kind] += 1
        self.peak = max(self.peak, o.peak)
        self.traced += o.traced
        self.slowest = max(self.slowest, o.seconds)
        if o.kind not in ("rejected", "accepted") and len(self.examples) < 5:
            self.examples.append(f"{label}: {o.kind}: {o.detail}")

    @property
    def failures(self) -> int:
        return sum(v for k, v in self.kinds.items() if k not in ("rejected", "accepted"))


def run(cases_per_stage: int, time_limit: float, memory_every: int, seed: int = 0, out=sys.stdout) -> dict:
    """``memory_every``: trace memory on every n-th case and every bomb (0: never); tracing slows a decode
    several times, so the long run samples."""
    corpus = Corpus.build()
    by_stage: dict[str, Tally] = defaultdict(Tally)
    by_class: dict[str, Tally] = defaultdict(Tally)
    t0 = time.perf_counter()
    for stage in SPECS:
        for i, (name, spec, payload) in enumerate(corpus.cases(stage, cases_per_stage, seed)):
            memory = memory_every > 0 and (i % memory_every == 0 or name == "bomb")
            o = check(payload, time_limit=time_limit, memory=memory)
            by_stage[stage].add(o, f"{stage}/{name} [{spec}]")
            by_class[name].add(o, f"{stage}/{name} [{spec}]")
        print(
            f"# {stage}: {by_stage[stage].cases} cases, {time.perf_counter() - t0:.0f}s",
            file=sys.stderr,
            flush=True,
        )
    elapsed = time.perf_counter() - t0
    _table("stage", by_stage, out)
    print(file=out)
    _table("mutation", by_class, out)
    total = sum(t.cases for t in by_stage.values())
    failures = sum(t.failures for t in by_stage.values())
    print(
        f"\n{total} cases in {elapsed:.0f}s ({time_limit:g}s limit per case); unexpected exceptions, bad outputs, "
        f"over-long reasons and hangs: {failures}",
        file=out,
    )
    for t in by_stage.values():
        for line in t.examples:
            print("  " + line, file=out)
    return {"cases": total, "failures": failures}


def _table(key: str, tallies: dict[str, Tally], out) -> None:  # noqa: ANN001
    cols = ["cases", "rejected", "accepted", "unexpected", "bad_output", "long_reason", "hang"]
    head = f"{key:<14}" + "".join(f"{c:>12}" for c in cols)
    print(head + f"{'traced':>8}{'peak MiB':>10}{'slowest s':>11}", file=out)
    for name, t in tallies.items():
        row = [t.cases] + [t.kinds.get(c, 0) for c in cols[1:]]
        print(
            f"{name:<14}"
            + "".join(f"{v:>12}" for v in row)
            + f"{t.traced:>8}{t.peak / 2**20:>10.2f}{t.slowest:>11.3f}",
            file=out,
        )


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--cases-per-stage", type=int, default=1000)
    ap.add_argument(
        "--time-limit", type=float, default=5.0, help="seconds per case before it counts as a hang"
    )
    ap.add_argument(
        "--memory-every",
        type=int,
        default=10,
        help="trace memory (tracemalloc) on every n-th case and on every bomb; 0: never",
    )
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args(argv)
    res = run(args.cases_per_stage, args.time_limit, args.memory_every, args.seed)
    return 1 if res["failures"] else 0


if __name__ == "__main__":
    sys.exit(main())
