"""The bytes Flower 1.42 puts on the wire for a message, computed from its structure instead of its content ids.

Flower ships a message as its unique content-addressed objects (message, record dict, records, arrays, 5 MiB
chunks), each deflated to `<type> <child ids> <body length>\\0<body>`. Computing those ids means SHA-256 over
every byte of every model, which was most of fedcompress's server time per round. An id is always 64 hex
characters, so every size follows from the structure: header lengths plus body lengths. What the ids also
decide is which objects are the same (sent once): that is found by comparing content, a short fingerprint
first and the bytes only when fingerprints match. The result equals the sum of `len(obj.deflate())` over
Flower's unique objects exactly (tests/flower/test_wiresize.py checks it against Flower's own `deflate()`).
"""

from __future__ import annotations

import json
from typing import Any

from flwr.app import Array, ArrayRecord, ConfigRecord, Message, MetricRecord, RecordDict

from fedcompress.flower.compat import (
    HEAD_BODY_DIVIDER,
    HEAD_VALUE_DIVIDER,
    array_chunk_size,
    message_body,
)

ID_CHARS = 64  # a SHA-256 hex digest
_ID = "0" * ID_CHARS  # stands in for any id inside a JSON body: same length, nothing to escape
_FIXED = 2 * len(HEAD_VALUE_DIVIDER.encode()) + len(HEAD_BODY_DIVIDER)


class UnknownObject(TypeError):
    """An object type this module does not know how Flower deflates (the caller falls back to hashing)."""


def object_size(type_name: str, children: int, body: int) -> int:
    """Deflated size of one object: its header (type, `children` ids joined by commas, body length) and body."""
    ids = children * (ID_CHARS + 1) - 1 if children else 0
    return len(type_name) + ids + len(str(body)) + _FIXED + body


def wire_size(obj: Message | RecordDict | ArrayRecord | Array) -> int:
    """Sum of the deflated sizes of `obj`'s unique objects, as Flower sends them (see the module doc)."""
    sizer = _Sizer()
    sizer.visit(obj)
    return sizer.total


def wire_sizes(obj: Message | RecordDict, part: ArrayRecord | ConfigRecord) -> tuple[int, int]:
    """(wire size of `obj`, of `part`) in one walk; `part` is inside `obj` (a message and its model)."""
    sizer = _Sizer()
    sizer.visit(part)
    part_size = sizer.total
    sizer.visit(obj)  # what `part` holds is counted already, as Flower sends it once
    return sizer.total, part_size


class _Sizer:
    """Walks an object tree once; `canon` numbers each distinct object (equal content, equal number)."""

    def __init__(self) -> None:
        self.total = 0
        self._buckets: dict[tuple[Any, ...], list[tuple[memoryview | None, int]]] = {}
        self._count = 0

    def canon(self, key: tuple[Any, ...], size: int, content: memoryview | None = None) -> int:
        """The number of the object with this key (and content); a new one adds its `size` to the total."""
        bucket = self._buckets.setdefault(key, [])
        for other, number in bucket:
            if content is None or _same(other, content):  # type: ignore[arg-type]
                return number
        number = self._count
        self._count += 1
        bucket.append((content, number))
        self.total += size
        return number

    def visit(self, obj: Any) -> int:
        if isinstance(obj, Array):
            return self.array(obj)
        if isinstance(obj, (ArrayRecord, RecordDict)):
            return self.mapping(obj)
        if isinstance(obj, (ConfigRecord, MetricRecord)):
            content = obj.deflate()
            return self.canon((type(obj).__name__, content), len(content))
        if isinstance(obj, Message):
            kids = [self.visit(obj.content)] if obj.has_content() else []
            body = message_body(obj)
            return self.canon(("Message", body, *kids), object_size("Message", len(kids), len(body)))
        raise UnknownObject(type(obj).__qualname__)

    def mapping(self, obj: ArrayRecord | RecordDict) -> int:
        """A record (or record dict): a JSON body of name -> child id, its unique children's ids in the head."""
        names = list(obj.keys())
        kids = [self.visit(v) for v in obj.values()]
        body = len(json.dumps(dict.fromkeys(names, _ID)).encode())
        size = object_size(type(obj).__qualname__, len(dict.fromkeys(kids)), body)
        return self.canon((type(obj).__qualname__, tuple(names), tuple(kids)), size)

    def array(self, a: Array) -> int:
        """An Array: its data in chunks (children), and a JSON body with dtype, shape, stype and chunk indices."""
        view = memoryview(a.data).cast("B")
        step = array_chunk_size()
        chunks = []
        for start in range(0, len(view), step):
            part = view[start : start + step]
            chunks.append(self.canon(("ArrayChunk", len(part), _fingerprint(part)),
                                     object_size("ArrayChunk", 0, len(part)), part))  # fmt: skip
        unique = list(dict.fromkeys(chunks))
        meta = {
            "dtype": a.dtype,
            "shape": a.shape,
            "stype": a.stype,
            "arraychunk_ids": [unique.index(c) for c in chunks],
        }
        body = json.dumps(meta)
        size = object_size("Array", len(unique), len(body.encode()))
        return self.canon(("Array", body, tuple(unique)), size)


def _fingerprint(view: memoryview) -> bytes:
    """A few hundred bytes spread over the chunk: different chunks almost never share one."""
    stride = max(1, len(view) // 256)
    return view[:32].tobytes() + view[::stride].tobytes() + view[-32:].tobytes()


def _same(a: memoryview, b: memoryview) -> bool:
    """Byte equality at memcmp speed (memoryview's own == goes element by element)."""
    if a.obj is b.obj and len(a) == len(b) and len(a) == len(a.obj):
        return True
    whole = (
        len(a) == len(a.obj)
        and len(b) == len(b.obj)
        and isinstance(a.obj, bytes)
        and isinstance(b.obj, bytes)
    )
    return a.obj == b.obj if whole else a.tobytes() == b.tobytes()
