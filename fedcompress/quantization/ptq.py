"""Post-training int8 quantization: weights per output channel, activations calibrated on a few batches."""

from __future__ import annotations

import copy
import io
from collections.abc import Iterable

import torch
from torch import nn

from fedcompress.quantization._compat import quiet, use_engine


def _batches(calibration: torch.Tensor | Iterable) -> Iterable[torch.Tensor]:
    """Accept a tensor, or an iterable of tensors or (x, y) pairs."""
    if isinstance(calibration, torch.Tensor):
        yield calibration
        return
    for item in calibration:
        yield item[0] if isinstance(item, (tuple, list)) else item


def is_recurrent(model: nn.Module) -> bool:
    return any(isinstance(m, (nn.LSTM, nn.GRU, nn.RNN)) for m in model.modules())


def quantize_int8(
    model: nn.Module,
    calibration: torch.Tensor | Iterable,
    *,
    engine: str = "x86",
    max_batches: int = 8,
) -> nn.Module:
    """Return an int8 copy of `model` (the original is untouched).

    CNNs: FX static quantization with the engine's default qconfig (x86: per-channel symmetric int8 weights,
    histogram-calibrated uint8 activations) calibrated on up to `max_batches` batches. Recurrent models:
    dynamic quantization of LSTM/Linear weights (activations are quantized on the fly at run time).
    """
    use_engine(engine)
    float_model = copy.deepcopy(model).eval()
    with quiet():
        if is_recurrent(float_model):
            return torch.ao.quantization.quantize_dynamic(
                float_model, {nn.LSTM, nn.GRU, nn.Linear}, dtype=torch.qint8
            )
        from torch.ao.quantization import get_default_qconfig_mapping
        from torch.ao.quantization.quantize_fx import convert_fx, prepare_fx

        batches = iter(_batches(calibration))
        first = next(batches)
        prepared = prepare_fx(float_model, get_default_qconfig_mapping(engine), (first[:1],))
        with torch.no_grad():
            prepared(first)
            for i, x in enumerate(batches, start=1):
                if i >= max_batches:
                    break
                prepared(x)
        return convert_fx(prepared)


def int8_bytes(qmodel: nn.Module) -> bytes:
    """Compact int8 artefact: `torch.save` of the quantized state dict (no code; deterministic bytes).

    TorchScript artefacts carry code and debug tables whose size depends on how many modules the process
    compiled before (class-name mangling), so tier sizes are measured on this form instead.
    """
    buf = io.BytesIO()
    with quiet():
        torch.save(qmodel.state_dict(), buf)
    return buf.getvalue()


def load_int8(
    float_template: nn.Module, data: bytes, example_input: torch.Tensor, *, engine: str = "x86"
) -> nn.Module:
    """Rebuild an int8 model from `int8_bytes`: quantize a same-shaped float model, then load the state.

    `float_template` only provides the architecture (e.g. `resize_like(build_model(...), shapes)`).
    """
    skeleton = quantize_int8(float_template, example_input[:1], engine=engine)
    with quiet():
        state = torch.load(io.BytesIO(data), weights_only=True)
        skeleton.load_state_dict(state)
    return skeleton
