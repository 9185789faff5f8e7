"""Short recovery training after pruning (seed article 9.1.2: too little fine-tuning costs accuracy)."""

from __future__ import annotations

from collections.abc import Iterable

import torch
from torch import nn

from fedcompress.pruning.unstructured import zero_masks


def fine_tune(
    model: nn.Module,
    loader: Iterable[tuple[torch.Tensor, torch.Tensor]],
    epochs: int = 1,
    lr: float = 0.01,
    *,
    momentum: float = 0.9,
    keep_sparsity: bool = True,
) -> nn.Module:
    """Train with SGD + cross-entropy for `epochs` passes over `loader` ((x, y) batches); returns the model.

    With `keep_sparsity`, weights that are exactly zero before training are held at zero, so unstructured
    pruning survives fine-tuning.
    """
    masks = zero_masks(model) if keep_sparsity else {}
    params = dict(model.named_parameters())
    opt = torch.optim.SGD(model.parameters(), lr=lr, momentum=momentum)
    loss_fn = nn.CrossEntropyLoss()
    model.train()
    for _ in range(epochs):
        for x, y in loader:
            opt.zero_grad(set_to_none=True)
            loss_fn(model(x), y).backward()
            opt.step()
            if masks:
                with torch.no_grad():
                    for name, mask in masks.items():
                        params[name].mul_(mask)
    model.eval()
    return model
