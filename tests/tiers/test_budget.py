"""Budgets: clear refusals before any work, a NetAdapt search that fits the measured artefact, the command."""

from __future__ import annotations

import json
import os

import pytest
import torch

from fedcompress.config import RunConfig
from fedcompress.devices import DeviceProfile
from fedcompress.errors import ConfigError
from fedcompress.tiers import budget as budget_mod
from fedcompress.tiers import commands
from fedcompress.tiers.budget import BudgetError, DeviceBudget, choose_recipe, search_recipe


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"memory-kb": 64, "latency-ms": 1, "colour": "red"}, "unknown device budget fields ['colour']"),
        ({"memory-kb": 0, "latency-ms": 1}, "memory-kb must be a number > 0, got 0"),
        ({"memory-kb": 64, "latency-ms": -1}, "latency-ms must be a number > 0, got -1"),
        ({"memory-kb": 64, "latency-ms": 1, "downlink-mbps": 0}, "downlink-mbps must be a number > 0"),
        ({"memory-kb": 64, "memory-mb": 1, "latency-ms": 1}, "exactly one of memory-kb or memory-mb"),
        ({"memory-kb": 64}, "latency-ms is missing"),
        ({"memory-kb": "lots", "latency-ms": 1}, "memory-kb must be a number > 0, got 'lots'"),
    ],
)
def test_bad_budgets_name_the_value_and_what_is_accepted(fields, message):
    with pytest.raises(ConfigError) as err:
        DeviceBudget.from_mapping(fields)
    assert message in str(err.value)


def test_downlink_caps_the_bytes_and_a_profile_needs_an_inference_limit():
    b = DeviceBudget.from_mapping(
        {"memory-mb": 1, "latency-ms": 2, "downlink-mbps": 0.08, "max-download-s": 2}
    )
    assert b.max_bytes == 20_000  # 0.08 Mbit/s = 10,000 B/s for 2 s, below 1 MiB
    profile = DeviceProfile.from_node_config({"device-memory-mb": 1, "device-downlink-mbps": 1})
    with pytest.raises(ConfigError, match="pass latency_ms"):
        choose_recipe(
            torch.nn.Linear(1, 1), profile, torch.zeros(1), (torch.zeros(1), torch.zeros(1)), family="cnn8"
        )


def test_an_impossible_budget_names_the_smallest_achievable_before_any_training(teacher, digits, monkeypatch):
    def no_training(*_a, **_k):
        raise AssertionError("trained before refusing an impossible budget")

    monkeypatch.setattr(budget_mod, "make_device_model", no_training)
    monkeypatch.setattr(budget_mod, "distill", no_training)
    x, _, xt, yt = digits
    with pytest.raises(BudgetError) as err:
        search_recipe(
            teacher, DeviceBudget(100, 1000.0), x[:100], (xt, yt), family="cnn8", storages=("int8",)
        )
    msg = str(err.value)
    assert "smallest achievable artefact is" in msg and "the fastest" in msg and "<= 100 B artefact" in msg


def test_the_search_prunes_until_the_measured_artefact_fits(teacher, digits):
    x, _, xt, yt = digits
    budget = DeviceBudget(16 * 1024, 1000.0)  # full int8 is bigger; the floor is smaller
    found = search_recipe(
        teacher, budget, x[:128], (xt[:200], yt[:200]), family="cnn8", storages=("int8",), epochs=1
    )
    dm = found.device_model
    assert dm.nbytes <= budget.max_bytes == 16 * 1024
    assert sum(dm.recipe.channels.values()) < 16 + 32 + 64
    assert any(t["stage"] == "adapt" for t in found.trace)
    assert dm.accuracy > 0.3  # far above chance (0.1) after pruning and a short distillation


def _finished_run(tmp_path, teacher):
    run = tmp_path / "run"
    (run / "models").mkdir(parents=True)
    cfg = RunConfig(dataset="digits", seed=0, distill_proxy_fraction=0.1).as_run_config()
    (run / "config.json").write_text(json.dumps({"config": cfg}))
    (run / "summary.json").write_text(json.dumps({"status": "complete"}))
    torch.save(teacher.state_dict(), run / "models" / "global.pt")
    return run


@pytest.mark.parametrize(
    ("change", "extra", "message"),
    [
        ("no-models", [], "holds no model"),
        ("failed", [], "did not complete"),
        ("ok", ["--memory-kb", "0"], "memory-kb must be a number > 0, got 0.0"),
        ("ok", ["--proxy-fraction", "0.01"], "proxy set too small: 14 examples"),
        ("ok", ["--storages", "int3"], "storage must be"),
        ("full-out", [], "already exists and is not an empty folder"),
    ],
)
def test_the_command_refuses_bad_input_before_any_work(tmp_path, teacher, capsys, change, extra, message):
    run = _finished_run(tmp_path, teacher)
    out = tmp_path / "out"
    if change == "no-models":
        (run / "models" / "global.pt").unlink()
    if change == "failed":
        (run / "summary.json").write_text(json.dumps({"status": "failed"}))
    if change == "full-out":
        out.mkdir()
        (out / "keep.txt").write_text("mine")
    argv = [str(run), "--memory-kb", "16", "--latency-ms", "1000", "--out", str(out), *extra]
    assert commands.main(argv) == 2
    assert message in capsys.readouterr().err
    assert not out.exists() or sorted(os.listdir(out)) == ["keep.txt"]
    assert not [p for p in tmp_path.iterdir() if p.name.endswith(".part")]


def test_the_command_writes_artefact_recipe_and_report_and_one_summary_line(tmp_path, teacher, capsys):
    run, out = _finished_run(tmp_path, teacher), tmp_path / "dm"
    argv = [str(run), "--memory-kb", "14", "--latency-ms", "1000", "--out", str(out), "--storages", "int8"]
    assert commands.main([*argv, "--epochs", "1"]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    assert lines[0].startswith("[device-model]") and lines[-1].startswith("device-model: ")
    assert sorted(os.listdir(out)) == [
        "model.bin",
        "recipe.json",
        "sensitivity.csv",
        "sensitivity.md",
        "sensitivity.png",
    ]
    summary = json.loads((out / "recipe.json").read_text())
    assert summary["bytes"] == os.path.getsize(out / "model.bin") <= 14 * 1024
    assert summary["recipe"]["storage"] == "int8" and 0 < summary["accuracy"] <= 1
    assert "| conv2 |" in (out / "sensitivity.md").read_text()
