"""Seeded client sampling over partition ids, and the node-id <-> partition-id map it needs.

Flower's simulation engine gives nodes new random ids every run and its strategies sample with the global
`random` module, so a seed alone does not make two runs alike. Sampling partition ids with a generator seeded by
(seed, round) and showing the inner strategy only the sampled nodes does.
"""

from __future__ import annotations

import time
from collections.abc import Iterable
from typing import Any

import numpy as np
from flwr.app import ConfigRecord, Message, RecordDict
from flwr.serverapp import Grid

QUERY_PARTITION = "fedcompress.partition"


def discover_partitions(
    grid: Grid, expected: int, timeout: float = 300.0, declared: dict[int, dict[str, Any]] | None = None
) -> dict[int, int]:
    """Ask every node for its partition id; returns {partition_id: node_id}.

    Waits until `expected` distinct partitions answered (deployment nodes may connect late). If `declared` is
    given, it is filled with what each partition's node declared besides its id (its device profile keys).
    """
    mapping: dict[int, int] = {}
    deadline = time.monotonic() + timeout
    while len(mapping) < expected:
        asked = [n for n in grid.get_node_ids() if n not in mapping.values()]
        if asked:
            query = RecordDict({"config": ConfigRecord({"query": QUERY_PARTITION})})
            msgs = [Message(content=query, message_type="query", dst_node_id=n) for n in asked]
            for reply in grid.send_and_receive(msgs, timeout=60):
                if reply.has_error():
                    continue
                pid = int(reply.content["config"]["partition-id"])
                if pid in mapping and mapping[pid] != reply.metadata.src_node_id:
                    raise RuntimeError(
                        f"two nodes declare partition-id {pid}: set a distinct one per SuperNode"
                    )
                mapping[pid] = reply.metadata.src_node_id
                if declared is not None:
                    declared[pid] = {k: v for k, v in reply.content["config"].items() if k != "partition-id"}
        if len(mapping) >= expected:
            break
        if time.monotonic() > deadline:
            raise TimeoutError(
                f"only {len(mapping)} of {expected} partitions connected within {timeout:.0f} s"
            )
        time.sleep(1.0)
    return mapping


def sample_partitions(seed: int, server_round: int, partitions: list[int], k: int) -> list[int]:
    """k distinct partition ids, a pure function of (seed, round, the set of partitions)."""
    rng = np.random.default_rng([seed, server_round])
    return sorted(rng.choice(sorted(partitions), size=min(k, len(partitions)), replace=False).tolist())


class NodesView:
    """A Grid that shows only some nodes: the inner strategy samples all it sees, i.e. exactly ours."""

    def __init__(self, grid: Grid, node_ids: Iterable[int]) -> None:
        self._grid = grid
        self._node_ids = list(node_ids)

    def get_node_ids(self) -> list[int]:
        return list(self._node_ids)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._grid, name)
