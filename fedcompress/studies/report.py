"""Turn a study folder into report.md, report.csv and plots, computed only from what the run dirs stored.

The numbers live in fedcompress.studies.rows (medians and min-max over seeds, the best fp32 baseline of each
group of settings, fedcompress.studies.baselines); how they read in the table, the CSV and the headline in
fedcompress.studies.cells.
"""

from __future__ import annotations

import csv
import json
import statistics
from pathlib import Path
from typing import Any

from fedcompress.errors import ConfigError
from fedcompress.ledger.recorder import MB
from fedcompress.studies.cells import (
    COLUMNS,
    SAME_STRATEGY_COLUMNS,
    baseline_lines,
    csv_record,
    headline,
    md_cells,
    name_cell,
)
from fedcompress.studies.plots import Series, plot_dataset
from fedcompress.studies.rows import Row, Run, build_rows, load_runs

__all__ = ["build_rows", "load_runs", "write_report"]


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
    """Median curve over seeds with its min-max band, over the rounds every seed evaluated."""
    per_seed = [{r["round"]: r for r in run.rows if r.get("accuracy") is not None} for run in row.runs]
    rounds = sorted(set.intersection(*(set(d) for d in per_seed)))
    accs = [[d[n]["accuracy"] for d in per_seed] for n in rounds]
    up = [statistics.median(d[n]["uplink_bytes_cum"] / MB for d in per_seed) for n in rounds]
    return Series(
        row.label, rounds, [statistics.median(a) for a in accs], up,
        acc_lo=[min(a) for a in accs], acc_hi=[max(a) for a in accs], to_target=row.uplink_mb_to_target,
        partial="" if row.all_reached else f"{row.reached}/{len(row.seeds)} seeds",
    )  # fmt: skip


HOW_TO_READ = (
    "How to read: every number is the **median over seeds, with the range [min–max]** when seeds differ "
    "(the plots' bands and error bars are the same min–max). Accuracy is central test accuracy. *Round to "
    "target* is the first evaluated round reaching the dataset's target; *MB to target* is the measured bytes "
    "(whole Flower messages) moved up to and including that round, over the seeds that reached it ((k/n) "
    "when only k of n did). The **best fp32 baseline** is, among the fp32 cells (uplink = downlink = "
    "identity) with the same other settings, the one with the fewest uplink MB to target; a cell that missed "
    "the target in any seed cannot be it. *Ratio vs best fp32* = a row's median MB to target / the best "
    "baseline's; *ratio vs same-strategy fp32* divides by fp32 with the row's own strategy and server "
    "settings (shown when a study ran several). FedAvgM runs with server lr 1.0 (fixed by "
    "fedcompress.flower.strategies). *s/round* is the median wall time per round, median over seeds."
)


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
        "## Headline (fewest uplink bytes to the target vs the best fp32 baseline)",
        "",
        *[f"- {headline(d, rows)}" for d, rows in tables.items()],
        "",
        HOW_TO_READ,
        "",
    ]
    for dataset, rows in tables.items():
        target = rows[0].target
        lines += [f"## {dataset} (target accuracy {target:g})" if target else f"## {dataset} (no target)", ""]
        if target is not None:
            lines += baseline_lines(rows)
        lines += _table(rows)
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


def _table(rows: list[Row]) -> list[str]:
    """The markdown table: the strategy column and the same-strategy ratios only when strategies vary."""
    several = rows[0].show_strategy
    columns = [c for c in COLUMNS if several or c not in SAME_STRATEGY_COLUMNS]
    head = ["pipeline (up / down)", *(["strategy"] if several else []), *rows[0].extra, *columns]
    lines = ["| " + " | ".join(head) + " |", "|" + "|".join("---" for _ in head) + "|"]
    for row in rows:
        cells = md_cells(row)
        strategy = [row.strategy] if several else []
        values = [
            name_cell(row),
            *strategy,
            *(str(v) for v in row.extra.values()),
            *(cells[c] for c in columns),
        ]
        lines.append("| " + " | ".join(values) + " |")
    return lines


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
