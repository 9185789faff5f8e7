"""The per-tier table reads a real (in-process) tiered run: exported sizes, downlink per tier, accuracies."""

from __future__ import annotations

from pathlib import Path

from fedcompress.flower.serverapp import _save_models
from fedcompress.studies import tier_table
from fedcompress.task import dataset, make_model
from fedcompress.training import evaluate
from tests.flower.test_tiered import _cfg, _run


def test_tier_table_on_a_tiered_run(tmp_path: Path) -> None:
    cfg = _cfg(**{"tier-training": "distill"})
    strategy, recorder, _ = _run(cfg, tmp_path, rounds=3)
    ds = dataset(cfg)
    accs = {f"accuracy/{t}": evaluate(m, ds.x_test, ds.y_test)[1] for t, m in strategy.tier_models().items()}
    for r in (1, 2, 3):
        recorder.end_round(r, {"accuracy": accs["accuracy/full"], **accs})
    _save_models(recorder.run_dir, strategy, make_model(cfg))
    recorder.finish()
    out = tmp_path / "t.md"
    text = tier_table.main(
        [str(recorder.run_dir), str(recorder.run_dir), "--out", str(out), "--fgsm", "0.05"]
    )
    assert out.read_text() == text
    assert out.with_suffix(".png").stat().st_size > 1000
    csv_rows = out.with_suffix(".csv").read_text().splitlines()
    assert csv_rows[0].startswith("tier,width,stored_as") and len(csv_rows) == 3
    rows = tier_table.tier_rows(recorder.run_dir, tmp_path, fgsm_eps=0.05)
    for r in rows:  # a perturbation along the loss gradient costs accuracy
        assert 0 <= r["fgsm_accuracy"] < r["accuracy_fp32"]
        assert (
            r["tier_bytes_per_round"] > r["downlink_bytes_per_round"] > 0 and r["uplink_bytes_per_round"] > 0
        )
    ref = {"bytes_per_round": tier_table.bytes_per_round(recorder.run_dir) / 2}
    assert "2.00x the single-tier run's" in tier_table.federation_lines(recorder.run_dir, ref)
    full, tiny = rows
    assert full["stored_as"] == "torchscript" and tiny["stored_as"] == "int8"
    # TorchScript code (~30 KB) dominates these 14k-parameter digits models; on FEMNIST weights dominate
    assert tiny["stored_bytes"] < full["stored_bytes"] and tiny["params"] * 3 < full["params"]
    assert 0 < tiny["downlink_bytes_per_round"] < full["downlink_bytes_per_round"]
    assert abs(full["accuracy_stored"] - accs["accuracy/full"]) < 1e-9
    assert "| tiny | 0.5 | int8 |" in text and "trained other ways" in text and "FGSM" in text
