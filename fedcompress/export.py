"""Write a model the way a device will store it, and report what it really costs: bytes on disk, parameters,
and single-thread CPU latency at batch 1 (the closest stand-in for a phone core we have on a server)."""

from __future__ import annotations

import os
import statistics
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

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
