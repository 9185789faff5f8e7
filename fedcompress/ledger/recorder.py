"""Writes a run directory: resolved config, per-round metrics, the ledger, and a summary written last.

A run directory is finished only when `summary.json` exists with "status": "complete"; a run that stopped
early leaves "status": "failed" (or no summary), so no half-written run passes for a finished one.
"""

from __future__ import annotations

import json
import os
import platform
import subprocess
import time
from pathlib import Path
from typing import Any

from fedcompress.ledger.ledger import Ledger

MB = 1e6


def default_run_dir(run_dir: str, dataset: str, digest: str) -> Path:
    """`run_dir` if set, else $FEDCOMPRESS_RUNS_DIR (or ./runs)/<time>-<dataset>-<config digest>, absolute."""
    if run_dir:
        return Path(run_dir).expanduser().resolve()
    root = Path(os.environ.get("FEDCOMPRESS_RUNS_DIR", "runs"))
    return (root / f"{time.strftime('%Y%m%d-%H%M%S')}-{dataset}-{digest}").resolve()


def environment() -> dict[str, str]:
    """Versions and commit that produced a run (the report says which environment made its numbers)."""
    import flwr
    import numpy
    import torch

    import fedcompress

    try:
        commit = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"],
            cwd=Path(fedcompress.__file__).parent,
            capture_output=True,
            text=True,
            timeout=5,
        ).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        commit = ""
    return {
        "fedcompress": fedcompress.__version__,
        "flwr": flwr.__version__,
        "torch": torch.__version__,
        "numpy": numpy.__version__,
        "python": platform.python_version(),
        "machine": f"{platform.machine()} {platform.system()}",
        "git_commit": commit or "unknown",
    }


class RunRecorder:
    """Per-round metrics (`metrics.jsonl`) joined with the ledger's per-round byte totals."""

    def __init__(
        self,
        run_dir: Path,
        config: dict[str, Any],
        config_hash: str,
        resume_at: tuple[int, int] | None = None,
    ) -> None:
        """`resume_at`: (ledger bytes, metrics bytes) a checkpoint ended at: keep those lines, drop the rest."""
        self.run_dir = run_dir
        run_dir.mkdir(parents=True, exist_ok=True)
        (run_dir / "summary.json").unlink(missing_ok=True)
        kept = _truncate(run_dir, resume_at)
        meta = {"config": config, "config_hash": config_hash, "environment": environment()}
        (run_dir / "config.json").write_text(json.dumps(meta, indent=2))
        self.ledger = Ledger(run_dir / "ledger.jsonl")
        self.ledger.replay(kept["ledger.jsonl"])
        self._metrics = open(run_dir / "metrics.jsonl", "a", encoding="utf-8")  # noqa: SIM115
        self.rows: list[dict[str, Any]] = kept["metrics.jsonl"]
        self._t_last = time.perf_counter()
        self._t_start = self._t_last

    def end_round(self, server_round: int, metrics: dict[str, Any]) -> dict[str, Any]:
        """Close a round: time it, join its byte totals, append a line, return the row."""
        now = time.perf_counter()
        totals = self.ledger.round_totals(server_round)
        up, down = totals.get("uplink_message_bytes", 0), totals.get("downlink_message_bytes", 0)
        cum = self.ledger.cumulative
        row = {
            "round": server_round,
            "seconds": round(now - self._t_last, 4),
            **metrics,
            "clients": totals.get("uplink_messages", 0),
            "rejected": totals.get("rejected", 0),
            "uplink_bytes": up,
            "downlink_bytes": down,
            "uplink_payload_bytes": totals.get("uplink_payload_bytes", 0),
            "downlink_payload_bytes": totals.get("downlink_payload_bytes", 0),
            "uplink_raw_bytes": totals.get("uplink_raw_bytes", 0),
            "downlink_raw_bytes": totals.get("downlink_raw_bytes", 0),
            "uplink_bytes_cum": cum.get("uplink_message_bytes", 0),
            "downlink_bytes_cum": cum.get("downlink_message_bytes", 0),
        }
        self._t_last = now
        self.rows.append(row)
        self._metrics.write(json.dumps(row) + "\n")
        self._metrics.flush()
        self.ledger.flush()
        return row

    def finish(self, status: str = "complete", error: str = "") -> dict[str, Any]:
        """Write summary.json (last, so its presence with status=complete marks a finished run)."""
        self._metrics.close()
        self.ledger.close()
        summary = summarize(self.rows)
        summary.update(status=status, error=error, wall_seconds=round(time.perf_counter() - self._t_start, 2))
        (self.run_dir / "summary.json").write_text(json.dumps(summary, indent=2))
        return summary


def _truncate(run_dir: Path, resume_at: tuple[int, int] | None) -> dict[str, list[dict[str, Any]]]:
    """Fresh run: no ledger or metrics. Resumed: both cut at the checkpoint's offsets; their rows."""
    kept: dict[str, list[dict[str, Any]]] = {}
    for name, size in zip(("ledger.jsonl", "metrics.jsonl"), resume_at or (0, 0), strict=True):
        path = run_dir / name
        if resume_at is None or not path.exists():
            path.unlink(missing_ok=True)
            kept[name] = []
            continue
        if path.stat().st_size < size:
            raise ValueError(f"{path} holds {path.stat().st_size} bytes, fewer than its checkpoint's {size}")
        with open(path, "rb+") as f:
            f.truncate(size)
        kept[name] = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    return kept


def summarize(rows: list[dict[str, Any]]) -> dict[str, Any]:
    """Final and best accuracy, total MB each way, seconds per round (round 0, the initial evaluation, excluded)."""
    rounds = [r for r in rows if r["round"] > 0]
    evaluated = [r for r in rows if r.get("accuracy") is not None]
    best = max(evaluated, key=lambda r: r["accuracy"], default=None)
    last = evaluated[-1] if evaluated else None
    secs = [r["seconds"] for r in rounds]
    return {
        "rounds": len(rounds),
        "final_accuracy": last["accuracy"] if last else None,
        "best_accuracy": best["accuracy"] if best else None,
        "best_round": best["round"] if best else None,
        "uplink_mb": (rounds[-1]["uplink_bytes_cum"] / MB) if rounds else 0.0,
        "downlink_mb": (rounds[-1]["downlink_bytes_cum"] / MB) if rounds else 0.0,
        "seconds_per_round": (sum(secs) / len(secs)) if secs else None,  # JSON has no NaN
    }


def rounds_to_target(rows: list[dict[str, Any]], target: float) -> dict[str, Any] | None:
    """The first round whose accuracy reaches `target`, with the bytes moved up to and including it."""
    for r in rows:
        if r.get("accuracy") is not None and r["accuracy"] >= target:
            return {
                "round": r["round"],
                "uplink_mb": r["uplink_bytes_cum"] / MB,
                "downlink_mb": r["downlink_bytes_cum"] / MB,
            }
    return None
