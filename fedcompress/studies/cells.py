"""How a row's numbers read in the markdown table, the CSV and the headline (one place, so they agree)."""

from __future__ import annotations

import json
from typing import Any

from fedcompress.studies.rows import Row
from fedcompress.studies.seeds import DASH, Spread, fmt_spread

# Markdown headers, in order; the same-strategy pair is shown only when a dataset ran several strategies.
COLUMNS = [
    "seeds",
    "final acc",
    "best acc",
    "round to target",
    "uplink MB to target",
    "downlink MB to target",
    "total MB to target",
    "uplink ratio vs best fp32",
    "total ratio vs best fp32",
    "uplink ratio vs same-strategy fp32",
    "total ratio vs same-strategy fp32",
    "s/round (median)",
]
SAME_STRATEGY_COLUMNS = ("uplink ratio vs same-strategy fp32", "total ratio vs same-strategy fp32")


def fmt_acc(x: float) -> str:
    return f"{x:.4f}"


def fmt_mb(x: float | None) -> str:
    if x is None:
        return DASH
    return f"{x:.1f}" if x >= 100 else f"{x:.4g}"


def fmt_ratio(x: float | None) -> str:
    if x is None:
        return DASH
    return f"{x:.4f} ({1 / x:.1f}x fewer)" if x < 1 else f"{x:.4f}"


def fmt_rounds(x: float) -> str:
    return f"{x:g}" if float(x).is_integer() else f"{x:.1f}"


def fmt_round(row: Row) -> str:
    """Median round to the target [min-max], with (k/n) when only k of n seeds reached it."""
    if row.target is None:
        return DASH
    if row.round_to_target is None:
        return f"not reached (0/{len(row.seeds)})"
    value = fmt_spread(row.round_to_target, fmt_rounds)
    return value if row.all_reached else f"{value} ({row.reached}/{len(row.seeds)})"


def name_cell(row: Row) -> str:
    """First column: `fp32 FedAvg (identity / identity)`, or the pipelines (and the preset they spell)."""
    if row.is_fp32:  # the strategy column names the strategy when several ran
        return (
            "fp32 (identity / identity)"
            if row.show_strategy
            else f"fp32 {row.strategy} (identity / identity)"
        )
    name = f"`{row.uplink}` / `{row.downlink}`"
    return f"{name} (preset {row.preset})" if row.preset else name


def md_cells(row: Row) -> dict[str, str]:
    """The table cells of a row, by COLUMNS header."""
    mb = [fmt_spread(getattr(row, f"{k}_mb_to_target"), fmt_mb) for k in ("uplink", "downlink", "total")]
    return dict(
        zip(
            COLUMNS,
            [
                ",".join(str(s) for s in row.seeds),
                fmt_spread(row.final, fmt_acc),
                fmt_spread(row.best, fmt_acc),
                fmt_round(row),
                *mb,
                fmt_ratio(row.ratio("uplink", row.baseline)),
                fmt_ratio(row.ratio("total", row.baseline)),
                fmt_ratio(row.ratio("uplink", row.same)),
                fmt_ratio(row.ratio("total", row.same)),
                DASH if row.seconds_per_round is None else f"{row.seconds_per_round:.2f}",
            ],
            strict=True,
        )
    )


def csv_record(row: Row, extra_keys: list[str]) -> dict[str, Any]:
    """One CSV line: medians with their min and max, both baselines named, both pairs of ratios."""

    def num(x: float | None) -> str:
        return "" if x is None else f"{x:.6g}"

    def trio(name: str, s: Spread | None, median: str = "") -> dict[str, str]:
        return {
            f"{name}{median}": num(s.median if s else None),
            f"{name}_min": num(s.lo if s else None),
            f"{name}_max": num(s.hi if s else None),
        }

    return {
        "dataset": row.dataset,
        "target": num(row.target),
        "uplink": row.uplink,
        "downlink": row.downlink,
        "preset": row.preset or "",
        "strategy": row.strategy,
        **{k: json.dumps(row.extra[k]) if k in row.extra else "" for k in extra_keys},
        "seeds": ";".join(str(s) for s in row.seeds),
        "n_seeds": len(row.seeds),
        **trio("final_acc", row.final, "_median"),
        **trio("best_acc", row.best, "_median"),
        "reached": row.reached,
        **trio("round_to_target", row.round_to_target),
        **trio("uplink_mb_to_target", row.uplink_mb_to_target),
        **trio("downlink_mb_to_target", row.downlink_mb_to_target),
        **trio("total_mb_to_target", row.total_mb_to_target),
        "best_baseline": row.baseline.label if row.baseline else "",
        "uplink_ratio_vs_best": num(row.ratio("uplink", row.baseline)),
        "total_ratio_vs_best": num(row.ratio("total", row.baseline)),
        "same_strategy_baseline": row.same.label if row.same else "",
        "uplink_ratio_vs_same_strategy": num(row.ratio("uplink", row.same)),
        "total_ratio_vs_same_strategy": num(row.ratio("total", row.same)),
        "seconds_per_round": num(row.seconds_per_round),
        "run_uplink_mb": num(row.run_uplink_mb),
        "run_downlink_mb": num(row.run_downlink_mb),
    }


def headline(dataset: str, rows: list[Row]) -> str:
    """The compressed row with the smallest uplink ratio against the best fp32 baseline, every seed at target."""
    target = rows[0].target if rows else None
    if target is None:
        return f"**{dataset}:** no target accuracy set."
    if not any(r.is_fp32 for r in rows):
        return f"**{dataset}:** no fp32 cell (uplink = downlink = identity) to compare with."
    if not any(r.baseline for r in rows):
        return f"**{dataset}:** no fp32 baseline reached {target:g} in every seed: nothing to compare with."
    ok = [r for r in rows if not r.is_fp32 and r.all_reached and r.ratio("uplink", r.baseline) is not None]
    if not ok:
        if all(r.is_fp32 for r in rows):
            best_fp32 = min((r.baseline for r in rows if r.baseline), key=lambda b: _base_mb(b))
            return f"**{dataset}:** only fp32 baselines ran; the best is {_base(best_fp32)}."
        return f"**{dataset}:** no compressed pipeline reached {target:g} in every seed."
    best = min(ok, key=lambda r: (r.ratio("uplink", r.baseline), r.ratio("total", r.baseline) or 0))
    base = best.baseline
    assert base is not None and best.uplink_mb_to_target is not None and base.uplink_mb_to_target is not None
    total = best.ratio("total", base)
    preset = f" (preset {best.preset})" if best.preset else ""
    strategy = f" with {best.strategy}" if best.show_strategy else ""
    n = len(best.seeds)
    return (
        f"**{dataset}:** `{best.uplink} / {best.downlink}`{preset}{strategy} reaches accuracy {target:g} "
        f"(round {fmt_round(best)}{f', median of {n} seeds' if n > 1 else ''}) with "
        f"**{fmt_ratio(best.ratio('uplink', base))}** of the uplink bytes of the best fp32 baseline, "
        f"{base.label} ({fmt_mb(best.uplink_mb_to_target.median)} MB against "
        f"{fmt_mb(base.uplink_mb_to_target.median)} MB); total bytes {fmt_ratio(total)} of that baseline's."
    )


def baseline_lines(rows: list[Row]) -> list[str]:
    """Per group: the best fp32 baseline, and every fp32 candidate with why it is or is not the best."""
    lines: list[str] = []
    groups: dict[str, list[Row]] = {}
    for row in rows:
        groups.setdefault(json.dumps(row.extra, sort_keys=True, default=str), []).append(row)
    for members in groups.values():
        fp32 = [r for r in members if r.is_fp32]
        where = ", ".join(f"{k}={v}" for k, v in members[0].extra.items())
        best = members[0].baseline
        head = f"Best fp32 baseline{f' ({where})' if where else ''}: "
        if best is None or best.uplink_mb_to_target is None:
            lines += [head + "none (no fp32 cell reached the target in every seed).", ""]
            continue
        n = len(best.seeds)
        lines.append(
            f"{head}**{best.label}**: {fmt_mb(best.uplink_mb_to_target.median)} MB uplink to the target "
            f"(round {fmt_round(best)}{f', median of {n} seeds' if n > 1 else ''})."
        )
        for r in fp32:
            if r is best:
                continue
            if not r.all_reached or r.uplink_mb_to_target is None:
                why = f"reached the target in {r.reached}/{len(r.seeds)} seeds, so it cannot be the reference"
            else:
                more = r.uplink_mb_to_target.median / best.uplink_mb_to_target.median
                why = f"{fmt_mb(r.uplink_mb_to_target.median)} MB ({more:.2f}x the best)"
            lines.append(f"- {r.label}: {why}")
        lines.append("")
    return lines


def _base(row: Row | None) -> str:
    if row is None or row.uplink_mb_to_target is None:
        return DASH
    return f"{row.label} ({fmt_mb(row.uplink_mb_to_target.median)} MB uplink to the target)"


def _base_mb(row: Row) -> float:
    return row.uplink_mb_to_target.median if row.uplink_mb_to_target else float("inf")
