"""A study's numbers, computed only from what its run dirs stored: one row per setting, summarised over seeds.

Rows are settings (every config key but the seed). Accuracy, rounds and MB to the target are medians over
seeds with their min-max range (fedcompress.studies.seeds). Ratios divide medians: a row's MB to target by
that of the best fp32 baseline of its group (same dataset and other settings; fedcompress.studies.baselines),
and by that of fp32 with its own strategy.
"""

from __future__ import annotations

import json
import statistics
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from fedcompress.codecs.presets import preset_of
from fedcompress.config import defaults
from fedcompress.ledger.recorder import MB, rounds_to_target
from fedcompress.studies.baselines import (
    STRATEGY_KEYS,
    best_baseline,
    same_strategy_baseline,
    strategy_label,
    strategy_order,
    strategy_setting,
)
from fedcompress.studies.seeds import Spread, spread

IDENTITY = "identity"
NOT_SETTING = ("seed", "run-dir", "data-dir", "resume-run")  # keys that do not make a different row
SHOWN = ("uplink", "downlink", "dataset")  # already in the table's title / first column


@dataclass
class Run:
    """One finished cell as stored: resolved config, per-round metrics, summary, environment."""

    cell_id: str
    config: dict[str, Any]
    rows: list[dict[str, Any]]
    summary: dict[str, Any]
    environment: dict[str, Any]

    def setting(self) -> tuple[tuple[str, str], ...]:
        return tuple(sorted((k, json.dumps(v)) for k, v in self.config.items() if k not in NOT_SETTING))


@dataclass
class Row:
    """One line of a table: a setting's numbers over its seeds, and the fp32 rows it is compared with."""

    dataset: str
    uplink: str
    downlink: str
    extra: dict[str, Any]  # the other settings that vary in this dataset (strategy keys aside)
    strategy: str  # label, e.g. "FedAvgM (server lr 1.0, momentum 0.9)"
    setting: tuple[Any, ...]  # strategy + the values of the keys it reads
    runs: list[Run] = field(repr=False)
    show_strategy: bool = False  # the dataset has rows of more than one strategy setting
    target: float | None = None
    seeds: list[int] = field(default_factory=list)
    final: Spread | None = None
    best: Spread | None = None
    reached: int = 0
    round_to_target: Spread | None = None
    uplink_mb_to_target: Spread | None = None
    downlink_mb_to_target: Spread | None = None
    total_mb_to_target: Spread | None = None
    baseline: Row | None = field(default=None, repr=False)  # best fp32 of the group
    same: Row | None = field(default=None, repr=False)  # fp32 with this row's strategy setting
    seconds_per_round: float | None = None
    run_uplink_mb: float = 0.0
    run_downlink_mb: float = 0.0

    @property
    def is_fp32(self) -> bool:
        return self.uplink == IDENTITY and self.downlink == IDENTITY

    @property
    def all_reached(self) -> bool:
        return self.target is not None and bool(self.seeds) and self.reached == len(self.seeds)

    @property
    def preset(self) -> str | None:
        return None if self.is_fp32 else preset_of(self.uplink, self.downlink)

    @property
    def label(self) -> str:
        """Plots and the headline: the pipelines, the strategy when several ran, the other settings."""
        if self.is_fp32:
            name = f"fp32 {self.strategy}"
        else:
            name = f"{self.uplink} / {self.downlink}"
            if self.show_strategy:
                name += f" [{self.strategy}]"
        extra = ", ".join(f"{k}={v}" for k, v in self.extra.items())
        return f"{name} ({extra})" if extra else name

    def ratio(self, kind: str, base: Row | None) -> float | None:
        """MB to target (kind: uplink | total), median over seeds, divided by `base`'s median."""
        mine, theirs = (getattr(r, f"{kind}_mb_to_target") if r else None for r in (self, base))
        return mine.median / theirs.median if mine and theirs and theirs.median else None


# ------------------------------------------------------------------ loading


def load_runs(study_dir: Path) -> tuple[dict[str, Any], list[Run], list[dict[str, Any]]]:
    """study.json (if any), the complete runs, and the cells that failed or are pending."""
    index_path = study_dir / "study.json"
    index = json.loads(index_path.read_text()) if index_path.exists() else {}
    if index.get("cells"):
        ids = [c["id"] for c in index["cells"]]
    else:  # no index: every complete run dir below
        ids = sorted(p.parent.name for p in study_dir.glob("*/summary.json"))
    runs, missing = [], []
    for cell_id in ids:
        run = _load_run(study_dir / cell_id)
        if run is None:
            failed = study_dir / cell_id / "FAILED"
            error = failed.read_text().strip() if failed.exists() else ""
            missing.append({"id": cell_id, "status": "failed" if error else "pending", "error": error})
        else:
            runs.append(run)
    return index, runs, missing


def _load_run(run_dir: Path) -> Run | None:
    try:
        summary = json.loads((run_dir / "summary.json").read_text())
        meta = json.loads((run_dir / "config.json").read_text())
        lines = (run_dir / "metrics.jsonl").read_text().splitlines()
    except (OSError, ValueError):
        return None
    if summary.get("status") != "complete":
        return None
    rows = [json.loads(line) for line in lines if line.strip()]
    # Keys added after a run was made take their default: otherwise they would split old and new seeds.
    config = {**defaults(), **meta["config"]}
    return Run(run_dir.name, config, rows, summary, meta.get("environment", {}))


# ------------------------------------------------------------------ numbers


def build_rows(runs: list[Run], targets: dict[str, float]) -> dict[str, list[Row]]:
    """Rows per dataset, every number filled in, each row linked to its best and same-strategy baselines."""
    by_dataset: dict[str, dict[tuple, list[Run]]] = defaultdict(lambda: defaultdict(list))
    for run in runs:
        by_dataset[run.config["dataset"]][run.setting()].append(run)
    tables: dict[str, list[Row]] = {}
    for dataset in sorted(by_dataset):
        groups = by_dataset[dataset]
        everything = [r for rs in groups.values() for r in rs]
        varying = _varying_keys(everything)
        several = len({strategy_setting(r.config) for r in everything}) > 1
        rows = []
        for group in groups.values():
            cfg = group[0].config
            row = Row(
                dataset, cfg["uplink"], cfg["downlink"], {k: cfg.get(k) for k in varying},
                strategy_label(cfg), strategy_setting(cfg), group, show_strategy=several,
            )  # fmt: skip
            _fill(row, targets.get(dataset))
            rows.append(row)
        rows.sort(key=_order)
        for members in _groups(rows).values():
            best = best_baseline(members)
            for row in members:
                row.baseline = best
                row.same = same_strategy_baseline(row, members)
        tables[dataset] = rows
    return tables


def _order(row: Row) -> tuple[Any, ...]:
    extra = tuple(str(v) for v in row.extra.values())
    return (extra, not row.is_fp32, strategy_order(row.setting), row.uplink, row.downlink)


def _groups(rows: list[Row]) -> dict[str, list[Row]]:
    """Rows that share every setting but the pipelines and the strategy: one best baseline each."""
    out: dict[str, list[Row]] = defaultdict(list)
    for row in rows:
        out[json.dumps(row.extra, sort_keys=True, default=str)].append(row)
    return out


def _varying_keys(runs: list[Run]) -> list[str]:
    keys: list[str] = []
    for run in runs:
        keys += [k for k in run.config if k not in keys]
    skip = (*NOT_SETTING, *SHOWN, *STRATEGY_KEYS)
    return [k for k in keys if k not in skip and len({json.dumps(r.config.get(k)) for r in runs}) > 1]


def _fill(row: Row, target: float | None) -> None:
    runs = sorted(row.runs, key=lambda r: r.config.get("seed", 0))
    row.target = target
    row.seeds = [r.config.get("seed", 0) for r in runs]
    row.final = spread(r.summary.get("final_accuracy") for r in runs)
    row.best = spread(r.summary.get("best_accuracy") for r in runs)
    per_round = [s for r in runs for s in (_median_round_seconds(r),) if s is not None]
    row.seconds_per_round = statistics.median(per_round) if per_round else None
    last = [[x for x in r.rows if x["round"] > 0][-1:] for r in runs]
    row.run_uplink_mb = statistics.median([x[0]["uplink_bytes_cum"] / MB if x else 0.0 for x in last])
    row.run_downlink_mb = statistics.median([x[0]["downlink_bytes_cum"] / MB if x else 0.0 for x in last])
    if target is None:
        return
    hits = [h for h in (rounds_to_target(r.rows, target) for r in runs) if h is not None]
    row.reached = len(hits)
    row.round_to_target = spread(h["round"] for h in hits)
    row.uplink_mb_to_target = spread(h["uplink_mb"] for h in hits)
    row.downlink_mb_to_target = spread(h["downlink_mb"] for h in hits)
    row.total_mb_to_target = spread(h["uplink_mb"] + h["downlink_mb"] for h in hits)


def _median_round_seconds(run: Run) -> float | None:
    """Median, not mean: round 1 also pays Ray's worker start-up (10+ s against ~1 s for the others)."""
    secs = [r["seconds"] for r in run.rows if r["round"] > 0]
    return statistics.median(secs) if secs else None
