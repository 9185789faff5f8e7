"""Local training and evaluation on in-memory tensors: no DataLoader workers, seeded shuffling, one thread."""

from __future__ import annotations

import warnings

import numpy as np
import torch
from torch import nn

# Datasets are shared read-only arrays (so one client cannot corrupt another's data); these functions only read
# them, which torch warns about once per process for no reason that applies here.
warnings.filterwarnings("ignore", message="The given NumPy array is not writable")


def train(
    model: nn.Module,
    x: np.ndarray,
    y: np.ndarray,
    *,
    epochs: int,
    lr: float,
    batch_size: int,
    seed: int,
    momentum: float = 0.0,
    proximal_mu: float = 0.0,
) -> float:
    """SGD over (x, y) for `epochs`; returns the mean training loss.

    `seed` fixes the shuffling order. `proximal_mu > 0` adds FedProx's (mu/2)||w - w_global||^2 term, with the
    model's starting weights taken as w_global.
    """
    model.train()
    gen = torch.Generator().manual_seed(seed)
    xt, yt = torch.from_numpy(x), torch.from_numpy(y)
    opt = torch.optim.SGD(model.parameters(), lr=lr, momentum=momentum)
    anchor = [p.detach().clone() for p in model.parameters()] if proximal_mu > 0 else None
    loss_fn = nn.CrossEntropyLoss()
    total, count = 0.0, 0
    for _ in range(epochs):
        order = torch.randperm(len(xt), generator=gen)
        for start in range(0, len(order), batch_size):
            idx = order[start : start + batch_size]
            opt.zero_grad(set_to_none=True)
            loss = loss_fn(model(xt[idx]), yt[idx])
            if anchor is not None:
                prox = sum(((p - a) ** 2).sum() for p, a in zip(model.parameters(), anchor, strict=True))
                (loss + 0.5 * proximal_mu * prox).backward()
            else:
                loss.backward()
            opt.step()
            total += loss.item() * len(idx)
            count += len(idx)
    return total / max(count, 1)


@torch.no_grad()
def evaluate(model: nn.Module, x: np.ndarray, y: np.ndarray, batch_size: int = 1024) -> tuple[float, float]:
    """(mean cross-entropy loss, accuracy) of the model on (x, y)."""
    model.eval()
    xt, yt = torch.from_numpy(x), torch.from_numpy(y)
    loss_sum, correct = 0.0, 0
    for start in range(0, len(xt), batch_size):
        logits = model(xt[start : start + batch_size])
        target = yt[start : start + batch_size]
        loss_sum += nn.functional.cross_entropy(logits, target, reduction="sum").item()
        correct += (logits.argmax(1) == target).sum().item()
    n = max(len(xt), 1)
    return loss_sum / n, correct / n
