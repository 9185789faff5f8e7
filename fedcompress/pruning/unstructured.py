"""Unstructured magnitude pruning: zero the smallest weights, then bake the zeros in.

Sparsity by itself does not shrink a dense `torch.save` artefact; it pays off once weights are stored sparse,
entropy coded or k-means shared with zero kept as its own centroid (see `fedcompress.quantization.kmeans`).
"""

from __future__ import annotations

from typing import Literal

import torch
from torch import nn
from torch.nn.utils import prune

from fedcompress.errors import ConfigError
from fedcompress.pruning._checks import check_ratio

_PRUNABLE = (nn.Conv2d, nn.Linear, nn.LSTM)


def prunable_weights(model: nn.Module) -> list[tuple[nn.Module, str]]:
    """(module, parameter name) for every conv, dense and LSTM weight; biases are too small to bother."""
    found: list[tuple[nn.Module, str]] = []
    for module in model.modules():
        if isinstance(module, _PRUNABLE):
            for name, _ in module.named_parameters(recurse=False):
                if name.startswith("weight"):
                    found.append((module, name))
    return found


def magnitude_prune(
    model: nn.Module, ratio: float, scope: Literal["global", "layer"] = "global"
) -> nn.Module:
    """Zero the `ratio` fraction of weights with the smallest |w| (L1), in place, and make it permanent.

    `scope="global"` ranks all weights together (layers with many redundant weights lose more);
    `scope="layer"` removes the same fraction from every weight tensor.
    """
    ratio = check_ratio("prune ratio", ratio)
    targets = prunable_weights(model)
    if not targets or ratio == 0.0:
        return model
    if scope == "global":
        prune.global_unstructured(targets, pruning_method=prune.L1Unstructured, amount=ratio)
    elif scope == "layer":
        for module, name in targets:
            prune.l1_unstructured(module, name=name, amount=ratio)
    else:
        raise ConfigError(f"prune scope must be 'global' or 'layer', got {scope!r}")
    for module, name in targets:
        prune.remove(module, name)
    return model


def sparsity(model: nn.Module) -> float:
    """Fraction of exactly-zero entries over all prunable weight tensors."""
    tensors = [getattr(m, n).detach() for m, n in prunable_weights(model)]
    total = sum(t.numel() for t in tensors)
    if total == 0:
        return 0.0
    zeros = sum(int((t == 0).sum()) for t in tensors)
    return zeros / total


def zero_masks(model: nn.Module) -> dict[str, torch.Tensor]:
    """Boolean keep-masks of the current non-zeros, so fine-tuning can keep pruned weights at zero."""
    return {
        n: p.detach() != 0 for n, p in model.named_parameters() if n.rsplit(".", 1)[-1].startswith("weight")
    }
