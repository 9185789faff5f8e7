"""Importance-based automatic pruning: measure how much each layer hurts when pruned, then spend a budget.

Sensitivity is measured one layer at a time on a small evaluation batch (structured pruning of that layer
alone at several ratios). The allocator assumes the loss increases add up across layers and greedily takes
the (layer, ratio) step with the least predicted loss per parameter saved until the model fits the budget.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import torch
from torch import nn
from torch.nn import functional as F

from fedcompress.errors import ConfigError
from fedcompress.pruning._checks import check_ratio
from fedcompress.pruning.structured import Norm, layer_chain, pruned_param_count, structured_prune

Sensitivity = dict[str, dict[float, float]]
DEFAULT_RATIOS: tuple[float, ...] = (0.25, 0.5, 0.75, 0.9)


@torch.no_grad()
def _eval(model: nn.Module, x: torch.Tensor, y: torch.Tensor, metric: str) -> float:
    logits = model.eval()(x)
    if metric == "loss":
        return float(F.cross_entropy(logits, y))
    if metric == "accuracy":
        return -float((logits.argmax(1) == y).float().mean())  # negated: lower is better, like loss
    raise ConfigError(f"metric must be 'loss' or 'accuracy', got {metric!r}")


def layer_sensitivity(
    model: nn.Module,
    x: torch.Tensor,
    y: torch.Tensor,
    ratios: Sequence[float] = DEFAULT_RATIOS,
    norm: Norm = "l1",
    metric: str = "loss",
) -> Sensitivity:
    """{layer: {ratio: increase of loss (or accuracy drop)}} pruning that layer alone at each ratio."""
    grid = sorted({check_ratio("sensitivity ratio", r) for r in ratios} - {0.0})
    base = _eval(model, x, y, metric)
    out: Sensitivity = {}
    for name in layer_chain(model).layers:
        out[name] = {0.0: 0.0}
        for r in grid:
            out[name][r] = (
                _eval(structured_prune(model, per_layer_ratios={name: r}, norm=norm), x, y, metric) - base
            )
    return out


def allocate_ratios(
    model: nn.Module, sensitivity: Mapping[str, Mapping[float, float]], max_params: int
) -> dict[str, float]:
    """Greedy allocation: per-layer ratios from the sensitivity grid with <= max_params parameters.

    Each step considers every layer moving to any larger measured ratio and takes the one with the smallest
    predicted loss increase per parameter removed (so a big cheap jump is not hidden behind an expensive
    intermediate step).
    """
    ratios = {name: 0.0 for name in sensitivity}
    params = pruned_param_count(model, ratios)
    while params > max_params:
        best: tuple[float, str, float, int] | None = None
        for name, curve in sensitivity.items():
            for r, loss in curve.items():
                if r <= ratios[name]:
                    continue
                trial = pruned_param_count(model, {**ratios, name: r})
                saved = params - trial
                if saved <= 0:
                    continue
                score = (loss - curve[ratios[name]]) / saved
                if best is None or score < best[0]:
                    best = (score, name, r, trial)
        if best is None:
            floor = pruned_param_count(model, {n: max(c) for n, c in sensitivity.items()})
            raise ConfigError(
                f"parameter budget {max_params} cannot be met: the most pruned allocation on the "
                f"sensitivity grid "
                f"still has {floor} parameters"
            )
        _, name, r, params = best
        ratios[name] = r
    return ratios


@dataclass
class AutoPruneResult:
    """The pruned model and how it was chosen."""

    model: nn.Module
    ratios: dict[str, float]
    params: int
    predicted_loss_increase: float
    sensitivity: Sensitivity = field(repr=False)


def auto_prune(
    model: nn.Module,
    x: torch.Tensor,
    y: torch.Tensor,
    *,
    max_params: int | None = None,
    max_bytes: int | None = None,
    bytes_per_param: float = 4.0,
    ratios: Sequence[float] = DEFAULT_RATIOS,
    norm: Norm = "l1",
    metric: str = "loss",
) -> AutoPruneResult:
    """Prune `model` structurally to fit a parameter or byte budget, losing as little as predicted possible.

    `max_bytes` is converted with `bytes_per_param` (4 for fp32 tensors, about 1 for int8 tiers).
    """
    if (max_params is None) == (max_bytes is None):
        raise ConfigError("give exactly one of max_params or max_bytes")
    if max_bytes is not None:
        if bytes_per_param <= 0:
            raise ConfigError(f"bytes_per_param must be > 0, got {bytes_per_param}")
        max_params = int(max_bytes // bytes_per_param)
    if max_params is None or max_params <= 0:
        raise ConfigError(f"budget must be positive, got max_params={max_params}")
    sens = layer_sensitivity(model, x, y, ratios, norm, metric)
    alloc = allocate_ratios(model, sens, max_params)
    pruned = structured_prune(model, per_layer_ratios=alloc, norm=norm)
    predicted = sum(sens[n][r] for n, r in alloc.items())
    params = sum(p.numel() for p in pruned.parameters())
    return AutoPruneResult(pruned, alloc, params, predicted, sens)
