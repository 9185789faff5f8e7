"""`FedCompress`: the convenient composition of fedcompress's strategy wrappers around any Flower strategy
(FedAvg, FedProx, FedAdam, Krum, DP wrappers...), composed the way Flower's DP wrappers compose, each holding an
inner strategy and adding one concern:

    Measured(SeededSampling(Compression(inner)))

- `SeededSampling` (sampling.py): which partitions train each round, reproducibly; replies in partition order;
- `Compression` (compression.py): downlink deltas, uplink decoding and validation, rejections;
- `Measured` (measurement.py): every message sent or received, of every type, measured into the ledger.

The inner strategy sees what it expects: plain float ArrayRecords holding full model weights, one reply per
client, in a fixed order. Use the wrappers directly to take only some concerns.
"""

from __future__ import annotations

import logging
from collections import OrderedDict
from collections.abc import Callable, Iterable
from typing import Any

import numpy as np
from flwr.app import ArrayRecord, Message, MetricRecord
from flwr.serverapp import Grid
from flwr.serverapp.strategy import Result, Strategy

from fedcompress.errors import RunError
from fedcompress.flower.compression import Compression, _float32
from fedcompress.flower.measurement import Measured, Notes
from fedcompress.flower.protocol import (
    BASE_DIGEST as BASE_DIGEST_KEY,
)
from fedcompress.flower.protocol import (
    BASE_ROUND as BASE_ROUND_KEY,
)
from fedcompress.flower.protocol import (
    IDENTITY,
    METADATA_METRIC,
    PROTOCOL_VERSION,
)
from fedcompress.flower.protocol import (
    SEED as SEED_KEY,
)
from fedcompress.flower.protocol import (
    UPLINK as UPLINK_KEY,
)
from fedcompress.flower.protocol import (
    WIDTH as WIDTH_KEY,
)
from fedcompress.flower.protocol import mix as _mix
from fedcompress.flower.sampling import SeededSampling, discover_partitions
from fedcompress.ledger import Ledger

__all__ = [
    "BASE_DIGEST_KEY", "BASE_ROUND_KEY", "IDENTITY", "METADATA_METRIC", "SEED_KEY", "UPLINK_KEY", "WIDTH_KEY",
    "FedCompress", "_float32", "_mix",
]  # fmt: skip

log = logging.getLogger("fedcompress")

Arrays = OrderedDict[str, np.ndarray]
PLAIN_POLICIES = ("fallback", "refuse")


class FedCompress(Measured):
    """Seeded sampling, compression both ways and byte measurement around `inner` (see the module doc).

    `partitions` maps partition id -> node id; leave it empty (None) to discover the nodes at `start` (nodes
    running the fedcompress mod declare their partition; stock Flower clients get ids in node-id order).
    `plain_clients`: what to do with a node that runs no fedcompress mod: "fallback" (plain fp32 both ways,
    recorded as codec "fp32-fallback") or "refuse" (stop at once naming the node).
    """

    def __init__(
        self,
        inner: Strategy,
        *,
        partitions: dict[int, int] | None = None,
        clients_per_round: int,
        seed: int = 0,
        uplink: str = IDENTITY,
        downlink: str = IDENTITY,
        ledger: Ledger | None = None,
        arrayrecord_key: str = "arrays",
        on_reject: Callable[[int, int, str], None] | None = None,
        shared_initial: Arrays | None = None,
        tier: str = "",
        plain_clients: str = "fallback",
        expected_nodes: int | None = None,
        discovery_timeout: float = 300.0,
        downlink_ring: int = 16,
        max_held_models: int | None = None,
    ) -> None:
        if plain_clients not in PLAIN_POLICIES:
            raise ValueError(f"plain_clients must be one of {PLAIN_POLICIES}, got {plain_clients!r}")
        self.user_inner = inner
        self.partitions: dict[int, int] = dict(partitions or {})
        self._node_pid: dict[int, int] = {}
        self.plain: set[int] = set()
        self.plain_clients = plain_clients
        self.expected_nodes = expected_nodes
        self.discovery_timeout = discovery_timeout
        notes = Notes()
        self.compression = Compression(
            inner, partitions=self.partitions, seed=seed, uplink=uplink, downlink=downlink,
            arrayrecord_key=arrayrecord_key, on_reject=on_reject, shared_initial=shared_initial, tier=tier,
            notes=notes, plain=self.plain, ring=downlink_ring, max_models=max_held_models,
        )  # fmt: skip
        self.sampling = SeededSampling(
            self.compression, partitions=self.partitions, clients_per_round=clients_per_round, seed=seed
        )
        super().__init__(
            self.sampling,
            ledger=ledger,
            notes=notes,
            partition_of=self._partition_of,
            arrayrecord_key=arrayrecord_key,
            tier=tier,
        )
        self.inner = inner  # the user's strategy, as before (the chain starts at self.sampling)
        self.clients_per_round = clients_per_round
        self.seed = seed
        self.tier = tier

    def _partition_of(self, node: int) -> int:
        """Per message: a reverse map rebuilt only when the partitions change (10,000 nodes: no linear scan)."""
        pid = self._node_pid.get(node)
        if pid is None or len(self._node_pid) != len(self.partitions) or self.partitions.get(pid) != node:
            self._node_pid = {n: p for p, n in self.partitions.items()}
            pid = self._node_pid.get(node)
        return -1 if pid is None else pid

    @property
    def next(self) -> Strategy:
        """The chain: Measured (self) -> SeededSampling -> Compression -> the user's strategy."""
        return self.sampling

    def decode_replies(self, server_round: int, replies: Iterable[Message]) -> list[Message]:
        """Decode and validate replies (a caller driving its own aggregation, e.g. device tiers): measured too."""
        replies = list(replies)
        rows = (
            [(self.meter.measure(r, "uplink", server_round), r) for r in replies] if self.grid is None else []
        )
        try:
            return self.compression.decode_replies(server_round, replies)
        finally:
            for t, r in rows:
                self.meter.finish(t, r)

    def mark_applied(self, server_round: int) -> None:
        """The replies `decode_replies` accepted reached the model (see `Compression.mark_applied`)."""
        self.compression.mark_applied(server_round)

    def discover(
        self,
        grid: Grid,
        expected: int | None = None,
        declared: dict[int, dict[str, Any]] | None = None,
        at_round: int = 0,
    ) -> dict[int, int]:
        """Find the nodes and their partitions (queries measured in the ledger at `at_round`: 0, or the round a
        resumed run continues with); applies `plain_clients`."""
        measured = self.wrap(grid)
        self.meter.round = at_round
        found = discover_partitions(
            measured, expected or self.expected_nodes or self.clients_per_round, timeout=self.discovery_timeout,
            declared=declared, plain=self.plain,
        )  # fmt: skip
        self.partitions.clear()
        self.partitions.update(found)
        if self.plain and self.plain_clients == "refuse" and (self.compression.tracks_models):
            nodes = ", ".join(f"node {found[p]} (partition {p})" for p in sorted(self.plain))
            raise RunError(
                f"{nodes}: no fedcompress mod of protocol {PROTOCOL_VERSION} (no capability answer, or another "
                "version: see the log), but the run compresses "
                f"(uplink {self.compression.uplink_spec!r}, downlink {self.compression.downlink_spec!r}): add "
                "`fedcompress.flower.mod.attach(app)` and `compression_mod` to its ClientApp, or allow plain fp32"
            )
        return found

    def start(self, grid: Grid, initial_arrays: ArrayRecord, *args: Any, **kwargs: Any) -> Result:
        if not self.partitions:
            self.discover(grid)
        return super().start(grid, initial_arrays, *args, **kwargs)

    def summary(self) -> None:
        log.info(
            "FedCompress(uplink=%s, downlink=%s, %d per round) around:",
            self.uplink_spec,
            self.downlink_spec,
            self.clients_per_round,
        )
        self.user_inner.summary()

    # state that callers read (backward compatible attribute names)
    @property
    def held(self) -> dict[int, tuple[int, Arrays]]:
        return self.compression.held

    @property
    def received(self) -> dict[int, Arrays]:
        return self.compression.received

    @property
    def no_shared_base(self) -> set[int]:
        return self.compression.no_shared_base

    @property
    def rejections(self) -> dict[int, int]:
        return self.compression.rejections

    @property
    def accepted(self) -> dict[int, int]:
        return self.compression.accepted

    @property
    def train_metrics(self) -> dict[int, MetricRecord | None]:
        return self.compression.train_metrics

    @property
    def uplink_spec(self) -> str:
        return self.compression.uplink_spec

    @property
    def downlink_spec(self) -> str:
        return self.compression.downlink_spec

    @property
    def partition_of(self) -> dict[int, int]:
        return {node: pid for pid, node in self.partitions.items()}
