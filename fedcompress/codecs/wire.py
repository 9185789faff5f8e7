"""The wire format: a fixed prefix, a binary header, then sections. No pickle, every length checked.

Layout (all integers little-endian)::

    prefix  (22 bytes)  magic b"FCMP" | version u8 | flags u8 | header_len u32 | total_len u64 | crc32 u32
    header  (header_len bytes, zstd-compressed when flags & 1; then it starts with its raw length u32)
            spec: u16 length + UTF-8 | seed u64 | tensor count u32 |
            per tensor: name u16 length + UTF-8 | dtype code u8 | ndim u8 | dims u64 * ndim |
            section count u8 | section lengths u64 * count
    sections (concatenated, lengths as declared)

``total_len`` catches truncation before anything else; the CRC32 covers everything after the prefix, so a
flipped
bit anywhere in the header or sections is caught before the header is parsed.
"""

from __future__ import annotations

import struct
import zlib
from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np
import zstandard

from .errors import PayloadError

MAGIC = b"FCMP"
VERSION = 1
PREFIX = struct.Struct("<4sBBIQI")
PREFIX_SIZE = PREFIX.size  # 22
FLAG_HEADER_ZSTD = 1
MAX_HEADER_BYTES = 16 << 20
MAX_NDIM = 32
MAX_SECTIONS = 16
MAX_SPEC_BYTES = 1024  # canonical specs are a few dozen characters

DTYPE_CODES: dict[str, int] = {
    "float32": 0,
    "float16": 1,
    "float64": 2,
    "bfloat16": 3,
    "int8": 4,
    "int16": 5,
    "int32": 6,
    "int64": 7,
    "uint8": 8,
    "bool": 9,
}
DTYPE_NAMES = {code: name for name, code in DTYPE_CODES.items()}


@dataclass(frozen=True)
class TensorInfo:
    """Name, shape and source dtype of one tensor, as the header carries them."""

    name: str
    shape: tuple[int, ...]
    dtype: str

    @property
    def size(self) -> int:
        n = 1
        for d in self.shape:
            n *= d
        return n


@dataclass(frozen=True)
class Header:
    """Everything the decoder needs besides the section bytes."""

    spec: str
    seed: int
    tensors: tuple[TensorInfo, ...]
    section_lengths: tuple[int, ...]


def _encode_header(header: Header) -> bytes:
    out = bytearray()
    spec = header.spec.encode()
    out += struct.pack("<H", len(spec)) + spec
    out += struct.pack("<QI", header.seed, len(header.tensors))
    for t in header.tensors:
        name = t.name.encode()
        if len(name) > 0xFFFF:
            raise ValueError(f"tensor name too long ({len(name)} bytes): {t.name[:40]!r}...")
        if len(t.shape) > MAX_NDIM:
            raise ValueError(f"tensor {t.name!r} has {len(t.shape)} dimensions (at most {MAX_NDIM})")
        out += struct.pack("<H", len(name)) + name
        out += struct.pack("<BB", DTYPE_CODES[t.dtype], len(t.shape))
        out += struct.pack(f"<{len(t.shape)}Q", *t.shape)
    out += struct.pack("<B", len(header.section_lengths))
    out += struct.pack(f"<{len(header.section_lengths)}Q", *header.section_lengths)
    return bytes(out)


class _Reader:
    """Bounds-checked cursor over header bytes."""

    def __init__(self, data: bytes) -> None:
        self.data = data
        self.pos = 0

    def take(self, n: int, what: str) -> bytes:
        if self.pos + n > len(self.data):
            raise PayloadError(f"header truncated while reading {what}")
        chunk = self.data[self.pos : self.pos + n]
        self.pos += n
        return chunk

    def unpack(self, fmt: str, what: str) -> tuple:
        s = struct.Struct("<" + fmt)
        return s.unpack(self.take(s.size, what))

    def text(self, what: str) -> str:
        (n,) = self.unpack("H", what)
        try:
            return self.take(n, what).decode("utf-8")
        except UnicodeDecodeError:
            raise PayloadError(f"{what} is not valid UTF-8") from None


Expected = Mapping[str, tuple[tuple[int, ...], str]]


def put_varint(out: bytearray, n: int) -> None:
    """Append ``n`` (>= 0) as a LEB128 varint: 7 bits a byte, low bits first."""
    if n < 0:
        raise ValueError(f"varint of a negative number {n}")
    while n >= 0x80:
        out.append((n & 0x7F) | 0x80)
        n >>= 7
    out.append(n)


def short(text: object, limit: int = 60) -> str:
    """``repr`` of a payload-controlled value, cut to ``limit`` characters: reasons stay short at the source."""
    out = repr(text)
    return out if len(out) <= limit else out[: limit - 4] + "...'"


def dtype_name(dtype: object) -> str:
    """The header's name for a model dtype (``"bfloat16"`` or a numpy dtype)."""
    return "bfloat16" if dtype == "bfloat16" else str(np.dtype(dtype))


def header_bound(expected: Expected) -> int:
    """The most bytes a header describing exactly the ``expected`` tensors can take."""
    per_tensor = sum(4 + len(name.encode()) + 8 * len(shape) for name, (shape, _) in expected.items())
    return 2 + MAX_SPEC_BYTES + 12 + per_tensor + 1 + 8 * MAX_SECTIONS


def _decode_header(data: bytes, expected: Expected | None = None) -> Header:
    """Parse the header; with ``expected``, each tensor is checked against the model as it is read, so a
    hostile header costs work in proportion to the model, not to what it declares."""
    r = _Reader(data)
    spec = r.text("pipeline spec")
    if len(spec) > MAX_SPEC_BYTES:
        raise PayloadError(f"pipeline spec of {len(spec)} characters (at most {MAX_SPEC_BYTES})")
    seed, count = r.unpack("QI", "seed and tensor count")
    if 4 * count > len(data):  # every tensor needs at least 4 header bytes
        raise PayloadError(f"header declares {count} tensors but has only {len(data)} bytes")
    if expected is not None and count != len(expected):
        raise PayloadError(
            f"tensor names disagree with the model: payload has {count}, model {len(expected)}"
        )
    tensors = []
    names = set()
    for i in range(count):
        name = r.text(f"name of tensor {i}")
        code, ndim = r.unpack("BB", f"dtype of tensor {short(name)}")
        if code not in DTYPE_NAMES:
            raise PayloadError(f"tensor {short(name)}: unknown dtype code {code}")
        if ndim > MAX_NDIM:
            raise PayloadError(f"tensor {short(name)}: {ndim} dimensions (at most {MAX_NDIM})")
        shape = tuple(int(d) for d in r.unpack(f"{ndim}Q", f"shape of tensor {short(name)}"))
        if name in names:
            raise PayloadError(f"tensor name {short(name)} appears twice")
        names.add(name)
        info = TensorInfo(name, shape, DTYPE_NAMES[code])
        if expected is not None:
            _check_tensor(info, expected)
        tensors.append(info)
    (nsec,) = r.unpack("B", "section count")
    if nsec > MAX_SECTIONS:
        raise PayloadError(f"{nsec} sections (at most {MAX_SECTIONS})")
    lengths = r.unpack(f"{nsec}Q", "section lengths")
    if r.pos != len(data):
        raise PayloadError(f"{len(data) - r.pos} unexpected bytes after the header")
    return Header(spec, int(seed), tuple(tensors), tuple(int(n) for n in lengths))


def _check_tensor(t: TensorInfo, expected: Expected) -> None:
    if t.name not in expected:
        raise PayloadError(f"tensor names disagree with the model: unexpected {short(t.name)}")
    shape, dtype = expected[t.name]
    if tuple(int(d) for d in shape) != t.shape:
        raise PayloadError(
            f"tensor {short(t.name)}: payload shape {short(t.shape)}, model expects {tuple(shape)}"
        )
    want = dtype_name(dtype)
    if want != t.dtype:
        raise PayloadError(f"tensor {short(t.name)}: payload dtype {t.dtype}, model expects {want}")


def pack(header: Header, sections: list[bytes]) -> tuple[bytes, int]:
    """Serialize; returns the payload and the bytes of framing (prefix + header)."""
    raw = _encode_header(header)
    flags = 0
    body = raw
    if len(raw) > 96:
        packed = struct.pack("<I", len(raw)) + zstandard.ZstdCompressor(level=19).compress(raw)
        if len(packed) < len(raw):
            body, flags = packed, FLAG_HEADER_ZSTD
    rest = b"".join([body, *sections])
    crc = zlib.crc32(rest)
    prefix = PREFIX.pack(MAGIC, VERSION, flags, len(body), PREFIX_SIZE + len(rest), crc)
    return prefix + rest, PREFIX_SIZE + len(body)


def unpack(
    payload: bytes | bytearray | memoryview, expected: Expected | None = None
) -> tuple[Header, list[memoryview]]:
    """Check magic, version, length and checksum, then parse the header and slice the sections.

    With ``expected`` (name -> (shape, dtype) of the model) the header, compressed or not, may not exceed
    what that model needs (:func:`header_bound`) and every tensor entry is checked as it is read.
    """
    if not isinstance(payload, bytes | bytearray | memoryview):
        raise PayloadError(f"payload must be bytes, got {type(payload).__name__}")
    view = memoryview(payload).cast("B")
    if len(view) < PREFIX_SIZE:
        raise PayloadError(
            f"truncated payload: {len(view)} bytes, shorter than the {PREFIX_SIZE}-byte prefix"
        )
    magic, version, flags, header_len, total_len, crc = PREFIX.unpack(view[:PREFIX_SIZE])
    if magic != MAGIC:
        raise PayloadError(f"not a fedcompress payload (magic {bytes(magic)!r}, expected {MAGIC!r})")
    if version != VERSION:
        raise PayloadError(f"unknown payload version {version} (this decoder reads version {VERSION})")
    if total_len != len(view):
        kind = "truncated payload" if len(view) < total_len else "trailing bytes after payload"
        raise PayloadError(f"{kind}: {len(view)} bytes, header declares {total_len}")
    if zlib.crc32(view[PREFIX_SIZE:]) != crc:
        raise PayloadError("checksum mismatch: the payload is corrupted")
    if flags & ~FLAG_HEADER_ZSTD:
        raise PayloadError(f"unknown header flags {flags:#x}")
    bound = MAX_HEADER_BYTES if expected is None else min(MAX_HEADER_BYTES, header_bound(expected))
    if header_len > min(bound, total_len - PREFIX_SIZE):
        raise PayloadError(f"header length {header_len} exceeds the payload or the {bound}-byte bound")
    body = bytes(view[PREFIX_SIZE : PREFIX_SIZE + header_len])
    if flags & FLAG_HEADER_ZSTD:
        body = _inflate_header(body, bound)
    header = _decode_header(body, expected)
    start = PREFIX_SIZE + header_len
    if start + sum(header.section_lengths) != total_len:
        raise PayloadError(
            f"section lengths add up to {sum(header.section_lengths)} bytes, payload has {total_len - start}"
        )
    sections = []
    for n in header.section_lengths:
        sections.append(view[start : start + n])
        start += n
    return header, sections


def _inflate_header(body: bytes, bound: int) -> bytes:
    if len(body) < 4:
        raise PayloadError("compressed header truncated")
    (raw_len,) = struct.unpack("<I", body[:4])
    if raw_len > bound:
        raise PayloadError(f"header declares {raw_len} bytes (at most {bound} for this model)")
    return zstd_decompress(body[4:], raw_len, "header")


def zstd_decompress(data: bytes | memoryview, expected: int, what: str) -> bytes:
    """Decompress one zstd frame of exactly ``expected`` bytes and nothing after it.

    The frame's declared size is checked before anything is allocated; streaming decompression then stops
    with an error as soon as a block would exceed it (at most one 128 KiB block past ``expected``), and any
    byte after the frame (a second frame, padding, smuggled data) is rejected.
    """
    try:
        declared = zstandard.frame_content_size(data)
    except zstandard.ZstdError as exc:
        raise PayloadError(f"{what}: not a zstd frame ({str(exc)[:80]})") from exc
    if declared != expected:
        raise PayloadError(f"{what}: zstd frame declares {declared} bytes, expected {expected}")
    dobj = zstandard.ZstdDecompressor().decompressobj(write_size=max(expected, 1))  # one output chunk
    try:
        out = dobj.decompress(data)
    except zstandard.ZstdError as exc:
        raise PayloadError(f"{what}: zstd data is corrupted ({str(exc)[:80]})") from exc
    if not dobj.eof:
        raise PayloadError(f"{what}: zstd frame truncated")
    if dobj.unused_data:
        raise PayloadError(f"{what}: {len(dobj.unused_data)} bytes after the zstd frame")
    if len(out) != expected:
        raise PayloadError(f"{what}: zstd produced {len(out)} bytes, expected {expected}")
    return out


def floats(data: bytes | memoryview, count: int, what: str) -> np.ndarray:
    """``count`` finite float32 values from side-information bytes."""
    if len(data) != 4 * count:
        raise PayloadError(f"{what}: {len(data)} bytes, expected {4 * count}")
    arr = np.frombuffer(data, "<f4").astype(np.float32)
    if not np.isfinite(arr).all():
        raise PayloadError(f"{what}: contains NaN or Inf")
    return arr
