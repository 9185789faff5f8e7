"""Find partitions again after SuperNodes came back under new node ids.

Without SuperNode authentication, Flower 1.42 gives a restarted SuperNode a fresh key pair and so a new node id;
the {partition id: node id} map built once at start (`discover_partitions`) then points at a node that is gone.
Called at the start of a round, `rediscover` asks only the node ids it does not know yet which partition they
hold and moves those partitions to them. With authentication (registered keys) node ids survive restarts and
this is a no-op. Not wired in yet: the strategy would call it in `configure_train` and then rebuild
`partition_of` (and forget what it tracked for the moved partitions: their node holds nothing).
"""

from __future__ import annotations

from flwr.app import ConfigRecord, Message, RecordDict
from flwr.serverapp import Grid

from fedcompress.flower.protocol import PARTITION_ID, QUERY_MESSAGE_TYPE


def rediscover(grid: Grid, partitions: dict[int, int], timeout: float = 60.0) -> dict[int, int]:
    """A new {partition id: node id} map: partitions answered for by a node id we did not know move to it."""
    known = set(partitions.values())
    new_nodes = [n for n in grid.get_node_ids() if n not in known]
    if not new_nodes:
        return dict(partitions)
    query = RecordDict({"config": ConfigRecord({})})  # the capability query the mod answers (`attach`)
    msgs = [Message(content=query, message_type=QUERY_MESSAGE_TYPE, dst_node_id=n) for n in new_nodes]
    moved = dict(partitions)
    for reply in grid.send_and_receive(msgs, timeout=timeout):
        if reply.has_error() or PARTITION_ID not in reply.content.get("config", {}):
            continue
        moved[int(reply.content["config"][PARTITION_ID])] = reply.metadata.src_node_id
    return moved
