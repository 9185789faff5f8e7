"""Three small PNGs per dataset: accuracy vs cumulative uplink MB (log x) and vs rounds, one median line per row
with its min-max band over seeds, and uplink MB to the target per row with min-max error bars.

Agg backend: reports are made on headless machines and in CI.
"""

from __future__ import annotations

import re
import textwrap
from dataclasses import dataclass, field
from pathlib import Path

import matplotlib

from fedcompress.studies.seeds import Spread

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

DPI = 100
SIZE = (6.4, 4.0)


@dataclass
class Series:
    """One row: median accuracy over seeds at the rounds all seeds evaluated, its band, and MB to target."""

    label: str
    rounds: list[int]
    accuracy: list[float]  # median over seeds
    uplink_mb: list[float]  # cumulative, median over seeds, at the same rounds
    acc_lo: list[float] = field(default_factory=list)  # min over seeds (empty: no band)
    acc_hi: list[float] = field(default_factory=list)  # max over seeds
    to_target: Spread | None = None  # uplink MB to the target over the seeds that reached it
    partial: str = ""  # "2/3 seeds" when only some seeds reached the target


def plot_dataset(dataset: str, series: list[Series], target: float | None, out_dir: Path) -> list[Path]:
    """Write `<dataset>_acc_vs_uplink.png`, `_acc_vs_rounds.png` and `_mb_to_target.png`; returns their paths."""
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = [_curves(dataset, series, target, out_dir, kind) for kind in ("uplink", "rounds")]
    if any(s.to_target for s in series):
        paths.append(_to_target(dataset, series, target, out_dir))
    return paths


def _curves(dataset: str, series: list[Series], target: float | None, out_dir: Path, kind: str) -> Path:
    fig, ax = plt.subplots(figsize=SIZE, dpi=DPI)
    for s in series:
        xs_all = s.uplink_mb if kind == "uplink" else s.rounds
        keep = [i for i, x in enumerate(xs_all) if kind != "uplink" or x > 0]  # log x: round 0 sent nothing
        if not keep:
            continue
        xs = [xs_all[i] for i in keep]
        (line,) = ax.plot(
            xs,
            [s.accuracy[i] for i in keep],
            marker="." if len(xs) < 30 else None,
            linewidth=1.2,
            label=s.label,
        )
        if s.acc_lo and s.acc_lo != s.acc_hi:
            lo, hi = [s.acc_lo[i] for i in keep], [s.acc_hi[i] for i in keep]
            ax.fill_between(xs, lo, hi, color=line.get_color(), alpha=0.15, linewidth=0)
    if target is not None:
        ax.axhline(target, color="grey", linestyle="--", linewidth=0.8, label=f"target {target:g}")
    if kind == "uplink":
        ax.set_xscale("log")
        ax.set_xlabel("cumulative uplink MB (log; median over seeds)")
    else:
        ax.set_xlabel("round")
    ax.set_ylabel("test accuracy (median, min-max band)")
    ax.set_title(f"{dataset}: accuracy vs {'uplink MB' if kind == 'uplink' else 'rounds'}", fontsize=10)
    ax.grid(True, alpha=0.3, which="both")
    ax.legend(fontsize=7, loc="best")
    fig.tight_layout()
    path = out_dir / f"{file_stem(dataset)}_acc_vs_{kind}.png"
    fig.savefig(path, dpi=DPI)
    plt.close(fig)
    return path


def _to_target(dataset: str, series: list[Series], target: float | None, out_dir: Path) -> Path:
    """One point per row that reached the target: median uplink MB, error bar min-max over seeds."""
    reached = [s for s in series if s.to_target is not None]
    fig, ax = plt.subplots(figsize=(9.0, max(2.2, 0.9 + 0.4 * len(reached))), dpi=DPI)
    ys = list(range(len(reached)))
    medians = [s.to_target.median for s in reached]  # type: ignore[union-attr]
    errors = list(zip(*(s.to_target.err for s in reached), strict=True))  # type: ignore[union-attr]
    ax.errorbar(medians, ys, xerr=errors, fmt="o", markersize=4, capsize=3, linewidth=1)
    ax.set_yticks(
        ys,
        [textwrap.fill(s.label + (f" ({s.partial})" if s.partial else ""), 48) for s in reached],
        fontsize=6,
    )
    ax.invert_yaxis()
    ax.set_xscale("log")
    ax.set_xlabel("uplink MB to the target (log; median, min-max over seeds)")
    goal = f" {target:g}" if target is not None else ""
    ax.set_title(f"{dataset}: uplink MB to reach accuracy{goal}", fontsize=10)
    ax.grid(True, alpha=0.3, which="both", axis="x")
    fig.tight_layout()
    path = out_dir / f"{file_stem(dataset)}_mb_to_target.png"
    fig.savefig(path, dpi=DPI)
    plt.close(fig)
    return path


def file_stem(dataset: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", dataset)
