"""A synthetic multi-strategy study (three seeds): FedAvgM is the cheapest fp32 baseline that reached the target
in every seed; FedAdam is cheaper in the seeds it reached but missed one, so it cannot be the reference."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from .conftest import write_run

TARGET = 0.5
TOPK = "topk(0.01) > ef > uniform(4) > entropy"
BASE = {"dataset": "digits", "partitioning": "iid", "num-partitions": 4, "clients-per-round": 2,
        "num-server-rounds": 25}  # fmt: skip
FP32 = {"uplink": "identity", "downlink": "identity"}
FEDAVG = {"strategy": "fedavg"}
FEDAVGM = {"strategy": "fedavgm", "server-momentum": 0.9}
FEDADAM = {"strategy": "fedadam", "server-learning-rate": 0.01}
UP = {"identity": 100_000, TOPK: 1_000}  # bytes per round; downlink: 100_000 every round
DOWN = 100_000
# (pipeline settings, strategy) -> the round each seed (0, 1, 2) first reaches the target (None: never)
CELLS: dict[str, tuple[dict[str, Any], dict[str, Any], list[int | None]]] = {
    "fp32-fedavg": (FP32, FEDAVG, [6, 5, 7]),
    "fp32-fedavgm": (FP32, FEDAVGM, [3, 4, 3]),
    "fp32-fedadam": (FP32, FEDADAM, [2, 2, None]),
    "topk-fedavg": ({"uplink": TOPK, "downlink": "identity"}, FEDAVG, [8, 6, 20]),  # median 8, mean 11.3
    "topk-fedavgm": ({"uplink": TOPK, "downlink": "identity"}, FEDAVGM, [4, 4, 5]),
}


def curve(reach: int | None, rounds: int = 25) -> list[float]:
    """Accuracy per round (round 0 first): below the target until `reach`, at 0.6 from then on."""
    return [0.6 if reach is not None and n >= reach else 0.1 + 0.01 * n for n in range(rounds + 1)]


def write_study(root: Path) -> Path:
    cells = []
    for name, (pipes, strategy, reaches) in CELLS.items():
        for seed, reach in enumerate(reaches):
            cell_id = f"{name}-s{seed}"
            overrides = {**BASE, **pipes, **strategy, "seed": seed}
            write_run(root / cell_id, overrides, curve(reach), UP[pipes["uplink"]], DOWN)
            cells.append({"id": cell_id})
    index = {"study": {"name": "ratios", "label": "ratios", "targets": {"digits": TARGET}}, "cells": cells}
    (root / "study.json").write_text(json.dumps(index))
    return root
