"""The report on synthetic run dirs: every number is recomputed here from the stored per-round rows."""

from __future__ import annotations

import csv
import json
import re
import statistics
from pathlib import Path
from typing import Any

import pytest
from PIL import Image

from fedcompress.cli import main

from .conftest import write_run

BASE = {"dataset": "digits", "partitioning": "iid", "num-partitions": 4, "clients-per-round": 2,
        "num-server-rounds": 6, "downlink": "identity"}  # fmt: skip
TOPK = "topk(0.01) > ef > uniform(4) > entropy"
# (uplink, seed) -> accuracy per round (round 0 first); fp32 reaches 0.5 at rounds 3 / 4, topk at 4 / 5
CURVES = {
    ("identity", 0): [0.1, 0.3, 0.45, 0.55, 0.6, 0.62, 0.63],
    ("identity", 1): [0.1, 0.2, 0.40, 0.48, 0.52, 0.61, 0.64],
    (TOPK, 0): [0.1, 0.2, 0.30, 0.45, 0.51, 0.58, 0.60],
    (TOPK, 1): [0.1, 0.2, 0.30, 0.40, 0.49, 0.50, 0.59],
    ("fp16", 0): [0.1, 0.2, 0.25, 0.3, 0.35, 0.4, 0.45],  # never reaches the target
}
UP = {"identity": 400_000, TOPK: 9_000, "fp16": 200_000}
DOWN = 400_000
TARGET = 0.5


def _rows(run_dir: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]


def _to_target(run_dir: Path) -> tuple[int, float, float] | None:
    for r in _rows(run_dir):
        if r["accuracy"] is not None and r["accuracy"] >= TARGET:
            return r["round"], r["uplink_bytes_cum"] / 1e6, r["downlink_bytes_cum"] / 1e6
    return None


@pytest.fixture(scope="module")
def study(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, list[Path]]]:
    root = tmp_path_factory.mktemp("study")
    dirs: dict[str, list[Path]] = {}
    cells = []
    for (uplink, seed), accs in CURVES.items():
        cell_id = f"digits_{len(cells)}"
        run = write_run(root / cell_id, {**BASE, "uplink": uplink, "seed": seed}, accs, UP[uplink], DOWN)
        dirs.setdefault(uplink, []).append(run)
        cells.append({"id": cell_id})
    (root / "broken").mkdir()
    (root / "broken" / "FAILED").write_text("SimulationError: run did not complete (boom)\n")
    cells.append({"id": "broken"})
    index = {
        "study": {"name": "synthetic", "label": "synthetic", "description": "",
                  "targets": {"digits": TARGET}},
        "runner_environment": {"flwr": "1.42.0", "torch": "2.x", "git_commit": "abc1234", "cpu": "Test CPU",
                               "cpu_count": 2, "memory_gb": 8, "os": "Linux"},
        "cells": cells,
    }  # fmt: skip
    (root / "study.json").write_text(json.dumps(index))
    assert main(["study", "report", str(root), "--out", str(root / "report")]) == 0
    return root, dirs


def _md_table(md: str) -> dict[str, dict[str, str]]:
    lines = [line for line in md.splitlines() if line.startswith("|")]
    head = [c.strip() for c in lines[0].strip("|").split("|")]
    rows = [[c.strip() for c in line.strip("|").split("|")] for line in lines[2:]]
    return {r[0]: dict(zip(head, r, strict=True)) for r in rows}


def _spread(cell: str) -> tuple[float, float, float]:
    """`1.4 [1.2–1.6]` -> (1.4, 1.2, 1.6); a bare median (seeds agree) -> (m, m, m)."""
    parts = [float(x) for x in re.split(r" \[|–|\]", cell) if x]
    return (parts[0], parts[0], parts[0]) if len(parts) == 1 else (parts[0], parts[1], parts[2])


def _csv(path: Path) -> dict[str, dict[str, str]]:
    with open(path, newline="") as f:
        return {r["uplink"]: r for r in csv.DictReader(f)}


def test_numbers_match_the_stored_rounds(study: tuple[Path, dict[str, list[Path]]]) -> None:
    root, dirs = study
    rows = _csv(root / "report" / "report.csv")
    fp32 = [_to_target(d) for d in dirs["identity"]]
    topk = [_to_target(d) for d in dirs[TOPK]]
    assert all(fp32) and all(topk)
    fp32_up, fp32_total = statistics.median(h[1] for h in fp32), statistics.median(h[1] + h[2] for h in fp32)
    topk_up, topk_total = statistics.median(h[1] for h in topk), statistics.median(h[1] + h[2] for h in topk)
    assert float(rows["identity"]["round_to_target"]) == pytest.approx(3.5)
    assert float(rows["identity"]["uplink_mb_to_target"]) == pytest.approx(fp32_up, rel=1e-5)
    assert float(rows[TOPK]["round_to_target"]) == pytest.approx(4.5)
    assert float(rows[TOPK]["uplink_mb_to_target"]) == pytest.approx(topk_up, rel=1e-5)
    assert float(rows[TOPK]["total_mb_to_target"]) == pytest.approx(topk_total, rel=1e-5)
    assert float(rows[TOPK]["uplink_ratio_vs_best"]) == pytest.approx(topk_up / fp32_up, rel=1e-5)
    assert float(rows[TOPK]["total_ratio_vs_best"]) == pytest.approx(topk_total / fp32_total, rel=1e-5)
    assert float(rows["identity"]["uplink_ratio_vs_best"]) == pytest.approx(1.0)
    # one strategy: the best baseline is fp32 FedAvg, and it is also the same-strategy one
    assert {r["best_baseline"] for r in rows.values()} == {"fp32 FedAvg"}
    assert rows[TOPK]["uplink_ratio_vs_same_strategy"] == rows[TOPK]["uplink_ratio_vs_best"]
    finals = [_rows(d)[-1]["accuracy"] for d in dirs[TOPK]]
    assert float(rows[TOPK]["final_acc_median"]) == pytest.approx(statistics.median(finals), rel=1e-5)
    assert float(rows[TOPK]["final_acc_min"]) == pytest.approx(min(finals), rel=1e-5)
    assert float(rows[TOPK]["final_acc_max"]) == pytest.approx(max(finals), rel=1e-5)
    assert rows[TOPK]["seeds"] == "0;1" and rows["fp16"]["reached"] == "0"
    assert rows["fp16"]["uplink_mb_to_target"] == "" and rows["fp16"]["uplink_ratio_vs_best"] == ""
    # median per-round seconds: the slow first round (Ray start-up) does not count
    assert float(rows["identity"]["seconds_per_round"]) == pytest.approx(1.0)


def test_markdown_agrees_with_csv(study: tuple[Path, dict[str, list[Path]]]) -> None:
    root, _ = study
    md = (root / "report" / "report.md").read_text()
    table, rows = _md_table(md), _csv(root / "report" / "report.csv")
    fp32 = table["fp32 FedAvg (identity / identity)"]
    topk = table[f"`{TOPK}` / `identity`"]
    for md_row, csv_row in ((fp32, rows["identity"]), (topk, rows[TOPK])):
        for column, key in (("uplink MB to target", "uplink_mb_to_target"), ("total MB to target",
                            "total_mb_to_target"), ("round to target", "round_to_target"),
                            ("final acc", "final_acc")):  # fmt: skip
            median, lo, hi = _spread(md_row[column])
            suffix = "_median" if key == "final_acc" else ""
            assert median == pytest.approx(float(csv_row[key + suffix]), rel=1e-3)
            assert (lo, hi) == pytest.approx(
                (float(csv_row[key + "_min"]), float(csv_row[key + "_max"])), rel=1e-3
            )
    ratio = float(topk["uplink ratio vs best fp32"].split()[0])
    assert ratio == pytest.approx(float(rows[TOPK]["uplink_ratio_vs_best"]), abs=1e-4)
    assert "uplink ratio vs same-strategy fp32" not in topk  # one strategy: the same numbers, not repeated
    assert table["`fp16` / `identity`"]["round to target"] == "not reached (0/1)"
    # headline: the best compressed pipeline's uplink ratio; environment; failed cell listed
    assert f"`{TOPK} / identity` reaches accuracy 0.5" in md and f"**{ratio:.4f}" in md
    assert "of the uplink bytes of the best fp32 baseline, fp32 FedAvg (" in md
    assert "Best fp32 baseline: **fp32 FedAvg**" in md
    assert "abc1234" in md and "Test CPU" in md and "flwr 1.42.0" in md
    assert "`broken`: failed: SimulationError" in md


def test_plots_are_valid_pngs(study: tuple[Path, dict[str, list[Path]]]) -> None:
    root, _ = study
    md = (root / "report" / "report.md").read_text()
    for name in ("digits_acc_vs_uplink.png", "digits_acc_vs_rounds.png", "digits_mb_to_target.png"):
        path = root / "report" / name
        assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and f"]({name})" in md
        with Image.open(path) as img:
            img.verify()
        with Image.open(path) as img:
            assert img.size == (640, 400) or name.endswith("mb_to_target.png")


def test_report_without_runs_is_a_clear_error(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["study", "report", str(tmp_path)]) == 2
    assert "no complete run directories" in capsys.readouterr().err
