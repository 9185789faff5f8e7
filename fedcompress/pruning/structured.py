"""Structured pruning: remove whole conv filters / dense units so the result is a smaller *dense* model.

The CNN families (CNN28, CNN32, CNN8) are a chain conv1 -> conv2 [-> conv3] -> flatten -> fc1 -> fc2. Removing
output channel j of one layer removes input channel j of the next; for fc1 the input is the flattened
(C, H, W) map, so a removed channel removes its H*W consecutive columns. fc2 (classifier) keeps its outputs.
The pruned model is a deep copy of the same class with the layers swapped for narrower ones, so its `forward`
and `features` still work and the kept channels compute exactly what they computed before.
"""

from __future__ import annotations

import copy
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Literal

import torch
from torch import nn

from fedcompress.errors import ConfigError
from fedcompress.pruning._checks import check_ratio

Norm = Literal["l1", "l2"]
_CONVS = ("conv1", "conv2", "conv3")


@dataclass(frozen=True)
class Chain:
    """Names of the prunable layers in order, and the classifier that only loses inputs."""

    layers: tuple[str, ...]
    head: str


def layer_chain(model: nn.Module) -> Chain:
    """Find the conv/dense chain of a CNN family model; other architectures get a clear error."""
    convs = tuple(n for n in _CONVS if isinstance(getattr(model, n, None), nn.Conv2d))
    if (
        not convs
        or not isinstance(getattr(model, "fc1", None), nn.Linear)
        or not isinstance(getattr(model, "fc2", None), nn.Linear)
    ):
        raise ConfigError(
            f"structured pruning supports conv1..conv3 -> fc1 -> fc2 CNNs, not {type(model).__name__}"
        )
    return Chain(layers=(*convs, "fc1"), head="fc2")


def channel_importance(weight: torch.Tensor, norm: Norm = "l1") -> torch.Tensor:
    """Importance of each output channel: the L1 (sum |w|) or L2 (sqrt sum w^2) norm of its weights."""
    flat = weight.detach().flatten(1)
    if norm == "l1":
        return flat.abs().sum(1)
    if norm == "l2":
        return flat.pow(2).sum(1).sqrt()
    raise ConfigError(f"norm must be 'l1' or 'l2', got {norm!r}")


def kept_count(channels: int, ratio: float) -> int:
    """Channels left after removing `ratio` of them (rounded, at least one)."""
    return max(1, int(round(channels * (1.0 - ratio))))


def keep_indices(weight: torch.Tensor, ratio: float, norm: Norm = "l1") -> torch.Tensor:
    """Sorted indices of the most important output channels (sorted so channel order is preserved)."""
    scores = channel_importance(weight, norm)
    k = kept_count(scores.numel(), ratio)
    # stable descending order makes ties deterministic
    top = torch.argsort(scores, descending=True, stable=True)[:k]
    return torch.sort(top).values


def _resolve_ratios(
    chain: Chain, ratio: float | None, per_layer_ratios: Mapping[str, float] | None
) -> dict[str, float]:
    if (ratio is None) == (per_layer_ratios is None):
        raise ConfigError("give exactly one of ratio or per_layer_ratios")
    if per_layer_ratios is None:
        r = check_ratio("ratio", ratio)
        return {name: r for name in chain.layers}
    unknown = sorted(set(per_layer_ratios) - set(chain.layers))
    if unknown:
        raise ConfigError(
            f"per_layer_ratios names unknown layers {unknown}; prunable layers are {list(chain.layers)}"
        )
    return {
        name: check_ratio(f"per_layer_ratios[{name!r}]", per_layer_ratios.get(name, 0.0))
        for name in chain.layers
    }


def _sliced_conv(conv: nn.Conv2d, out_idx: torch.Tensor, in_idx: torch.Tensor) -> nn.Conv2d:
    if conv.groups != 1:
        raise ConfigError("structured pruning of grouped convolutions is not supported")
    new = nn.Conv2d(
        len(in_idx),
        len(out_idx),
        conv.kernel_size,
        stride=conv.stride,
        padding=conv.padding,
        dilation=conv.dilation,
        bias=conv.bias is not None,
        padding_mode=conv.padding_mode,
    )
    with torch.no_grad():
        new.weight.copy_(conv.weight[out_idx][:, in_idx])
        if conv.bias is not None:
            new.bias.copy_(conv.bias[out_idx])
    return new


def _sliced_linear(fc: nn.Linear, out_idx: torch.Tensor, in_cols: torch.Tensor) -> nn.Linear:
    new = nn.Linear(len(in_cols), len(out_idx), bias=fc.bias is not None)
    with torch.no_grad():
        new.weight.copy_(fc.weight[out_idx][:, in_cols])
        if fc.bias is not None:
            new.bias.copy_(fc.bias[out_idx])
    return new


def _flatten_columns(channels: torch.Tensor, spatial: int) -> torch.Tensor:
    """Columns of a (C*spatial)-wide flatten that belong to the kept channels, in order."""
    return (channels[:, None] * spatial + torch.arange(spatial)[None, :]).reshape(-1)


def keep_plan(
    model: nn.Module,
    ratio: float | None = None,
    per_layer_ratios: Mapping[str, float] | None = None,
    norm: Norm = "l1",
) -> dict[str, torch.Tensor]:
    """Which output channels each prunable layer keeps (ranked on the original weights)."""
    chain = layer_chain(model)
    ratios = _resolve_ratios(chain, ratio, per_layer_ratios)
    return {name: keep_indices(getattr(model, name).weight, ratios[name], norm) for name in chain.layers}


def structured_prune(
    model: nn.Module,
    ratio: float | None = None,
    per_layer_ratios: Mapping[str, float] | None = None,
    norm: Norm = "l1",
) -> nn.Module:
    """Return a new, narrower model of the same class; `model` itself is left untouched.

    `ratio` removes that fraction of channels from every prunable layer (conv1.., fc1); `per_layer_ratios`
    maps layer names to their own ratios (layers not named keep everything). Channels are ranked by the
    L1 or L2 norm of their filter weights. Ratios must be in [0, 1).
    """
    return prune_to_plan(model, keep_plan(model, ratio, per_layer_ratios, norm))


def prune_to_plan(model: nn.Module, plan: Mapping[str, torch.Tensor]) -> nn.Module:
    """Like `structured_prune`, but keep exactly the output channels `plan` names for each chain layer.

    Lets callers rank channels by their own importance (e.g. activations on data) instead of weight norms.
    """
    chain = layer_chain(model)
    missing = sorted(set(chain.layers) - set(plan))
    if missing:
        raise ConfigError(
            f"keep plan lacks layers {missing}; it must name every layer of {list(chain.layers)}"
        )
    plan = {n: torch.sort(torch.as_tensor(plan[n], dtype=torch.long)).values for n in chain.layers}
    for name in chain.layers:
        n_out, idx = getattr(model, name).weight.shape[0], plan[name]
        if (
            idx.numel() == 0
            or int(idx[0]) < 0
            or int(idx[-1]) >= n_out
            or idx.unique().numel() != idx.numel()
        ):
            raise ConfigError(
                f"keep plan for {name!r} must be distinct indices in [0, {n_out}), at least one"
            )
    pruned = copy.deepcopy(model)
    last_conv = getattr(model, chain.layers[-2])
    spatial = model.fc1.in_features // last_conv.out_channels
    in_idx = torch.arange(getattr(model, chain.layers[0]).in_channels)
    for name in chain.layers:
        old = getattr(model, name)
        out_idx = plan[name]
        if isinstance(old, nn.Conv2d):
            setattr(pruned, name, _sliced_conv(old, out_idx, in_idx))
        else:  # fc1: its inputs are the flattened maps of the last conv
            setattr(pruned, name, _sliced_linear(old, out_idx, _flatten_columns(in_idx, spatial)))
        in_idx = out_idx
    head = getattr(model, chain.head)
    setattr(pruned, chain.head, _sliced_linear(head, torch.arange(head.out_features), in_idx))
    return pruned.train(model.training)


def pruned_param_count(model: nn.Module, per_layer_ratios: Mapping[str, float]) -> int:
    """Parameters the model would have after `structured_prune(model, per_layer_ratios=...)`, unbuilt.

    Used by the automatic pruner to search allocations cheaply; parameters outside the chain count as is.
    """
    chain = layer_chain(model)
    ratios = _resolve_ratios(chain, None, per_layer_ratios)
    chain_modules = [getattr(model, n) for n in (*chain.layers, chain.head)]
    chain_ids = {id(p) for m in chain_modules for p in m.parameters()}
    total = sum(p.numel() for p in model.parameters() if id(p) not in chain_ids)
    last_conv = getattr(model, chain.layers[-2])
    spatial = model.fc1.in_features // last_conv.out_channels
    c_in = getattr(model, chain.layers[0]).in_channels
    for name in chain.layers:
        layer = getattr(model, name)
        c_out = kept_count(layer.weight.shape[0], ratios[name])
        if isinstance(layer, nn.Conv2d):
            k = layer.weight[0, 0].numel()
            total += c_out * c_in * k + (c_out if layer.bias is not None else 0)
        else:
            total += c_out * c_in * spatial + (c_out if layer.bias is not None else 0)
        c_in = c_out
    head = getattr(model, chain.head)
    total += head.out_features * c_in + (head.out_features if head.bias is not None else 0)
    return total


def resize_like(model: nn.Module, state_dict: Mapping[str, torch.Tensor]) -> nn.Module:
    """Narrow a freshly built model's chain layers to the shapes in `state_dict`, then load it.

    A client that receives a structurally pruned model's weights builds the full-width model and calls this.
    """
    chain = layer_chain(model)
    for name in (*chain.layers, chain.head):
        old = getattr(model, name)
        w = state_dict[f"{name}.weight"]
        out_idx, in_n = torch.arange(w.shape[0]), w.shape[1]
        if isinstance(old, nn.Conv2d):
            setattr(model, name, _sliced_conv(old, out_idx, torch.arange(in_n)))
        else:
            new = nn.Linear(in_n, w.shape[0], bias=old.bias is not None)
            setattr(model, name, new)
    model.load_state_dict(state_dict)
    return model
