"""Per-transfer byte records with per-round and cumulative totals per direction (FLSim's channels, measured)."""

from __future__ import annotations

import json
from collections import defaultdict
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Literal

Direction = Literal["downlink", "uplink"]
DIRECTIONS: tuple[Direction, Direction] = ("downlink", "uplink")


@dataclass(frozen=True)
class Transfer:
    """One message between the server and one client.

    message_bytes: the whole message as Flower serializes it (all its content-addressed objects).
    payload_bytes: the model part of it (the record under the model's key, serialized: plain arrays with their
        chunks, or a compressed message's frame, which in a train reply also holds the metrics).
    raw_bytes: the same tensors as plain fp32 (what an uncompressed model would carry).
    encoded_bytes: the codec's output (equals the array data when nothing is encoded).
    metadata_bytes: the part of encoded_bytes that is headers, scales and bookkeeping, not coded values.
    """

    round: int
    partition_id: int
    node_id: int
    direction: Direction
    message_bytes: int
    payload_bytes: int
    raw_bytes: int
    encoded_bytes: int
    metadata_bytes: int
    codec: str = "identity"
    rejected: str = ""
    tier: str = ""
    message_type: str = "train"  # train, evaluate, query (Flower's "<category>[.<action>]")

    @property
    def ratio(self) -> float:
        return self.raw_bytes / self.encoded_bytes if self.encoded_bytes else 0.0


class Ledger:
    """Collects transfers, appends each to `ledger.jsonl` as it happens, and totals them."""

    def __init__(self, path: Path | None = None) -> None:
        self.path = path
        self._file = open(path, "a", encoding="utf-8") if path else None  # noqa: SIM115 - kept open for the run
        self._rounds: dict[int, dict[str, int]] = defaultdict(lambda: defaultdict(int))
        self.cumulative: dict[str, int] = defaultdict(int)

    def record(self, t: Transfer) -> None:
        self._count(t)
        if self._file:
            self._file.write(json.dumps({**asdict(t), "ratio": round(t.ratio, 3)}) + "\n")

    def replay(self, rows: list[dict]) -> None:
        """Count rows already in the file (a resumed run) without writing them again."""
        names = set(Transfer.__dataclass_fields__)
        for row in rows:
            self._count(Transfer(**{k: v for k, v in row.items() if k in names}))

    def _count(self, t: Transfer) -> None:
        totals = self._rounds[t.round]
        for key in ("message_bytes", "payload_bytes", "raw_bytes", "encoded_bytes", "metadata_bytes"):
            totals[f"{t.direction}_{key}"] += getattr(t, key)
            self.cumulative[f"{t.direction}_{key}"] += getattr(t, key)
        totals[f"{t.direction}_messages"] += 1
        if t.tier:
            totals[f"{t.direction}_message_bytes/{t.tier}"] += t.message_bytes
        if t.rejected:
            totals["rejected"] += 1

    def round_totals(self, server_round: int) -> dict[str, int]:
        return dict(self._rounds.get(server_round, {}))

    def flush(self) -> None:
        if self._file:
            self._file.flush()

    def close(self) -> None:
        if self._file:
            self._file.close()
            self._file = None
