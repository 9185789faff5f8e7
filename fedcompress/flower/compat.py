"""The one place fedcompress touches Flower internals (not part of Flower's public API; checked on flwr 1.42).

If a Flower upgrade moves them, this module is what changes.
"""

from __future__ import annotations

from flwr.app.message.arraychunk import ArrayChunk
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
    "get_all_nested_objects",
    "is_recompute_enabled",
    "no_object_id_recompute",
    "set_task_identity",
]

is_recompute_enabled = _is_recompute_enabled


def set_task_identity(run_id: int = 1, node_id: int = 0, task_id: int = 1) -> None:
    """Building a Message outside a Flower runtime needs a task identity (tests, in-process grids)."""
    TaskIdentity.run_id, TaskIdentity.node_id, TaskIdentity.task_id = run_id, node_id, task_id
