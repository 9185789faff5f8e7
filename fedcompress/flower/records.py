"""Conversions between torch/numpy tensors and Flower records, and the wire size of what Flower sends.

Any state dict travels: float tensors of every width (bf16 included, which Flower's `Array` cannot take from
torch directly), integer and bool buffers (BatchNorm's `num_batches_tracked`), 0-d tensors, each with its
shape and dtype preserved bit for bit.
"""

from __future__ import annotations

import hashlib
from collections import OrderedDict
from collections.abc import Iterator, Mapping
from contextlib import contextmanager

import numpy as np
import torch
from flwr.app import Array, ArrayRecord, ConfigRecord, Message, RecordDict

from fedcompress.flower.compat import (
    HEAD_BODY_DIVIDER,
    HEAD_VALUE_DIVIDER,
    ArrayChunk,
    InflatableObject,
    get_all_nested_objects,
    is_recompute_enabled,
    no_object_id_recompute,
)
from fedcompress.flower.wiresize import UnknownObject, wire_size, wire_sizes

BF16 = "bfloat16"
BF16_STYPE = "fedcompress.bfloat16/1"  # raw little-endian bf16 bits; numpy has no bf16 dtype
Spec = dict[str, tuple[tuple[int, ...], str]]  # tensor name -> (shape, dtype name): what a model holds


def state_to_numpy(model: torch.nn.Module) -> OrderedDict[str, np.ndarray]:
    """The model's state as numpy arrays sharing memory with the tensors (bf16 tensors: float32 copies)."""
    return OrderedDict((k, _tensor_numpy(v)) for k, v in model.state_dict().items())


def state_spec(model: torch.nn.Module) -> Spec:
    """Names, shapes and dtypes of a model's state (bf16 named as such)."""
    return {k: (tuple(v.shape), _torch_dtype_name(v.dtype)) for k, v in model.state_dict().items()}


def state_to_record(model: torch.nn.Module) -> ArrayRecord:
    """The model's state as a record in the model's own dtypes (what a client sends or a server starts from)."""
    return numpy_to_record(state_to_numpy(model), state_spec(model))


def numpy_to_record(arrays: Mapping[str, np.ndarray], spec: Spec | None = None) -> ArrayRecord:
    """A record of the arrays, cast to `spec`'s dtypes when given (floats rounded to the nearest integer for
    integer buffers; bf16 stored as its raw bits). Shapes are kept as they are, 0-d included."""
    out: OrderedDict[str, Array] = OrderedDict()
    for k, v in arrays.items():
        dtype = spec[k][1] if spec is not None and k in spec else None
        out[k] = _bf16_array(v) if dtype == BF16 else Array(_contiguous(cast(v, dtype)))
    return ArrayRecord(out)


def record_to_numpy(record: ArrayRecord) -> OrderedDict[str, np.ndarray]:
    """The record's arrays as numpy (bf16 arrays widened to float32, exactly)."""
    return OrderedDict((k, _bf16_numpy(a) if a.stype == BF16_STYPE else a.numpy()) for k, a in record.items())


def record_spec(record: ArrayRecord) -> Spec:
    return {
        k: (tuple(int(d) for d in a.shape), BF16 if a.stype == BF16_STYPE else str(a.dtype))
        for k, a in record.items()
    }


EXACT_SUFFIXES = ("running_mean", "running_var")  # normalization statistics, not learned weights


def is_coded(name: str, shape: tuple[int, ...], dtype: str) -> bool:
    """Whether a tensor goes through the codecs: float weights with at least one dimension.

    Integer and bool buffers, 0-d tensors and BatchNorm's running statistics travel exactly, as plain arrays
    beside the payload: they are few bytes, and a lossy running variance can turn negative and wreck the model.
    """
    if name.endswith(EXACT_SUFFIXES):
        return False
    return len(shape) > 0 and (dtype == BF16 or np.dtype(dtype).kind == "f")


def cast(a: np.ndarray, dtype: str | None) -> np.ndarray:
    """`a` as `dtype` (None or bf16: unchanged; ints and bools from floats: rounded, not truncated)."""
    if dtype is None or dtype == BF16 or a.dtype == np.dtype(dtype):
        return a
    target = np.dtype(dtype)
    if target.kind == "b" and a.dtype.kind == "f":
        return a >= 0.5
    if target.kind in "iu" and a.dtype.kind == "f":
        return np.rint(a).astype(target)
    return a.astype(target)


def load_record(model: torch.nn.Module, record: ArrayRecord) -> None:
    """Copy a record's tensors into the model, checking names and shapes (dtypes cast to the model's)."""
    model.load_state_dict(
        OrderedDict((k, torch.from_numpy(np.asarray(v))) for k, v in record_to_numpy(record).items())
    )


def _contiguous(a: np.ndarray) -> np.ndarray:
    a = np.asarray(a)
    return a if a.flags.c_contiguous else np.ascontiguousarray(a)  # ascontiguousarray makes 0-d arrays 1-d


def _tensor_numpy(t: torch.Tensor) -> np.ndarray:
    t = t.detach().cpu()
    return t.float().numpy() if t.dtype == torch.bfloat16 else t.numpy()


def _torch_dtype_name(dtype: torch.dtype) -> str:
    return BF16 if dtype == torch.bfloat16 else str(torch.empty((), dtype=dtype).numpy().dtype)


def _bf16_array(a: np.ndarray) -> Array:
    bits = (
        torch.from_numpy(np.asarray(a, dtype=np.float32).copy()).to(torch.bfloat16).view(torch.int16).numpy()
    )
    return Array(dtype=BF16, shape=tuple(bits.shape), stype=BF16_STYPE, data=bits.astype("<i2").tobytes())


def _bf16_numpy(a: Array) -> np.ndarray:
    bits = np.frombuffer(a.data, dtype="<u2").astype(np.uint32) << 16
    return bits.view(np.float32).reshape(tuple(a.shape))


def wire_bytes(obj: Message | ArrayRecord | RecordDict) -> int:
    """Bytes Flower puts on the wire for this object: the sum of its content-addressed objects, serialized.

    Flower 1.42 ships a message as a tree of unique objects (message, record dict, records, arrays, 5 MiB
    chunks), each deflated to a header and a body; this is what its transport pushes, so the count is measured,
    not estimated from parameter counts. Computed from the structure (`wiresize.py`: ids have a fixed length),
    not by hashing every byte; an object type it does not know falls back to Flower's own ids and `deflate()`.
    """
    try:
        return wire_size(obj)
    except UnknownObject:
        with measuring():
            return sum(_serialized_size(o) for o in get_all_nested_objects(obj).values())


def wire_bytes_of(msg: Message, part: ArrayRecord | ConfigRecord | None) -> tuple[int, int]:
    """(wire bytes of `msg`, of `part`, a record inside it; 0 for None): the message walked once."""
    if part is None:
        return wire_bytes(msg), 0
    try:
        return wire_sizes(msg, part)
    except UnknownObject:
        return wire_bytes(msg), wire_bytes(part)


@contextmanager
def measuring() -> Iterator[None]:
    """Compute each object's content id at most once inside this block (re-entrant): wrap a loop that measures
    many messages sharing content (a round's downlink) or a message and its payload."""
    if not is_recompute_enabled():  # already inside: keep the outer cache
        yield
        return
    with no_object_id_recompute():
        yield


def _serialized_size(obj: InflatableObject) -> int:
    if isinstance(obj, ArrayChunk):  # deflate() would copy megabytes only to measure them
        head = f"{type(obj).__qualname__}{HEAD_VALUE_DIVIDER}{HEAD_VALUE_DIVIDER}{len(obj.data)}".encode()
        return len(head) + len(HEAD_BODY_DIVIDER) + len(obj.data)
    return len(obj.deflate())


def arrays_digest(arrays: Mapping[str, np.ndarray]) -> str:
    """A short content hash of the tensors as float32: client and server check they hold the same base model."""
    h = hashlib.sha256()
    for name, a in arrays.items():
        h.update(name.encode())
        h.update(np.ascontiguousarray(a, dtype=np.float32).data)
    return h.hexdigest()[:16]
