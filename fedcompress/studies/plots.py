"""Two small PNGs per dataset: accuracy vs cumulative uplink MB (log x) and vs rounds, one line per row.

Agg backend: reports are made on headless machines and in CI.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

DPI = 100
SIZE = (6.4, 4.0)


@dataclass
class Series:
    """One line: a pipeline's seed-averaged accuracy at its evaluated rounds."""

    label: str
    rounds: list[int]
    accuracy: list[float]
    uplink_mb: list[float]  # cumulative, at the same rounds


def plot_dataset(dataset: str, series: list[Series], target: float | None, out_dir: Path) -> list[Path]:
    """Write `<dataset>_acc_vs_uplink.png` and `<dataset>_acc_vs_rounds.png`; returns their paths."""
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = []
    for kind in ("uplink", "rounds"):
        fig, ax = plt.subplots(figsize=SIZE, dpi=DPI)
        for s in series:
            if kind == "uplink":  # log x: round 0 (nothing sent yet) cannot be drawn
                pts = [(x, y) for x, y in zip(s.uplink_mb, s.accuracy, strict=True) if x > 0]
            else:
                pts = list(zip(s.rounds, s.accuracy, strict=True))
            if pts:
                xs, ys = zip(*pts, strict=True)
                ax.plot(xs, ys, marker="." if len(xs) < 30 else None, linewidth=1.2, label=s.label)
        if target is not None:
            ax.axhline(target, color="grey", linestyle="--", linewidth=0.8, label=f"target {target:g}")
        if kind == "uplink":
            ax.set_xscale("log")
            ax.set_xlabel("cumulative uplink MB (log)")
        else:
            ax.set_xlabel("round")
        ax.set_ylabel("test accuracy")
        ax.set_title(f"{dataset}: accuracy vs {'uplink MB' if kind == 'uplink' else 'rounds'}", fontsize=10)
        ax.grid(True, alpha=0.3, which="both")
        ax.legend(fontsize=7, loc="best")
        fig.tight_layout()
        path = out_dir / f"{file_stem(dataset)}_acc_vs_{kind}.png"
        fig.savefig(path, dpi=DPI)
        plt.close(fig)
        paths.append(path)
    return paths


def file_stem(dataset: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", dataset)
