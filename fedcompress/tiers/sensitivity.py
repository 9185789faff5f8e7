"""Per-layer sensitivity: accuracy when one layer alone is pruned (structured) or stored with fewer bits.

It tells an operator which layers a budget can cut cheaply, and explains the recipe `choose_recipe` picks.
Pruning keeps each layer's most important channels (the same ranking the delivery pipeline uses); bits are
k-means weight sharing of that layer's weight tensor (2^bits shared values), the rest of the model untouched.
No fine-tuning: this is the raw sensitivity, the usual input to allocation (Han et al. 2015; Li et al. 2017).
"""

from __future__ import annotations

import copy
import csv
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from fedcompress.errors import ConfigError
from fedcompress.quantization import share_tensor
from fedcompress.tiers.delivery import accuracy, shrink, teacher_channels

RATIOS: tuple[float, ...] = (0.0, 0.25, 0.5, 0.75, 0.875, 0.9375)
BITS: tuple[int, ...] = (1, 2, 3, 4, 6, 8)


@dataclass(frozen=True)
class Row:
    layer: str
    kind: str  # "prune" (value = ratio of channels removed) or "bits" (value = bits per weight)
    value: float
    accuracy: float


def layer_sensitivity(
    model: nn.Module,
    scores: Mapping[str, torch.Tensor],
    val: tuple[torch.Tensor, torch.Tensor],
    *,
    ratios: Sequence[float] = RATIOS,
    bits: Sequence[int] = BITS,
) -> list[Row]:
    """Accuracy on `val` for every (layer, prune ratio) and (layer, bits), one layer changed at a time."""
    if any(not 0 <= r < 1 for r in ratios):
        raise ConfigError(f"prune ratios must be in [0, 1), got {list(ratios)}")
    if any(isinstance(b, bool) or not isinstance(b, int) or not 1 <= b <= 8 for b in bits):
        raise ConfigError(f"bits must be integers in [1, 8], got {list(bits)}")
    model = model.eval()
    full = teacher_channels(model)
    rows: list[Row] = []
    for layer, c in full.items():
        for r in ratios:
            kept = {**full, layer: max(1, round(c * (1 - r)))}
            rows.append(Row(layer, "prune", float(r), accuracy(shrink(model, kept, scores), *val)))
        for b in bits:
            shared = copy.deepcopy(model)
            weight = getattr(shared, layer).weight
            with torch.no_grad():
                weight.copy_(share_tensor(weight, b, keep_zero=False).decode())
            rows.append(Row(layer, "bits", float(b), accuracy(shared, *val)))
    return rows


def _table(rows: Sequence[Row], kind: str) -> tuple[list[float], dict[str, dict[float, float]]]:
    values = sorted({r.value for r in rows if r.kind == kind})
    table: dict[str, dict[float, float]] = {}
    for r in rows:
        if r.kind == kind:
            table.setdefault(r.layer, {})[r.value] = r.accuracy
    return values, table


def to_markdown(rows: Sequence[Row], reference: float | None = None) -> str:
    """Two tables (accuracy vs prune ratio, accuracy vs bits), one row per layer."""
    out = ["## Per-layer sensitivity (one layer changed at a time, no fine-tuning)", ""]
    if reference is not None:
        out += [f"Unchanged model: accuracy {reference:.4f}.", ""]
    for kind, head, fmt in (
        ("prune", "channels removed", "{:.3g}"),
        ("bits", "bits per weight (k-means)", "{:g}"),
    ):
        values, table = _table(rows, kind)
        out.append(f"| layer \\ {head} | " + " | ".join(fmt.format(v) for v in values) + " |")
        out.append("|---|" + "---|" * len(values))
        for layer, accs in table.items():
            out.append(f"| {layer} | " + " | ".join(f"{accs[v]:.4f}" for v in values) + " |")
        out.append("")
    return "\n".join(out)


def write_report(rows: Sequence[Row], out_dir: Path, reference: float | None = None) -> dict[str, Path]:
    """sensitivity.md, sensitivity.csv and sensitivity.png in `out_dir`."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    out_dir.mkdir(parents=True, exist_ok=True)
    paths = {k: out_dir / f"sensitivity.{k}" for k in ("md", "csv", "png")}
    paths["md"].write_text(to_markdown(rows, reference))
    with paths["csv"].open("w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["layer", "kind", "value", "accuracy"])
        w.writerows((r.layer, r.kind, r.value, f"{r.accuracy:.6f}") for r in rows)
    fig, axes = plt.subplots(1, 2, figsize=(10, 4), sharey=True)
    for ax, kind, label in (
        (axes[0], "prune", "fraction of channels removed"),
        (axes[1], "bits", "bits per weight"),
    ):
        values, table = _table(rows, kind)
        for layer, accs in table.items():
            ax.plot(values, [accs[v] for v in values], marker="o", label=layer)
        if reference is not None:
            ax.axhline(reference, color="grey", linestyle="--", linewidth=1, label="unchanged")
        ax.set_xlabel(label)
        ax.grid(alpha=0.3)
    axes[1].invert_xaxis()
    axes[0].set_ylabel("accuracy")
    axes[0].legend()
    fig.suptitle("Per-layer sensitivity (one layer at a time, no fine-tuning)")
    fig.tight_layout()
    fig.savefig(paths["png"], dpi=120)
    plt.close(fig)
    return paths
