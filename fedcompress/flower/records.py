"""Conversions between torch/numpy tensors and Flower records, and the wire size of what Flower sends."""

from __future__ import annotations

import hashlib
from collections import OrderedDict
from collections.abc import Iterator
from contextlib import contextmanager

import numpy as np
import torch
from flwr.app import Array, ArrayRecord, Message, RecordDict
from flwr.app.message.arraychunk import ArrayChunk
from flwr.supercore.constant import HEAD_BODY_DIVIDER, HEAD_VALUE_DIVIDER
from flwr.supercore.inflatable.inflatable_object import (
    InflatableObject,
    _is_recompute_enabled,
    get_all_nested_objects,
    no_object_id_recompute,
)


def state_to_numpy(model: torch.nn.Module) -> OrderedDict[str, np.ndarray]:
    """The model's state as float32 numpy arrays sharing memory with the tensors (no copy)."""
    return OrderedDict((k, v.detach().cpu().numpy()) for k, v in model.state_dict().items())


def numpy_to_record(arrays: dict[str, np.ndarray]) -> ArrayRecord:
    return ArrayRecord(OrderedDict((k, Array(np.ascontiguousarray(v))) for k, v in arrays.items()))


def record_to_numpy(record: ArrayRecord) -> OrderedDict[str, np.ndarray]:
    return OrderedDict((k, a.numpy()) for k, a in record.items())


def load_record(model: torch.nn.Module, record: ArrayRecord) -> None:
    """Copy a record's tensors into the model, checking names and shapes."""
    model.load_state_dict(OrderedDict((k, torch.from_numpy(v)) for k, v in record_to_numpy(record).items()))


def wire_bytes(obj: Message | ArrayRecord | RecordDict) -> int:
    """Bytes Flower puts on the wire for this object: the sum of its content-addressed objects, serialized.

    Flower 1.42 ships a message as a tree of unique objects (message, record dict, records, arrays, 5 MiB
    chunks), each deflated to a header and a body; this is what its transport pushes, so the count is measured,
    not estimated from parameter counts. Object ids are computed once per call (and chunk ids are cached by
    Flower for the send that follows); a chunk's size is its header plus its data, without copying the data.
    """
    with measuring():
        return sum(_serialized_size(o) for o in get_all_nested_objects(obj).values())


@contextmanager
def measuring() -> Iterator[None]:
    """Compute each object's content id at most once inside this block (re-entrant): wrap a loop that measures
    many messages sharing content (a round's downlink) or a message and its payload."""
    if not _is_recompute_enabled():  # already inside: keep the outer cache
        yield
        return
    with no_object_id_recompute():
        yield


def _serialized_size(obj: InflatableObject) -> int:
    if isinstance(obj, ArrayChunk):  # deflate() would copy megabytes only to measure them
        head = f"{type(obj).__qualname__}{HEAD_VALUE_DIVIDER}{HEAD_VALUE_DIVIDER}{len(obj.data)}".encode()
        return len(head) + len(HEAD_BODY_DIVIDER) + len(obj.data)
    return len(obj.deflate())


def arrays_digest(arrays: dict[str, np.ndarray]) -> str:
    """A short content hash of float32 tensors: client and server check they hold the same base model."""
    h = hashlib.sha256()
    for name, a in arrays.items():
        h.update(name.encode())
        h.update(np.ascontiguousarray(a, dtype=np.float32).data)
    return h.hexdigest()[:16]
