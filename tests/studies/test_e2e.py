"""One real study end to end on Flower's simulation engine: `study run --quick`, `study report`, resume.

The --quick variant of femnist_uplink is 2 cells (fp32 FedAvg and uniform(8) uplink) x 3 rounds of the
embedded digits data; each cell pays ~20-30 s of Flower/Ray start-up, so this is the slow test of the folder.
"""

from __future__ import annotations

import csv
import json
import time
from pathlib import Path

import pytest
from PIL import Image

from fedcompress.cli import main
from fedcompress.ledger.recorder import rounds_to_target

QUICK = ["study", "run", "femnist_uplink", "--quick", "--no-progress", "--out"]


@pytest.fixture(scope="module")
def quick_study(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("quick") / "femnist_uplink-quick"
    assert main([*QUICK, str(out)]) == 0
    assert main(["study", "report", str(out)]) == 0
    return out


def _metrics(run_dir: Path) -> list[dict]:
    return [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]


def test_quick_study_runs_and_reports(quick_study: Path) -> None:
    index = json.loads((quick_study / "study.json").read_text())
    assert [c["status"] for c in index["cells"]] == ["complete", "complete"]
    target = index["study"]["targets"]["digits"]
    runs = {c["overrides"]["uplink"]: _metrics(quick_study / c["id"]) for c in index["cells"]}
    assert set(runs) == {"identity", "uniform(8)"}
    assert all([r["round"] for r in rows] == [0, 1, 2, 3] for rows in runs.values())
    with open(quick_study / "report.csv", newline="") as f:
        table = {r["uplink"]: r for r in csv.DictReader(f)}
    for uplink, rows in runs.items():
        row = table[uplink]
        assert float(row["final_acc_median"]) == pytest.approx(rows[-1]["accuracy"], rel=1e-5)
        assert float(row["run_uplink_mb"]) == pytest.approx(rows[-1]["uplink_bytes_cum"] / 1e6, rel=1e-5)
        hit = rounds_to_target(rows, target)
        assert int(row["reached"]) == (hit is not None)
        if hit:
            assert float(row["round_to_target"]) == hit["round"]
            assert float(row["uplink_mb_to_target"]) == pytest.approx(hit["uplink_mb"], rel=1e-5)
    fp32, q8 = (rounds_to_target(runs[k], target) for k in ("identity", "uniform(8)"))
    if fp32 and q8:  # 8-bit uplink: about a quarter of the fp32 bytes
        ratio = float(table["uniform(8)"]["uplink_ratio_vs_best"])
        assert ratio == pytest.approx(q8["uplink_mb"] / fp32["uplink_mb"], rel=1e-5) and 0.2 < ratio < 0.35
    md = (quick_study / "report.md").read_text()
    assert "| fp32 FedAvg (identity / identity) | 0 |" in md
    assert "| `uniform(8)` / `identity` (preset light) | 0 |" in md
    assert f"| 0 | {float(table['uniform(8)']['final_acc_median']):.4f} |" in md  # one seed: no range
    assert "Git commit:" in md and "flwr 1.42" in md
    for name in ("digits_acc_vs_uplink.png", "digits_acc_vs_rounds.png"):
        with Image.open(quick_study / name) as img:
            img.verify()


def test_rerun_resumes_without_simulating(quick_study: Path, capsys: pytest.CaptureFixture[str]) -> None:
    t0 = time.monotonic()
    assert main([*QUICK, str(quick_study)]) == 0
    out = capsys.readouterr()
    assert "0 ran, 2 already complete, 0 failed" in out.out, (out.out, out.err)
    assert time.monotonic() - t0 < 30
