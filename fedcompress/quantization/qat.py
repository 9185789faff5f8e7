"""Quantization-aware training: train with fake-quant so small tiers learn weights that survive int8."""

from __future__ import annotations

import copy
from collections.abc import Iterable

import torch
from torch import nn

from fedcompress.quantization._compat import quiet, use_engine


def prepare_qat(model: nn.Module, example_input: torch.Tensor, *, engine: str = "x86") -> nn.Module:
    """Copy `model` and insert fake-quant observers (FX); train the result like any float model."""
    use_engine(engine)
    with quiet():
        from torch.ao.quantization import get_default_qat_qconfig_mapping
        from torch.ao.quantization.quantize_fx import prepare_qat_fx

        return prepare_qat_fx(
            copy.deepcopy(model).train(), get_default_qat_qconfig_mapping(engine), (example_input,)
        )


def convert_qat(prepared: nn.Module) -> nn.Module:
    """Turn a fake-quant trained model into a real int8 model."""
    with quiet():
        from torch.ao.quantization.quantize_fx import convert_fx

        return convert_fx(copy.deepcopy(prepared).eval())


def qat_fine_tune(
    model: nn.Module,
    loader: Iterable[tuple[torch.Tensor, torch.Tensor]],
    example_input: torch.Tensor,
    *,
    epochs: int = 1,
    lr: float = 0.01,
    engine: str = "x86",
    freeze_observers_after: int | None = None,
) -> nn.Module:
    """prepare -> SGD fine-tuning with fake quantization -> convert; returns the int8 model.

    `freeze_observers_after` (epochs) stops range updates late in training, as is usual for QAT.
    """
    prepared = prepare_qat(model, example_input, engine=engine)
    opt = torch.optim.SGD(prepared.parameters(), lr=lr, momentum=0.9)
    loss_fn = nn.CrossEntropyLoss()
    with quiet():
        for epoch in range(epochs):
            if freeze_observers_after is not None and epoch >= freeze_observers_after:
                prepared.apply(torch.ao.quantization.disable_observer)
            prepared.train()
            for x, y in loader:
                opt.zero_grad(set_to_none=True)
                loss_fn(prepared(x), y).backward()
                opt.step()
    return convert_qat(prepared)
