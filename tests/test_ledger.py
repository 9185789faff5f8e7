"""Ledger totals, the run directory's summary, and seeded sampling."""

import json
from pathlib import Path

from fedcompress.flower.sampling import sample_partitions
from fedcompress.ledger import RunRecorder, Transfer
from fedcompress.ledger.recorder import rounds_to_target


def _t(r: int, pid: int, direction: str, nbytes: int, rejected: str = "") -> Transfer:
    return Transfer(
        r, pid, 100 + pid, direction, nbytes, nbytes - 10, 4000, nbytes - 20, 5, rejected=rejected
    )  # type: ignore[arg-type]


def test_recorder_totals_per_round_and_cumulative(tmp_path: Path) -> None:
    rec = RunRecorder(tmp_path / "run", {"seed": 0}, "abc")
    rec.end_round(0, {"accuracy": 0.1})
    for pid in (0, 1):
        rec.ledger.record(_t(1, pid, "downlink", 1000))
        rec.ledger.record(_t(1, pid, "uplink", 300, rejected="bad" if pid else ""))
    row1 = rec.end_round(1, {"accuracy": 0.5})
    rec.ledger.record(_t(2, 0, "uplink", 200))
    row2 = rec.end_round(2, {"accuracy": 0.7})
    assert (row1["uplink_bytes"], row1["downlink_bytes"], row1["rejected"], row1["clients"]) == (
        600,
        2000,
        1,
        2,
    )
    assert (row2["uplink_bytes_cum"], row2["downlink_bytes_cum"]) == (800, 2000)
    summary = rec.finish()
    assert summary["status"] == "complete" and summary["best_accuracy"] == 0.7 and summary["rounds"] == 2
    assert summary["uplink_mb"] == 800 / 1e6
    assert len((tmp_path / "run" / "ledger.jsonl").read_text().splitlines()) == 5
    assert json.loads((tmp_path / "run" / "summary.json").read_text())["status"] == "complete"
    hit = rounds_to_target(rec.rows, 0.6)
    assert hit == {"round": 2, "uplink_mb": 800 / 1e6, "downlink_mb": 2000 / 1e6}
    assert rounds_to_target(rec.rows, 0.9) is None


def test_failed_run_is_not_marked_complete(tmp_path: Path) -> None:
    rec = RunRecorder(tmp_path / "run", {}, "x")
    summary = rec.finish(status="failed", error="boom")
    assert summary["status"] == "failed" and summary["error"] == "boom"


def test_sampling_is_seeded_distinct_and_varies_by_round() -> None:
    parts = list(range(105))
    a = sample_partitions(0, 5, parts, 10)
    assert a == sample_partitions(0, 5, list(reversed(parts)), 10)
    assert (
        len(set(a)) == 10
        and a != sample_partitions(0, 6, parts, 10)
        and a != sample_partitions(1, 5, parts, 10)
    )
