"""Best fp32 baseline, same-strategy ratios and medians over seeds, on synthetic run dirs with known answers."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest

from fedcompress.cli import main
from fedcompress.config import RunConfig, defaults
from fedcompress.studies.baselines import FIXED, STRATEGY_KEYS, STRATEGY_PARAMS, strategy_label
from fedcompress.studies.rows import build_rows, load_runs
from fedcompress.studies.seeds import Spread, spread

from .conftest import write_run
from .strategies_study import CELLS, TARGET, TOPK, write_study

FEDAVGM = "FedAvgM (server lr 1.0, momentum 0.9)"


@pytest.fixture(scope="module")
def report(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[tuple[str, str], dict[str, str]]]:
    root = write_study(tmp_path_factory.mktemp("ratios"))
    assert main(["study", "report", str(root), "--out", str(root / "report")]) == 0
    with open(root / "report" / "report.csv", newline="") as f:
        rows = {(r["uplink"], r["strategy"]): r for r in csv.DictReader(f)}
    return root, rows


def _mb(reaches: list[int | None], per_round_bytes: int) -> list[float]:
    return [n * per_round_bytes / 1e6 for n in reaches if n is not None]


def test_spread_is_median_and_min_max() -> None:
    assert spread([9.0, 3.0, 5.0, None]) == Spread(5.0, 3.0, 9.0, 3)
    assert spread([2.0, 4.0]) == Spread(3.0, 2.0, 4.0, 2)  # two seeds: the median is the mean
    assert spread([None]) is None
    assert Spread(5.0, 3.0, 9.0, 3).err == (2.0, 4.0)


def test_best_baseline_is_the_cheapest_fp32_that_reached_in_every_seed(report: tuple) -> None:
    """FedAvgM needs half FedAvg's uplink; FedAdam is cheaper still in its two seeds but missed the third."""
    root, rows = report
    assert {r["best_baseline"] for r in rows.values()} == {f"fp32 {FEDAVGM}"}
    adam = rows[("identity", "FedAdam (server lr 0.01)")]
    assert adam["reached"] == "2" and float(adam["uplink_mb_to_target"]) < float(
        rows[("identity", FEDAVGM)]["uplink_mb_to_target"]
    )
    md = (root / "report" / "report.md").read_text()
    assert f"Best fp32 baseline: **fp32 {FEDAVGM}**: 0.3 MB uplink to the target" in md
    assert "- fp32 FedAdam (server lr 0.01): reached the target in 2/3 seeds" in md
    assert "- fp32 FedAvg: 0.6 MB (2.00x the best)" in md


def test_ratios_against_best_and_same_strategy_come_from_medians(report: tuple) -> None:
    _, rows = report
    fedavg_up = _mb(CELLS["fp32-fedavg"][2], 100_000)  # 0.6, 0.5, 0.7
    fedavgm_up = _mb(CELLS["fp32-fedavgm"][2], 100_000)  # 0.3, 0.4, 0.3
    topk_up = _mb(CELLS["topk-fedavg"][2], 1_000)  # 0.008, 0.006, 0.020: median 0.008, mean 0.0113
    row = rows[(TOPK, "FedAvg")]
    assert float(row["round_to_target"]) == 8  # the mean of 8, 6, 20 would be 11.3
    assert (row["round_to_target_min"], row["round_to_target_max"]) == ("6", "20")
    assert float(row["uplink_mb_to_target"]) == pytest.approx(0.008)
    best = 0.008 / sorted(fedavgm_up)[1]
    assert float(row["uplink_ratio_vs_best"]) == pytest.approx(best, rel=1e-5)
    assert float(row["uplink_ratio_vs_same_strategy"]) == pytest.approx(
        0.008 / sorted(fedavg_up)[1], rel=1e-5
    )
    assert row["same_strategy_baseline"] == "fp32 FedAvg"
    assert float(row["uplink_ratio_vs_best"]) != pytest.approx(
        sum(topk_up) / 3 / (sum(fedavgm_up) / 3), rel=1e-3
    )  # not means
    # total = median over seeds of (up + down) per seed, then divided by the baseline's median total
    total = sorted(n * (1_000 + 100_000) / 1e6 for n in CELLS["topk-fedavg"][2] if n)[1]
    assert float(row["total_mb_to_target"]) == pytest.approx(total)
    assert float(row["total_ratio_vs_best"]) == pytest.approx(total / 0.6, rel=1e-5)
    # fp32 rows against the best: FedAvg costs twice FedAvgM; the FedAdam row has no same-strategy reference
    assert float(rows[("identity", "FedAvg")]["uplink_ratio_vs_best"]) == pytest.approx(2.0)
    assert rows[("identity", "FedAdam (server lr 0.01)")]["uplink_ratio_vs_same_strategy"] == ""


def test_headline_names_the_best_pipeline_against_the_best_baseline(report: tuple) -> None:
    root, rows = report
    md = (root / "report" / "report.md").read_text()
    head = next(line for line in md.splitlines() if line.startswith("- **digits:**"))
    ratio = float(rows[(TOPK, FEDAVGM)]["uplink_ratio_vs_best"])
    assert f"`{TOPK} / identity` with {FEDAVGM} reaches accuracy {TARGET:g}" in head
    assert (
        f"**{ratio:.4f}" in head and f"best fp32 baseline, fp32 {FEDAVGM} (0.004 MB against 0.3 MB)" in head
    )
    assert "round 4 [4–5], median of 3 seeds" in head
    table_head = next(line for line in md.splitlines() if line.startswith("| pipeline"))
    assert "| strategy |" in table_head and "uplink ratio vs same-strategy fp32" in table_head


def test_headline_when_only_baselines_ran(tmp_path: Path) -> None:
    from fedcompress.studies.cells import headline

    base = {"dataset": "digits", "partitioning": "iid", "num-partitions": 4, "clients-per-round": 2}
    for strategy, reach in (("fedavg", 3), ("fedavgm", 2)):
        write_run(tmp_path / strategy, {**base, "compression": "none", "strategy": strategy}, [0.1] * reach + [0.6],
                  1000, 1000)  # fmt: skip
    _, runs, _ = load_runs(tmp_path)
    rows = build_rows(runs, {"digits": 0.5})["digits"]
    assert "only fp32 baselines ran; the best is fp32 FedAvgM (server lr 1.0, momentum 0.9)" in headline(
        "digits", rows
    )


def test_no_fp32_reached_in_every_seed_means_no_ratios(tmp_path: Path) -> None:
    base = {"dataset": "digits", "partitioning": "iid", "num-partitions": 4, "clients-per-round": 2}
    for seed, accs in enumerate(([0.1, 0.6], [0.1, 0.2])):
        write_run(tmp_path / f"fp32-{seed}", {**base, "uplink": "identity", "downlink": "identity", "seed": seed},
                  accs, 1000, 1000)  # fmt: skip
        write_run(tmp_path / f"q8-{seed}", {**base, "uplink": "uniform(8)", "downlink": "identity", "seed": seed},
                  [0.1, 0.6], 250, 1000)  # fmt: skip
    _, runs, _ = load_runs(tmp_path)
    rows = build_rows(runs, {"digits": 0.5})["digits"]
    assert all(r.baseline is None and r.ratio("uplink", r.baseline) is None for r in rows)


# Old single-baseline studies: the numbers main (04de940) printed for this study, before medians and baselines.
OLD_BASE = {"dataset": "digits", "partitioning": "iid", "num-partitions": 4, "clients-per-round": 2,
            "num-server-rounds": 8}  # fmt: skip
T, D = "topk(0.01) > ef > uniform(4) > entropy", "topk(0.1) > uniform(4) > entropy"
OLD_CELLS = [  # (uplink, downlink, seed, accuracies, uplink bytes, downlink bytes per round)
    ("identity", "identity", 0, [0.1, 0.3, 0.45, 0.55, 0.6, 0.62], 400_000, 400_000),
    ("identity", "identity", 1, [0.1, 0.2, 0.40, 0.48, 0.52, 0.61], 400_000, 400_000),
    (T, "identity", 0, [0.1, 0.2, 0.3, 0.45, 0.51, 0.58], 9_000, 400_000),
    (T, "identity", 1, [0.1, 0.2, 0.3, 0.40, 0.49, 0.50], 9_500, 400_000),
    (T, D, 0, [0.1, 0.2, 0.3, 0.45, 0.49, 0.53], 9_000, 30_000),
    ("fp16", "identity", 0, [0.1, 0.2, 0.5, 0.55, 0.6, 0.6], 200_000, 400_000),
    ("fp16", "identity", 1, [0.1, 0.2, 0.3, 0.35, 0.4, 0.45], 200_000, 400_000),
]
# (uplink, downlink) -> round_to_target, uplink MB, total MB, uplink ratio, total ratio, final accuracy
OLD_NUMBERS = {
    ("identity", "identity"): ("3.5", "1.4", "2.8", "1", "1", "0.615"),
    ("fp16", "identity"): ("2", "0.4", "1.2", "0.285714", "0.428571", "0.525"),
    (T, "identity"): ("4.5", "0.04175", "1.84175", "0.0298214", "0.657768", "0.54"),
    (T, D): ("5", "0.045", "0.195", "0.0321429", "0.0696429", "0.53"),
}


def test_an_old_single_baseline_study_keeps_its_numbers(tmp_path: Path) -> None:
    for i, (up, down, seed, accs, ub, db) in enumerate(OLD_CELLS):
        write_run(
            tmp_path / f"c{i}", {**OLD_BASE, "uplink": up, "downlink": down, "seed": seed}, accs, ub, db
        )
    index = {
        "study": {"name": "old", "targets": {"digits": 0.5}},
        "cells": [{"id": f"c{i}"} for i in range(7)],
    }
    (tmp_path / "study.json").write_text(json.dumps(index))
    assert main(["study", "report", str(tmp_path), "--out", str(tmp_path / "r")]) == 0
    with open(tmp_path / "r" / "report.csv", newline="") as f:
        got = {
            (r["uplink"], r["downlink"]): (
                r["round_to_target"], r["uplink_mb_to_target"], r["total_mb_to_target"],
                r["uplink_ratio_vs_best"], r["total_ratio_vs_best"], r["final_acc_median"],
            )
            for r in csv.DictReader(f)
        }  # fmt: skip
    assert got == OLD_NUMBERS
    md = (tmp_path / "r" / "report.md").read_text()
    assert "Best fp32 baseline: **fp32 FedAvg**" in md and "| strategy |" not in md


def test_strategy_labels_follow_the_registry() -> None:
    """The label says what ran: FedAvgM's fixed server lr is still what the registry passes."""
    from fedcompress.flower.strategies import make_strategy

    fedavgm = make_strategy(RunConfig(strategy="fedavgm", server_momentum=0.7))
    assert (fedavgm.server_learning_rate, fedavgm.server_momentum) == (FIXED["fedavgm"][0][1], 0.7)
    assert make_strategy(RunConfig(strategy="fedadam", server_learning_rate=0.003)).eta == 0.003
    cfg = {**defaults(), "strategy": "fedadam", "server-learning-rate": 0.003}
    assert strategy_label(cfg) == "FedAdam (server lr 0.003)"
    assert set(STRATEGY_KEYS) <= set(RunConfig.keys())
    assert {k for ps in STRATEGY_PARAMS.values() for k, _ in ps} <= set(RunConfig.keys())
