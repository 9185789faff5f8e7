"""Nested (ordered) sub-models trained on the client, FjORD / slimmable-network style.

A client that can hold width `w` trains, on every batch, its own model AND each narrower tier's model, which is
the leading block of its weights (the same slicing as HeteroFL). The losses are summed, so the shared leading
weights learn to work on their own: the tiny model is then trained by every client of every tier, and the server
needs no distillation to give small devices the knowledge of big ones (Horvath et al., FjORD, NeurIPS 2021; Yu
et al., slimmable networks, ICLR 2019). Sub-models run through `torch.func.functional_call` on sliced views of
the client's parameters, so gradients flow into the one set of weights.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import nn
from torch.func import functional_call

from fedcompress.errors import ConfigError
from fedcompress.tiers.heterofl import leading

NESTED_KEY = "fedcompress.nested-widths"  # train config: narrower widths this client also trains, "0.25,0.5"
NESTED_WEIGHT_KEY = (
    "fedcompress.nested-weight"  # train config: weight of each narrower width's loss (absent: 1)
)
SLICEABLE = (
    "cnn8",
    "cnn28",
    "cnn32",
)  # conv chains whose narrower model is the leading block of every tensor


def format_widths(widths: list[float]) -> str:
    return ",".join(f"{w:g}" for w in sorted(widths))


def parse_widths(text: str) -> list[float]:
    """'0.25,0.5' -> [0.25, 0.5]; anything else is a clear error naming the value."""
    try:
        out = sorted(float(w) for w in str(text).split(",") if w.strip())
    except ValueError:
        raise ConfigError(f"{NESTED_KEY} must be comma-separated widths in (0, 1], got {text!r}") from None
    if any(not 0 < w <= 1 for w in out):
        raise ConfigError(f"{NESTED_KEY} must be comma-separated widths in (0, 1], got {text!r}")
    return out


def check_sliceable(model_name: str) -> None:
    if model_name not in SLICEABLE:
        raise ConfigError(
            f"tier-training by width slicing needs a CNN family model {SLICEABLE}, got {model_name!r} "
            "(an LSTM's stacked gates are not leading blocks); use tier-training 'distill' or 'separate'"
        )


def train_nested(
    model: nn.Module,
    subs: list[nn.Module],
    x: np.ndarray,
    y: np.ndarray,
    *,
    epochs: int,
    lr: float,
    batch_size: int,
    seed: int,
    momentum: float = 0.0,
    sub_weight: float = 1.0,
) -> float:
    """SGD on `model` where each batch's loss is the model's plus `sub_weight` x each nested sub-model's in
    `subs` (skeletons of the narrower widths; their own weights are ignored). A weight below 1 leaves more of
    the shared weights to the client's own width. Returns the full model's mean loss."""
    model.train()
    params = dict(model.named_parameters())
    shapes = [{k: tuple(v.shape) for k, v in s.named_parameters()} for s in subs]
    for s, sh in zip(subs, shapes, strict=True):
        bad = [
            k
            for k in sh
            if k not in params or any(a > b for a, b in zip(sh[k], params[k].shape, strict=True))
        ]
        if bad:
            raise ConfigError(f"sub-model {type(s).__name__} is not a leading block of the model: {bad}")
    gen = torch.Generator().manual_seed(seed)
    xt, yt = torch.from_numpy(x), torch.from_numpy(y)
    opt = torch.optim.SGD(model.parameters(), lr=lr, momentum=momentum)
    loss_fn = nn.CrossEntropyLoss()
    total, count = 0.0, 0
    for _ in range(epochs):
        order = torch.randperm(len(xt), generator=gen)
        for start in range(0, len(order), batch_size):
            idx = order[start : start + batch_size]
            xb, yb = xt[idx], yt[idx]
            opt.zero_grad(set_to_none=True)
            loss = loss_fn(model(xb), yb)
            sub_loss = sum(
                loss_fn(functional_call(s, {k: params[k][leading(v)] for k, v in sh.items()}, (xb,)), yb)
                for s, sh in zip(subs, shapes, strict=True)
            )
            (loss + sub_weight * sub_loss).backward()
            opt.step()
            total += loss.item() * len(idx)
            count += len(idx)
    return total / max(count, 1)
