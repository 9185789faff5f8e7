"""The one place fedcompress touches Flower internals (not part of Flower's public API; checked on flwr 1.42).

If a Flower upgrade moves them, this module is what changes.
"""

from __future__ import annotations

from flwr.app import Message
from flwr.app.message import array as _array_module
from flwr.app.message.arraychunk import ArrayChunk
from flwr.common.serde_utils import error_to_proto, metadata_to_proto
from flwr.proto.message_pb2 import Message as ProtoMessage  # pylint: disable=E0611
from flwr.supercore.constant import HEAD_BODY_DIVIDER, HEAD_VALUE_DIVIDER
from flwr.supercore.inflatable.inflatable_object import (
    InflatableObject,
    _is_recompute_enabled,
    get_all_nested_objects,
    no_object_id_recompute,
)
from flwr.supercore.task_identity import TaskIdentity

__all__ = [
    "HEAD_BODY_DIVIDER",
    "HEAD_VALUE_DIVIDER",
    "ArrayChunk",
    "InflatableObject",
    "TaskIdentity",
    "array_chunk_size",
    "get_all_nested_objects",
    "is_recompute_enabled",
    "message_body",
    "no_object_id_recompute",
    "set_task_identity",
]

is_recompute_enabled = _is_recompute_enabled


def set_task_identity(run_id: int = 1, node_id: int = 0, task_id: int = 1) -> None:
    """Building a Message outside a Flower runtime needs a task identity (tests, in-process grids)."""
    TaskIdentity.run_id, TaskIdentity.node_id, TaskIdentity.task_id = run_id, node_id, task_id


def array_chunk_size() -> int:
    """The size of the pieces Flower cuts an Array's data into (read where `Array` reads it)."""
    return int(_array_module.FLWR_PRIVATE_MAX_ARRAY_CHUNK_SIZE)


def message_body(msg: Message) -> bytes:
    """The body of `msg.deflate()` (metadata without its id, and the error if any), without the header,
    whose child id would hash the whole content."""
    metadata = metadata_to_proto(msg.metadata)
    metadata.message_id = ""
    error = error_to_proto(msg.error) if msg.has_error() else None
    return ProtoMessage(metadata=metadata, content=None, error=error).SerializeToString(deterministic=True)
