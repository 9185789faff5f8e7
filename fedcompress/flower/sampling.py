"""Who takes part: discovering nodes and their partition ids, and seeded sampling as a strategy wrapper.

Flower's simulation engine gives nodes new random ids every run and its strategies sample with the global
`random` module, so a seed alone does not make two runs alike. Sampling partition ids with a generator seeded by
(seed, round) and showing the inner strategy only the sampled nodes does.
"""

from __future__ import annotations

import itertools
import logging
import time
from collections.abc import Iterable
from typing import Any

import numpy as np
from flwr.app import ArrayRecord, ConfigRecord, Message, MetricRecord, RecordDict
from flwr.serverapp import Grid
from flwr.serverapp.strategy import Strategy

from fedcompress.errors import RunError
from fedcompress.flower.protocol import (
    NUM_PARTITIONS,
    PARTITION_ID,
    PROTOCOL,
    PROTOCOL_VERSION,
    QUERY,
    QUERY_MESSAGE_TYPE,
    QUERY_PARTITION,
)

log = logging.getLogger("fedcompress")


def discover_partitions(
    grid: Grid,
    expected: int,
    timeout: float = 300.0,
    declared: dict[int, dict[str, Any]] | None = None,
    plain: set[int] | None = None,
    settle: float = 5.0,
) -> dict[int, int]:
    """Ask every node for its capabilities and partition id; returns {partition_id: node_id}.

    Nodes running the fedcompress mod answer with their protocol version and the partition id (and the
    federation's size, `num-partitions`, in simulation) from their node config. A node that cannot answer
    (a stock Flower ClientApp) is a plain node: its partition id is assigned in node-id order among the free
    ids, and its id is added to `plain`. Waits until `num-partitions` (declared by the nodes, else `expected`)
    nodes answered (deployment nodes connect late); once plain nodes are present and no new node has come for
    `settle` seconds, goes on with those there. `declared` is filled with what each partition's node declared
    besides its id (its device profile keys).
    """
    answers: dict[int, dict[str, Any]] = {}  # node -> its answer
    stock: dict[int, str] = {}  # node -> why it is plain
    deadline = time.monotonic() + timeout
    last_change = time.monotonic()
    while True:
        asked = [n for n in grid.get_node_ids() if n not in answers and n not in stock]
        if asked:
            last_change = time.monotonic()
            query = RecordDict({"config": ConfigRecord({QUERY: QUERY_PARTITION})})
            msgs = [Message(content=query, message_type=QUERY_MESSAGE_TYPE, dst_node_id=n) for n in asked]
            for reply in grid.send_and_receive(msgs, timeout=60):
                node = reply.metadata.src_node_id
                config = None if reply.has_error() else reply.content.get("config")
                if config is None or PROTOCOL not in config:
                    stock[node] = reply.error.reason if reply.has_error() else "no capability answer"
                else:
                    answers[node] = dict(config)
        totals = [int(a[NUM_PARTITIONS]) for a in answers.values() if NUM_PARTITIONS in a]
        target = max(totals) if totals else expected
        if len(answers) + len(stock) >= target:
            break
        if stock and time.monotonic() - last_change > settle:
            log.warning(
                "going on with %d nodes (%d without fedcompress); %d expected",
                len(answers) + len(stock),
                len(stock),
                target,
            )
            break
        if time.monotonic() > deadline:
            raise RunError(
                f"only {len(answers) + len(stock)} of {target} partitions connected within {timeout:.0f} s"
            )
        time.sleep(1.0)
    mapping = _assign(answers, stock)
    for pid, node in mapping.items():
        version = answers.get(node, {}).get(PROTOCOL, PROTOCOL_VERSION)
        if version != PROTOCOL_VERSION:  # its frames would not read here, nor ours there: plain both ways
            log.warning(
                "node %d (partition %d) speaks fedcompress protocol %s, this server %d: plain fp32 both ways",
                node, pid, version, PROTOCOL_VERSION,
            )  # fmt: skip
            if plain is not None:
                plain.add(pid)
        elif node in stock:
            log.warning(
                "node %d (partition %d) runs no fedcompress mod (%s): plain fp32 both ways",
                node,
                pid,
                stock[node][:200],
            )
            if plain is not None:
                plain.add(pid)
        elif declared is not None:
            declared[pid] = {
                k: v for k, v in answers[node].items() if k not in (PARTITION_ID, PROTOCOL, NUM_PARTITIONS)
            }
    return mapping


def _assign(answers: dict[int, dict[str, Any]], stock: dict[int, str]) -> dict[int, int]:
    """Declared partition ids as declared; the other nodes get the smallest free ids in node-id order."""
    mapping: dict[int, int] = {}
    for node, a in sorted(answers.items()):
        if PARTITION_ID in a:
            pid = int(a[PARTITION_ID])
            if pid in mapping:
                raise RunError(
                    f"nodes {mapping[pid]} and {node} both declare partition-id {pid}: set a distinct one per SuperNode"
                )
            mapping[pid] = node
    free = (p for p in itertools.count() if p not in mapping)
    for node in sorted(n for n in [*answers, *stock] if n not in mapping.values()):
        mapping[next(free)] = node
    return dict(sorted(mapping.items()))


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


def strategy_chain(strategy: Any) -> Iterable[Any]:
    """The strategy and the ones it wraps (`.inner` for ours, `.strategy` for Flower's DP wrappers)."""
    seen: set[int] = set()
    while strategy is not None and id(strategy) not in seen:
        seen.add(id(strategy))
        yield strategy
        strategy = getattr(strategy, "inner", None) or getattr(strategy, "strategy", None)


class SeededSampling(Strategy):
    """Samples `clients_per_round` partitions per round with a seeded generator and shows the inner strategy
    only their nodes; replies reach it in partition order. One concern: who trains, reproducibly.

    The inner strategy's own sampling is set to take every node it is shown (Flower's defaults would sample a
    fraction or wait for more nodes than a round's view holds and hang); what was changed is logged once.
    """

    def __init__(
        self, inner: Strategy, *, partitions: dict[int, int], clients_per_round: int, seed: int = 0
    ) -> None:
        if clients_per_round < 1:
            raise ValueError(f"clients_per_round must be >= 1, got {clients_per_round}")
        self.inner = inner
        self.partitions = partitions  # shared with the other wrappers: discovery may fill it later
        self.clients_per_round = clients_per_round
        self.seed = seed
        self._adapted = False

    @property
    def partition_of(self) -> dict[int, int]:
        return {node: pid for pid, node in self.partitions.items()}

    def configure_train(
        self, server_round: int, arrays: ArrayRecord, config: ConfigRecord, grid: Grid
    ) -> Iterable[Message]:
        self._take_all_shown()
        pids = sample_partitions(self.seed, server_round, list(self.partitions), self.clients_per_round)
        view = NodesView(grid, [self.partitions[p] for p in pids])
        return self.inner.configure_train(server_round, arrays, config, view)  # type: ignore[arg-type]

    def aggregate_train(
        self, server_round: int, replies: Iterable[Message]
    ) -> tuple[ArrayRecord | None, MetricRecord | None]:
        order = self.partition_of
        replies = sorted(replies, key=lambda m: order.get(m.metadata.src_node_id, -1))
        return self.inner.aggregate_train(server_round, replies)

    def configure_evaluate(
        self, server_round: int, arrays: ArrayRecord, config: ConfigRecord, grid: Grid
    ) -> Iterable[Message]:
        self._take_all_shown()
        nodes = list(self.partitions.values()) or list(grid.get_node_ids())
        for s in strategy_chain(self.inner):
            if getattr(s, "min_evaluate_nodes", 0) > len(nodes):
                s.min_evaluate_nodes = len(nodes)
        return self.inner.configure_evaluate(server_round, arrays, config, NodesView(grid, nodes))  # type: ignore[arg-type]

    def aggregate_evaluate(self, server_round: int, replies: Iterable[Message]) -> MetricRecord | None:
        return self.inner.aggregate_evaluate(server_round, replies)

    def summary(self) -> None:
        log.info("SeededSampling(%d per round, seed %d) around:", self.clients_per_round, self.seed)
        self.inner.summary()

    def _take_all_shown(self) -> None:
        if self._adapted:
            return
        self._adapted = True
        wanted = {"fraction_train": 1.0, "min_train_nodes": 1, "min_available_nodes": 1}
        for s in strategy_chain(self.inner):
            changed = {
                k: (getattr(s, k), v) for k, v in wanted.items() if hasattr(s, k) and getattr(s, k) != v
            }
            for k, (_, v) in changed.items():
                setattr(s, k, v)
            if changed:
                log.warning(
                    "fedcompress samples %d clients per round itself: set %s of %s to take every node it is shown (was %s)",
                    self.clients_per_round, {k: v for k, (_, v) in changed.items()}, type(s).__name__,
                    {k: old for k, (old, _) in changed.items()},
                )  # fmt: skip
