"""Server-side ensemble distillation across tiers (FedDF, Lin et al. 2020): every tier's model learns the
averaged logits of all tiers' models on the server's unlabeled proxy set, so each tier hears from every client."""

from __future__ import annotations

import copy
from collections import OrderedDict
from typing import Any

import numpy as np
import torch
from torch import nn

from fedcompress.distillation import distill

Arrays = OrderedDict[str, np.ndarray]


def load_arrays(model: nn.Module, arrays: Arrays) -> nn.Module:
    model.load_state_dict({k: torch.from_numpy(np.array(v, dtype=np.float32)) for k, v in arrays.items()})
    return model


def model_arrays(model: nn.Module) -> Arrays:
    return OrderedDict(
        (k, v.detach().cpu().numpy().astype(np.float32, copy=True)) for k, v in model.state_dict().items()
    )


def feddf_step(
    models: dict[str, nn.Module],
    arrays: dict[str, Arrays],
    widths: dict[str, float],
    proxy_x: torch.Tensor,
    *,
    teachers: str,
    seed: int,
    options: dict[str, Any],
) -> dict[str, Arrays]:
    """Each tier's model (from `arrays`) distilled from the frozen ensemble; `teachers`: "all" or "wider"
    (only tiers at least as wide teach). Returns the new arrays, tiers in the given order."""
    for t, m in models.items():
        load_arrays(m, arrays[t])
    frozen = {t: copy.deepcopy(m).eval() for t, m in models.items()}
    opts = dict(options)
    epochs = int(opts.pop("epochs", 1))
    out: dict[str, Arrays] = {}
    for i, t in enumerate(models):
        ensemble = [m for u, m in frozen.items() if teachers == "all" or widths[u] >= widths[t]]
        distill(models[t], ensemble, proxy_x, epochs=epochs, alpha=1.0, seed=seed + i, **opts)
        out[t] = model_arrays(models[t])
    return out


def distill_outer(
    model: nn.Module,
    arrays: Arrays,
    inner: dict[str, tuple[int, ...]],
    teachers: list[nn.Module],
    proxy_x: torch.Tensor,
    *,
    seed: int,
    options: dict[str, Any],
) -> Arrays:
    """`model` (loaded from `arrays`) distilled from the `teachers`' ensemble on `proxy_x`, with the leading
    block of each tensor (shapes in `inner`: what narrower tiers hold) frozen: only the outer coordinates learn.
    Gradients of the frozen block are zeroed, so Adam leaves it exactly as it was."""
    load_arrays(model, arrays)
    hooks = []
    for name, p in model.named_parameters():
        if name in inner:
            mask = torch.ones_like(p)
            mask[tuple(slice(0, s) for s in inner[name])] = 0.0
            hooks.append(p.register_hook(lambda g, m=mask: g * m))
    opts = dict(options)
    epochs = int(opts.pop("epochs", 1))
    try:
        distill(model, teachers, proxy_x, epochs=epochs, alpha=1.0, seed=seed, **opts)
    finally:
        for h in hooks:
            h.remove()
    return model_arrays(model)
