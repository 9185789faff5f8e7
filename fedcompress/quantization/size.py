"""What a device really stores: bytes of the serialized artefact, never a parameter-count estimate."""

from __future__ import annotations

import io
from typing import Any

import torch
from torch import nn

from fedcompress.quantization._compat import quiet


def saved_size(obj: Any) -> int:
    """Bytes of `torch.save(obj)` to a buffer (e.g. a state dict).

    A file holds the same bytes except that each zip record is named after the file stem instead of
    "archive" (so `x.pt` is a few bytes per tensor smaller); `export_model` reports the file's own size.
    """
    buf = io.BytesIO()
    torch.save(obj, buf)
    return buf.getbuffer().nbytes


def state_dict_size(model: nn.Module) -> int:
    """Bytes of `torch.save(model.state_dict())`."""
    return saved_size(model.state_dict())


def to_torchscript(model: nn.Module, example_input: torch.Tensor) -> torch.jit.ScriptModule:
    """Trace `model` (float or quantized) into a self-contained TorchScript module."""
    with quiet(), torch.no_grad():
        return torch.jit.trace(model.eval(), example_input)


def torchscript_bytes(model: nn.Module, example_input: torch.Tensor) -> bytes:
    """The TorchScript artefact a device loads without Python model code."""
    scripted = model if isinstance(model, torch.jit.ScriptModule) else to_torchscript(model, example_input)
    buf = io.BytesIO()
    with quiet():
        torch.jit.save(scripted, buf)
    return buf.getvalue()


def torchscript_size(model: nn.Module, example_input: torch.Tensor) -> int:
    return len(torchscript_bytes(model, example_input))
