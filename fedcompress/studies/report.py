"""Turn a study folder into report.md, report.csv and plots, computed only from what the run dirs stored.

Rows are settings (every config key but the seed); numbers are mean ± sample std over seeds. "To target"
is the first evaluated round whose accuracy reaches the dataset's target, with the bytes moved up to and
including it. Ratios compare MB-to-target with the fp32 FedAvg row (uplink = downlink = identity) that shares
every other key.
"""

from __future__ import annotations

import csv
import json
import statistics
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from fedcompress.errors import ConfigError
from fedcompress.ledger.recorder import MB, rounds_to_target
from fedcompress.studies.plots import Series, plot_dataset

IDENTITY = "identity"
NOT_SETTING = ("seed", "run-dir", "data-dir")  # keys that do not make a different row
SHOWN = ("uplink", "downlink", "dataset")  # already in the table's title / first column
DASH = "—"


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
    """One line of a table: a setting's numbers over its seeds."""

    dataset: str
    uplink: str
    downlink: str
    extra: dict[str, Any]
    runs: list[Run] = field(repr=False)
    target: float | None = None
    seeds: list[int] = field(default_factory=list)
    final: tuple[float, float] | None = None
    best: tuple[float, float] | None = None
    reached: int = 0
    round_to_target: float | None = None
    uplink_mb_to_target: float | None = None
    downlink_mb_to_target: float | None = None
    total_mb_to_target: float | None = None
    uplink_ratio: float | None = None
    total_ratio: float | None = None
    seconds_per_round: float | None = None
    run_uplink_mb: float = 0.0
    run_downlink_mb: float = 0.0

    @property
    def is_fp32(self) -> bool:
        return self.uplink == IDENTITY and self.downlink == IDENTITY

    @property
    def label(self) -> str:
        extra = ", ".join(f"{k}={v}" for k, v in self.extra.items())
        name = "fp32 FedAvg" if self.is_fp32 else f"{self.uplink} / {self.downlink}"
        return f"{name} ({extra})" if extra else name


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
    return Run(run_dir.name, meta["config"], rows, summary, meta.get("environment", {}))


# ------------------------------------------------------------------ numbers


def build_rows(runs: list[Run], targets: dict[str, float]) -> dict[str, list[Row]]:
    """Group runs into rows per dataset, compute every number, then the ratios against fp32 FedAvg."""
    by_dataset: dict[str, dict[tuple, list[Run]]] = defaultdict(lambda: defaultdict(list))
    for run in runs:
        by_dataset[run.config["dataset"]][run.setting()].append(run)
    tables: dict[str, list[Row]] = {}
    for dataset in sorted(by_dataset):
        groups = by_dataset[dataset]
        varying = _varying_keys([r for rs in groups.values() for r in rs])
        rows = []
        for group in groups.values():
            cfg = group[0].config
            row = Row(dataset, cfg["uplink"], cfg["downlink"], {k: cfg.get(k) for k in varying}, group)
            _fill(row, targets.get(dataset))
            rows.append(row)
        rows.sort(
            key=lambda r: (tuple(str(v) for v in r.extra.values()), not r.is_fp32, r.uplink, r.downlink)
        )
        for row in rows:
            base = next((b for b in rows if b.is_fp32 and b.extra == row.extra), None)
            if base is not None:
                row.uplink_ratio = _ratio(row.uplink_mb_to_target, base.uplink_mb_to_target)
                row.total_ratio = _ratio(row.total_mb_to_target, base.total_mb_to_target)
        tables[dataset] = rows
    return tables


def _varying_keys(runs: list[Run]) -> list[str]:
    keys: list[str] = []
    for run in runs:
        keys += [k for k in run.config if k not in keys]
    return [
        k for k in keys
        if k not in NOT_SETTING and k not in SHOWN and len({json.dumps(r.config.get(k)) for r in runs}) > 1
    ]  # fmt: skip


def _fill(row: Row, target: float | None) -> None:
    runs = sorted(row.runs, key=lambda r: r.config.get("seed", 0))
    row.target = target
    row.seeds = [r.config.get("seed", 0) for r in runs]
    row.final = _mean_std(
        [r.summary["final_accuracy"] for r in runs if r.summary.get("final_accuracy") is not None]
    )
    row.best = _mean_std(
        [r.summary["best_accuracy"] for r in runs if r.summary.get("best_accuracy") is not None]
    )
    per_round = [s for r in runs for s in (_median_round_seconds(r),) if s is not None]
    row.seconds_per_round = statistics.fmean(per_round) if per_round else None
    last = [[x for x in r.rows if x["round"] > 0][-1:] for r in runs]
    row.run_uplink_mb = statistics.fmean([x[0]["uplink_bytes_cum"] / MB if x else 0.0 for x in last])
    row.run_downlink_mb = statistics.fmean([x[0]["downlink_bytes_cum"] / MB if x else 0.0 for x in last])
    if target is None:
        return
    hits = [h for h in (rounds_to_target(r.rows, target) for r in runs) if h is not None]
    row.reached = len(hits)
    if hits:
        row.round_to_target = statistics.fmean(h["round"] for h in hits)
        row.uplink_mb_to_target = statistics.fmean(h["uplink_mb"] for h in hits)
        row.downlink_mb_to_target = statistics.fmean(h["downlink_mb"] for h in hits)
        row.total_mb_to_target = row.uplink_mb_to_target + row.downlink_mb_to_target


def _median_round_seconds(run: Run) -> float | None:
    """Median, not mean: round 1 also pays Ray's worker start-up (10+ s against ~1 s for the others)."""
    secs = [r["seconds"] for r in run.rows if r["round"] > 0]
    return statistics.median(secs) if secs else None


def _mean_std(values: list[float]) -> tuple[float, float] | None:
    if not values:
        return None
    return statistics.fmean(values), statistics.stdev(values) if len(values) > 1 else 0.0


def _ratio(a: float | None, b: float | None) -> float | None:
    return a / b if a is not None and b else None


def headline(dataset: str, rows: list[Row]) -> str:
    """The compressed pipeline needing the fewest uplink bytes to the target (in every seed), against fp32."""
    target = rows[0].target if rows else None
    if target is None:
        return f"**{dataset}:** no target accuracy set."
    if not any(r.is_fp32 for r in rows):
        return f"**{dataset}:** no fp32 FedAvg cell (uplink = downlink = identity) to compare with."
    ok = [r for r in rows if not r.is_fp32 and r.uplink_ratio is not None and r.reached == len(r.seeds)]
    if not ok:
        base = next(r for r in rows if r.is_fp32)
        if all(r.is_fp32 for r in rows):
            reached = f"{base.reached}/{len(base.seeds)}"
            return f"**{dataset}:** only fp32 FedAvg ran; it reached {target:g} in {reached} seeds."
        return (
            f"**{dataset}:** no compressed pipeline reached {target:g} in every seed with an fp32 reference."
        )
    best = min(ok, key=lambda r: (r.uplink_ratio, r.total_ratio or 0))
    assert best.uplink_ratio is not None
    total = f"; total bytes {_fmt_ratio(best.total_ratio)} of fp32" if best.total_ratio is not None else ""
    return (
        f"**{dataset}:** `{best.label}` reaches accuracy {target:g} (round {_fmt_round(best)}) with "
        f"**{_fmt_ratio(best.uplink_ratio)}** of fp32 FedAvg's uplink bytes "
        f"({_fmt_mb(best.uplink_mb_to_target)} MB){total}."
    )


# ------------------------------------------------------------------ formatting (shared by MD and CSV checks)

COLUMNS = [
    ("seeds", "seeds"),
    ("final acc", "final_acc"),
    ("best acc", "best_acc"),
    ("round to target", "round_to_target"),
    ("uplink MB to target", "uplink_mb_to_target"),
    ("downlink MB to target", "downlink_mb_to_target"),
    ("total MB to target", "total_mb_to_target"),
    ("uplink ratio vs fp32", "uplink_ratio_vs_fp32"),
    ("total ratio vs fp32", "total_ratio_vs_fp32"),
    ("s/round (median)", "seconds_per_round"),
]


def _fmt_acc(ms: tuple[float, float] | None) -> str:
    return DASH if ms is None else f"{ms[0]:.4f} ± {ms[1]:.4f}"


def _fmt_mb(x: float | None) -> str:
    if x is None:
        return DASH
    return f"{x:.1f}" if x >= 100 else f"{x:.4g}"


def _fmt_ratio(x: float | None) -> str:
    if x is None:
        return DASH
    return f"{x:.4f} ({1 / x:.1f}x fewer)" if x < 1 else f"{x:.4f}"


def _fmt_round(row: Row) -> str:
    if row.target is None:
        return DASH
    if row.round_to_target is None:
        return f"not reached (0/{len(row.seeds)})"
    value = f"{row.round_to_target:g}" if row.round_to_target.is_integer() else f"{row.round_to_target:.1f}"
    return value if row.reached == len(row.seeds) else f"{value} ({row.reached}/{len(row.seeds)})"


def md_cells(row: Row) -> list[str]:
    """The table cells of a row, in COLUMNS order."""
    return [
        ",".join(str(s) for s in row.seeds),
        _fmt_acc(row.final),
        _fmt_acc(row.best),
        _fmt_round(row),
        _fmt_mb(row.uplink_mb_to_target),
        _fmt_mb(row.downlink_mb_to_target),
        _fmt_mb(row.total_mb_to_target),
        _fmt_ratio(row.uplink_ratio),
        _fmt_ratio(row.total_ratio),
        DASH if row.seconds_per_round is None else f"{row.seconds_per_round:.2f}",
    ]


def csv_record(row: Row, extra_keys: list[str]) -> dict[str, Any]:
    def num(x: float | None) -> str:
        return "" if x is None else f"{x:.6g}"

    return {
        "dataset": row.dataset,
        "target": num(row.target),
        "uplink": row.uplink,
        "downlink": row.downlink,
        **{k: json.dumps(row.extra[k]) if k in row.extra else "" for k in extra_keys},
        "seeds": ";".join(str(s) for s in row.seeds),
        "n_seeds": len(row.seeds),
        "final_acc_mean": num(row.final[0] if row.final else None),
        "final_acc_std": num(row.final[1] if row.final else None),
        "best_acc_mean": num(row.best[0] if row.best else None),
        "best_acc_std": num(row.best[1] if row.best else None),
        "reached": row.reached,
        "round_to_target": num(row.round_to_target),
        "uplink_mb_to_target": num(row.uplink_mb_to_target),
        "downlink_mb_to_target": num(row.downlink_mb_to_target),
        "total_mb_to_target": num(row.total_mb_to_target),
        "uplink_ratio_vs_fp32": num(row.uplink_ratio),
        "total_ratio_vs_fp32": num(row.total_ratio),
        "seconds_per_round": num(row.seconds_per_round),
        "run_uplink_mb": num(row.run_uplink_mb),
        "run_downlink_mb": num(row.run_downlink_mb),
    }


# ------------------------------------------------------------------ writing


def write_report(study_dir: Path, out: Path | None = None, targets: dict[str, float] | None = None) -> Path:
    """Write report.md, report.csv and the plots into `out` (default: the study folder); returns report.md."""
    study_dir = Path(study_dir)
    out = Path(out or study_dir)
    out.mkdir(parents=True, exist_ok=True)
    index, runs, missing = load_runs(study_dir)
    if not runs:
        raise ConfigError(f"{study_dir}: no complete run directories to report on")
    targets = {**index.get("study", {}).get("targets", {}), **(targets or {})}
    tables = build_rows(runs, targets)

    extra_keys: list[str] = []
    for rows in tables.values():
        extra_keys += [k for k in rows[0].extra if k not in extra_keys]
    records = [csv_record(row, extra_keys) for rows in tables.values() for row in rows]
    with open(out / "report.csv", "w", newline="", encoding="utf-8") as f:
        writer = csv.DictWriter(f, fieldnames=list(records[0]))
        writer.writeheader()
        writer.writerows(records)

    plots: dict[str, list[Path]] = {}
    for dataset, rows in tables.items():
        plots[dataset] = plot_dataset(dataset, [_series(r) for r in rows], targets.get(dataset), out)
    md = _markdown(study_dir, index, tables, runs, missing, plots, out)
    path = out / "report.md"
    path.write_text(md, encoding="utf-8")
    return path


def _series(row: Row) -> Series:
    """Seed-averaged curve over the rounds every seed evaluated."""
    per_seed = [{r["round"]: r for r in run.rows if r.get("accuracy") is not None} for run in row.runs]
    rounds = sorted(set.intersection(*(set(d) for d in per_seed)))
    acc = [statistics.fmean(d[n]["accuracy"] for d in per_seed) for n in rounds]
    up = [statistics.fmean(d[n]["uplink_bytes_cum"] / MB for d in per_seed) for n in rounds]
    return Series(row.label, rounds, acc, up)


def _markdown(
    study_dir: Path,
    index: dict[str, Any],
    tables: dict[str, list[Row]],
    runs: list[Run],
    missing: list[dict[str, Any]],
    plots: dict[str, list[Path]],
    out: Path,
) -> str:
    info = index.get("study", {})
    lines = [f"# Study {info.get('label', study_dir.name)}", ""]
    if info.get("description"):
        lines += [info["description"].strip(), ""]
    if info.get("spec_path"):
        lines.append(f"Spec: `{info['spec_path']}`{' (--quick variant)' if info.get('quick') else ''}.")
    lines += [
        f"Cells: {len(runs)} complete, {sum(m['status'] == 'failed' for m in missing)} failed, "
        f"{sum(m['status'] == 'pending' for m in missing)} pending.",
        "",
        "## Headline (fewest uplink bytes to the target vs fp32 FedAvg)",
        "",
        *[f"- {headline(d, rows)}" for d, rows in tables.items()],
        "",
        "How to read: accuracy is central test accuracy, mean ± sample std over seeds. *Round to target* "
        "is the first evaluated round reaching the dataset's target; *MB to target* is the measured bytes "
        "(whole Flower messages) moved up to and including that round, averaged over the seeds that reached "
        "it ((k/n) when not all did). *Ratio vs fp32* = MB to target / that of fp32 FedAvg (uplink = "
        "downlink = identity) with the same other settings. *s/round* is the median wall time per round, "
        "averaged over seeds.",
        "",
    ]
    for dataset, rows in tables.items():
        target = rows[0].target
        lines += [f"## {dataset} (target accuracy {target:g})" if target else f"## {dataset} (no target)", ""]
        head = ["pipeline (up / down)", *rows[0].extra, *(c for c, _ in COLUMNS)]
        lines.append("| " + " | ".join(head) + " |")
        lines.append("|" + "|".join("---" for _ in head) + "|")
        for row in rows:
            name = (
                "fp32 FedAvg (identity / identity)" if row.is_fp32 else f"`{row.uplink}` / `{row.downlink}`"
            )
            cells = [name, *(str(v) for v in row.extra.values()), *md_cells(row)]
            lines.append("| " + " | ".join(cells) + " |")
        lines.append("")
        for png in plots.get(dataset, []):
            rel = png.relative_to(out) if png.is_relative_to(out) else png
            lines.append(f"![{png.stem}]({rel})")
        lines.append("")
    if missing:
        lines += ["## Cells without results", ""]
        for m in missing:
            first = m["error"].splitlines()[0] if m["error"] else ""
            lines.append(f"- `{m['id']}`: {m['status']}{': ' + first if first else ''}")
        lines.append("")
    lines += ["## Environment", "", *_environment_lines(index, runs), ""]
    return "\n".join(lines)


def _environment_lines(index: dict[str, Any], runs: list[Run]) -> list[str]:
    runner = index.get("runner_environment", {})
    cell_envs = {json.dumps(r.environment, sort_keys=True) for r in runs}
    lines = []
    if runner:
        versions = ("fedcompress", "flwr", "torch", "numpy", "python")
        lines.append("- Runner: " + ", ".join(f"{k} {runner[k]}" for k in versions if k in runner))
        lines.append(f"- Git commit: {runner.get('git_commit', 'unknown')}")
        lines.append(
            f"- Machine: {runner.get('cpu', '?')}, {runner.get('cpu_count', '?')} cores, "
            f"{runner.get('memory_gb', '?')} GB RAM, {runner.get('os', runner.get('machine', '?'))}"
        )
    for env in sorted(cell_envs):
        e = json.loads(env)
        lines.append("- Cells ran with: " + ", ".join(f"{k} {v}" for k, v in e.items() if k != "git_commit"))
    if len(cell_envs) > 1:
        lines.append("- Note: cells ran in different environments; compare their numbers with care.")
    return lines
