"""Write a model the way a device will store it, and report what it really costs: bytes on disk, parameters,
and single-thread CPU latency at batch 1 (the closest stand-in for a phone core we have on a server)."""

from __future__ import annotations

import os
import statistics
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Literal

import torch
from torch import nn

from fedcompress.errors import ConfigError
from fedcompress.quantization import quantize_int8, to_torchscript
from fedcompress.quantization._compat import quiet

Format = Literal["torchscript", "state_dict", "int8"]


@dataclass(frozen=True)
class ExportReport:
    path: str
    bytes_on_disk: int
    params: int
    latency_ms_p50: float
    threads: int = 1


def measure_latency_ms(
    model: nn.Module, example: torch.Tensor, *, runs: int = 30, warmup: int = 5, threads: int = 1
) -> float:
    """Median wall time of one forward pass at `threads` intra-op threads (restored afterwards)."""
    previous = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        times = []
        with torch.inference_mode(), quiet():
            for i in range(warmup + runs):
                t0 = time.perf_counter()
                model(example)
                if i >= warmup:
                    times.append((time.perf_counter() - t0) * 1000.0)
        return statistics.median(times)
    finally:
        torch.set_num_threads(previous)


def export_model(
    model: nn.Module,
    path: str | os.PathLike[str],
    fmt: Format = "torchscript",
    example_input: torch.Tensor | None = None,
    *,
    calibration: torch.Tensor | None = None,
    latency_runs: int = 30,
) -> ExportReport:
    """Serialize `model` to `path` and measure it.

    fmt: "state_dict" (`torch.save` of the weights; needs model code to load), "torchscript" (traced,
    self-contained), "int8" (post-training int8, calibrated on `calibration` or else `example_input`, then
    TorchScript). Latency is measured on the artefact loaded back from disk with batch 1, one thread.
    `params` counts the float model's parameters (an int8 module exposes none).
    """
    if example_input is None:
        raise ConfigError("export_model needs example_input (a batch of real-shaped inputs)")
    if fmt not in ("torchscript", "state_dict", "int8"):
        raise ConfigError(f"fmt must be 'torchscript', 'state_dict' or 'int8', got {fmt!r}")
    out = Path(path)
    out.parent.mkdir(parents=True, exist_ok=True)
    model = model.eval()
    params = sum(p.numel() for p in model.parameters())
    one = example_input[:1]
    if fmt == "state_dict":
        torch.save(model.state_dict(), out)
        runnable: nn.Module = model
    else:
        to_save = (
            quantize_int8(model, calibration if calibration is not None else example_input)
            if fmt == "int8"
            else model
        )
        with quiet():
            torch.jit.save(to_torchscript(to_save, one), str(out))
            runnable = torch.jit.load(str(out))
    latency = measure_latency_ms(runnable, one, runs=latency_runs)
    return ExportReport(str(out), os.path.getsize(out), params, latency, 1)


def load_run_model(run_dir: str | os.PathLike[str], tier: str | None = None) -> tuple[nn.Module, Any]:
    """A finished run's final model (`models/global.pt`, or `models/<tier>.pt`) rebuilt at its width, and its
    RunConfig."""
    import json

    from fedcompress.config import RunConfig
    from fedcompress.devices.config import parse_tier_config
    from fedcompress.task import make_model

    run = Path(run_dir)
    if not (run / "config.json").exists():
        raise ConfigError(f"{run} is not a run directory (no config.json)")
    cfg = RunConfig.from_run_config(json.loads((run / "config.json").read_text())["config"], strict=False)
    width = cfg.width
    if cfg.tiers:
        tiers, _ = parse_tier_config(cfg.tiers, cfg.tier_mix)
        tier = tier or next(iter(tiers))
        if tier not in tiers:
            raise ConfigError(f"tier {tier!r} not in this run; its tiers: {list(tiers)}")
        width, name = tiers[tier].width, tier
    elif tier not in (None, "", "global"):
        raise ConfigError(f"run {run} has no tiers; export its global model (omit --tier)")
    else:
        name = "global"
    weights = run / "models" / f"{name}.pt"
    if not weights.exists():
        raise ConfigError(f"{weights} not found: the run did not save its final model")
    model = make_model(cfg, width=width)
    model.load_state_dict(torch.load(weights, weights_only=True))
    return model.eval(), cfg


def export_from_run(
    run_dir: str | os.PathLike[str], out: str | os.PathLike[str], fmt: Format, tier: str | None = None
) -> dict[str, Any]:
    """Export a run's model and measure it: bytes on disk, params, CPU latency, and the artefact's own test
    accuracy (for int8, the quantized model's)."""
    from fedcompress.task import dataset
    from fedcompress.training import evaluate

    model, cfg = load_run_model(run_dir, tier)
    ds = dataset(cfg)
    calib = torch.from_numpy(ds.x_train[:256].copy())
    report = export_model(model, out, fmt, calib, calibration=calib)
    runnable = torch.load(out, weights_only=True) if fmt == "state_dict" else torch.jit.load(str(out))
    if fmt == "state_dict":
        model.load_state_dict(runnable)
        runnable = model
    with quiet():
        _, acc = evaluate(runnable, ds.x_test, ds.y_test)
    return {**asdict(report), "format": fmt, "tier": tier or "", "accuracy": acc}
