"""Byte measurement at the send boundary: every message the strategy sends or receives (train, evaluate, query)
is measured from what Flower serializes and recorded in the ledger.

`Measured` is a strategy wrapper with one concern: in `start` it wraps the Grid, so nothing leaves or arrives
unmeasured. Other wrappers (compression) describe their messages in `Notes` (codec, raw size, rejection), which
the measurement joins in; a train reply is recorded once its round is aggregated, so a rejection is in its row.
When another loop drives the strategy (a caller that sends what `configure_train` returns itself), train
messages are measured at the strategy boundary instead.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Iterable
from dataclasses import dataclass, replace
from typing import Any

from flwr.app import ArrayRecord, ConfigRecord, Message, MetricRecord
from flwr.serverapp import Grid
from flwr.serverapp.strategy import Result, Strategy

from fedcompress.flower.payload import array_data_bytes
from fedcompress.flower.protocol import DEFAULT_RECORD_KEY, IDENTITY, METADATA_METRIC, category
from fedcompress.flower.records import measuring, wire_bytes_of
from fedcompress.ledger import Ledger, Transfer

log = logging.getLogger("fedcompress")


@dataclass(frozen=True)
class Note:
    """What a wrapper knows about one message that its bytes do not tell."""

    partition_id: int
    raw_bytes: int | None = None  # the tensors as fp32; None: count the record's elements
    encoded_bytes: int | None = None  # the codec output; None: the record's array data
    metadata_bytes: int | None = None  # None: as the client reported, else 0
    codec: str = IDENTITY
    rejected: str = ""
    tier: str = ""


class Notes:
    """Notes per message object (by identity), written by compression, read once by measurement."""

    def __init__(self) -> None:
        self._notes: dict[int, tuple[Message, Note]] = {}

    def put(self, msg: Message, note: Note) -> None:
        self._notes[id(msg)] = (msg, note)

    def update(self, msg: Message, **changes: Any) -> None:
        if id(msg) in self._notes:
            self._notes[id(msg)] = (msg, replace(self._notes[id(msg)][1], **changes))
        else:
            self._notes[id(msg)] = (msg, Note(**{"partition_id": -1, **changes}))

    def pop(self, msg: Message) -> Note | None:
        entry = self._notes.pop(id(msg), None)
        return entry[1] if entry is not None and entry[0] is msg else None


class Meter:
    """Turns messages into ledger rows: measured bytes plus what the notes say."""

    def __init__(
        self, ledger: Ledger, notes: Notes, partition_of: Any, key: str = DEFAULT_RECORD_KEY, tier: str = ""
    ) -> None:
        self.ledger = ledger
        self.notes = notes
        self.partition_of = partition_of  # callable node -> partition id (-1 unknown)
        self.key = key
        self.tier = tier
        self.round = 0

    def measure(self, msg: Message, direction: str, server_round: int | None = None) -> Transfer:
        """The row for a message as it is now (call before anything replaces its content)."""
        node = msg.metadata.dst_node_id if direction == "downlink" else msg.metadata.src_node_id
        record = None if msg.has_error() else msg.content.get(self.key)
        record = record if isinstance(record, (ArrayRecord, ConfigRecord)) else None  # arrays or a frame
        metrics = None if msg.has_error() else msg.content.get("metrics")
        reported = _reported(metrics.get(METADATA_METRIC, 0)) if isinstance(metrics, MetricRecord) else 0
        with measuring():
            message_bytes, payload_bytes = wire_bytes_of(msg, record)
            return Transfer(
                round=self.round if server_round is None else server_round,
                partition_id=self.partition_of(node),
                node_id=node,
                direction=direction,  # type: ignore[arg-type]
                message_bytes=message_bytes,
                payload_bytes=payload_bytes,
                raw_bytes=4 * _numel(record) if isinstance(record, ArrayRecord) else 0,
                encoded_bytes=array_data_bytes(record) if record is not None else 0,
                metadata_bytes=reported,
                codec=IDENTITY,
                tier=self.tier,
                message_type=msg.metadata.message_type,
            )

    def finish(self, t: Transfer, msg: Message) -> None:
        """Join the message's note (if any) and record the row."""
        note = self.notes.pop(msg)
        if note is not None:
            t = replace(
                t,
                partition_id=note.partition_id if note.partition_id >= 0 else t.partition_id,
                raw_bytes=t.raw_bytes if note.raw_bytes is None else note.raw_bytes,
                encoded_bytes=t.encoded_bytes if note.encoded_bytes is None else note.encoded_bytes,
                metadata_bytes=t.metadata_bytes if note.metadata_bytes is None else note.metadata_bytes,
                codec=note.codec,
                rejected=note.rejected,
                tier=note.tier or t.tier,
            )
        self.ledger.record(t)


class MeasuredGrid:
    """A Grid that records every message sent and every reply received; train replies wait for `flush`
    (after aggregation, when compression has said whether each was accepted)."""

    def __init__(self, grid: Grid, meter: Meter) -> None:
        self._grid = grid
        self.meter = meter
        self._pending: list[tuple[Transfer, Message]] = []
        self._sent: dict[str, int] = {}

    def send_and_receive(
        self, messages: Iterable[Message], *, timeout: float | None = None
    ) -> Iterable[Message]:
        self.flush()
        messages = list(messages)
        self._record_sent(messages)
        replies = list(self._grid.send_and_receive(messages, timeout=timeout))
        self._record_replies(replies)
        return replies

    def push_messages(self, messages: Iterable[Message]) -> Iterable[str]:
        self.flush()
        messages = list(messages)
        self._record_sent(messages)
        return self._grid.push_messages(messages)

    def pull_messages(self, message_ids: Iterable[str]) -> Iterable[Message]:
        replies = list(self._grid.pull_messages(message_ids))
        self._record_replies(replies)
        return replies

    def flush(self) -> None:
        for t, msg in self._pending:
            self.meter.finish(t, msg)
        self._pending.clear()

    def _record_sent(self, messages: list[Message]) -> None:
        with measuring():  # messages share their model: hash it once
            for msg in messages:
                self.meter.finish(self.meter.measure(msg, "downlink"), msg)

    def _record_replies(self, replies: list[Message]) -> None:
        for reply in replies:
            t = self.meter.measure(reply, "uplink")
            if category(reply.metadata.message_type) == "train":
                self._pending.append((t, reply))
            else:
                self.meter.finish(t, reply)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._grid, name)


class Measured(Strategy):
    """Measures every byte its `start` loop moves, recording each message in `ledger` (see module doc)."""

    def __init__(self, inner: Strategy, *, ledger: Ledger | None = None, notes: Notes | None = None, partition_of: Any = None,
                 arrayrecord_key: str = DEFAULT_RECORD_KEY, tier: str = "") -> None:  # fmt: skip
        self.inner = inner
        self.ledger = ledger or Ledger()
        self.notes = notes or Notes()
        lookup = partition_of or (lambda node: -1)
        self.meter = Meter(self.ledger, self.notes, lookup, arrayrecord_key, tier)
        self.grid: MeasuredGrid | None = None

    @property
    def next(self) -> Strategy:
        """The strategy this one wraps (what its methods delegate to)."""
        return self.inner

    def wrap(self, grid: Grid) -> MeasuredGrid:
        """The Grid to send through (idempotent): e.g. for node discovery before `start`."""
        if isinstance(grid, MeasuredGrid):
            return grid
        self.grid = MeasuredGrid(grid, self.meter)
        return self.grid

    def start(self, grid: Grid, initial_arrays: ArrayRecord, *args: Any, **kwargs: Any) -> Result:
        measured = self.wrap(grid)
        try:
            return super().start(measured, initial_arrays, *args, **kwargs)  # type: ignore[arg-type]
        finally:
            measured.flush()
            self.ledger.flush()

    def configure_train(
        self, server_round: int, arrays: ArrayRecord, config: ConfigRecord, grid: Grid
    ) -> Iterable[Message]:
        self.meter.round = server_round
        messages = list(self.next.configure_train(server_round, arrays, config, grid))
        if not isinstance(grid, MeasuredGrid):  # someone else sends them: measure here
            with measuring():
                for msg in messages:
                    self.meter.finish(self.meter.measure(msg, "downlink", server_round), msg)
        return messages

    def aggregate_train(
        self, server_round: int, replies: Iterable[Message]
    ) -> tuple[ArrayRecord | None, MetricRecord | None]:
        replies = list(replies)
        external = self.grid is None
        rows = [(self.meter.measure(r, "uplink", server_round), r) for r in replies] if external else []
        try:
            return self.next.aggregate_train(server_round, replies)
        finally:
            for t, r in rows:
                self.meter.finish(t, r)
            if self.grid is not None:
                self.grid.flush()

    def configure_evaluate(
        self, server_round: int, arrays: ArrayRecord, config: ConfigRecord, grid: Grid
    ) -> Iterable[Message]:
        self.meter.round = server_round
        return self.next.configure_evaluate(server_round, arrays, config, grid)

    def aggregate_evaluate(self, server_round: int, replies: Iterable[Message]) -> MetricRecord | None:
        return self.next.aggregate_evaluate(server_round, replies)

    def summary(self) -> None:
        log.info("Measured (every message recorded in the ledger) around:")
        self.inner.summary()


def _reported(value: Any) -> int:
    """The client's metadata-bytes metric if it is a sane count (a hostile reply may put anything there)."""
    if isinstance(value, (int, float)) and not isinstance(value, bool) and 0 <= value < 2**53:
        return int(value)
    return 0


def _numel(record: ArrayRecord) -> int:
    return sum(math.prod(a.shape) for a in record.values())  # np.prod costs microseconds per call
