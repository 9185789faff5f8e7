"""What a deployment shows while it runs (one line per round, read from the run directory) and the comparison of
the bytes the wire proxy counted with the bytes the ledger recorded."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

from fedcompress.launch.proxy import WireCount

MB = 1e6


class RoundPrinter:
    """Tails `metrics.jsonl` of a run directory: each call to `poll()` returns (and prints) the rounds written
    since the last call. The ServerApp writes one line per round, so this works for any deployment whose run
    directory is readable here, without parsing Flower's log output."""

    def __init__(self, run_dir: Path, total_rounds: int, out: Callable[[str], None] | None = print) -> None:
        self.path = Path(run_dir) / "metrics.jsonl"
        self.total = total_rounds
        self.out = out
        self._offset = 0

    def poll(self) -> list[dict[str, Any]]:
        try:
            with open(self.path, encoding="utf-8") as f:
                f.seek(self._offset)
                text = f.read()
        except OSError:
            return []
        complete = text[: text.rfind("\n") + 1]  # a half-written last line waits for the next poll
        self._offset += len(complete.encode())
        rows = [json.loads(line) for line in complete.splitlines() if line.strip()]
        if self.out is not None:
            for row in rows:
                if row["round"] > 0:
                    self.out(format_round(row, self.total))
        return rows


def format_round(row: dict[str, Any], total: int) -> str:
    """The same fields `fedcompress simulate` prints per round."""
    acc = "" if row.get("accuracy") is None else f"acc {row['accuracy']:.4f}  "
    rejected = f"  rejected {row['rejected']}" if row.get("rejected") else ""
    return (
        f"round {row['round']:4d}/{total}  {acc}up {row['uplink_bytes'] / MB:8.3f} MB  "
        f"down {row['downlink_bytes'] / MB:8.3f} MB  {row['seconds']:.2f} s{rejected}"
    )


def ledger_totals(run_dir: Path) -> dict[str, int]:
    """Message bytes per direction recorded in `ledger.jsonl`, and the number of messages."""
    up = down = n_up = n_down = 0
    for line in (Path(run_dir) / "ledger.jsonl").read_text().splitlines():
        row = json.loads(line)
        if row["direction"] == "uplink":
            up += int(row["message_bytes"])
            n_up += 1
        else:
            down += int(row["message_bytes"])
            n_down += 1
    return {"up": up, "down": down, "messages_up": n_up, "messages_down": n_down}


def wire_report(count: WireCount, run_dir: Path, node_seconds: float = 0.0) -> dict[str, Any]:
    """Wire bytes (proxy) against ledger bytes, each direction: the overhead is everything the ledger leaves
    out by design (TLS records and handshakes, HTTP/1.1 headers, protobuf request envelopes, the partition
    query, the FAB and run fetch, polling and heartbeats)."""
    ledger = ledger_totals(run_dir)
    return {
        "wire_up": count.up, "wire_down": count.down, "ledger_up": ledger["up"], "ledger_down": ledger["down"],
        "overhead_up": count.up - ledger["up"], "overhead_down": count.down - ledger["down"],
        "connections": count.connections, "messages_up": ledger["messages_up"],
        "messages_down": ledger["messages_down"], "node_seconds": round(node_seconds, 1),
        "per_message_up": round((count.up - ledger["up"]) / max(1, ledger["messages_up"])),
        "per_message_down": round((count.down - ledger["down"]) / max(1, ledger["messages_down"])),
    }  # fmt: skip


# Tolerance of the wire check, per direction: wire >= ledger (the ledger's message bytes must all cross), and
# wire - ledger <= OVERHEAD_PER_MESSAGE * messages + OVERHEAD_PER_SECOND * node-seconds. Per message: HTTP/1.1
# request and response headers, protobuf envelopes and TLS record headers of the push/pull/confirm calls that
# carry it (one call per object: message, record dict, records, arrays). Per node-second: a SuperNode polls every
# 3 s when idle and sends a heartbeat every ~24 s, each a small request and response in TLS records, plus the
# one-off TLS handshakes, node activation, the partition query and the run and FAB fetch, spread over the run.
OVERHEAD_PER_MESSAGE = 16_000
OVERHEAD_PER_SECOND = 1_500


def wire_agrees(report: dict[str, Any]) -> bool:
    """Ledger bytes all crossed, and what else crossed is within the tolerance above."""
    node_seconds = report["node_seconds"]
    for d in ("up", "down"):
        bound = OVERHEAD_PER_MESSAGE * report[f"messages_{d}"] + OVERHEAD_PER_SECOND * node_seconds
        if not 0 <= report[f"overhead_{d}"] <= bound:
            return False
    return True
