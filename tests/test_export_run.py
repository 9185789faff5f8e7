"""`fedcompress export`: a run's final model written as an artefact whose size is what lies on disk."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
import torch

from fedcompress.cli import main
from fedcompress.config import RunConfig, defaults
from fedcompress.errors import ConfigError
from fedcompress.export import export_from_run
from fedcompress.task import make_model


def _run_dir(tmp_path: Path, **kw: object) -> tuple[Path, RunConfig]:
    cfg = RunConfig.from_run_config({**defaults(), **kw})
    run = tmp_path / "run"
    (run / "models").mkdir(parents=True)
    (run / "config.json").write_text(json.dumps({"config": cfg.as_run_config()}))
    return run, cfg


def test_export_formats_sizes_and_accuracy(tmp_path: Path) -> None:
    run, cfg = _run_dir(tmp_path)
    torch.save(make_model(cfg).state_dict(), run / "models" / "global.pt")
    sizes = {}
    for fmt in ("state_dict", "torchscript", "int8"):
        out = tmp_path / f"m.{fmt}"
        rep = export_from_run(run, out, fmt)
        assert rep["bytes_on_disk"] == os.path.getsize(out)
        assert 0.0 <= rep["accuracy"] <= 1.0 and rep["latency_ms_p50"] > 0
        sizes[fmt] = rep["bytes_on_disk"]
    assert sizes["int8"] < sizes["torchscript"]


def test_export_a_tier_through_the_cli(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    run, cfg = _run_dir(tmp_path, tiers="full=1.0 tiny=0.5/int8", **{"tier-mix": "full=0.5 tiny=0.5"})
    torch.save(make_model(cfg, width=0.5).state_dict(), run / "models" / "tiny.pt")
    assert (
        main(["export", str(run), "--tier", "tiny", "--format", "int8", "--out", str(tmp_path / "t.pt")]) == 0
    )
    report = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert report["tier"] == "tiny" and report["params"] == sum(
        p.numel() for p in make_model(cfg, 0.5).parameters()
    )
    with pytest.raises(ConfigError, match="not in this run"):
        export_from_run(run, tmp_path / "x.pt", "int8", tier="huge")
