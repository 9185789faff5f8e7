"""Local training and evaluation on in-memory tensors: no DataLoader workers, seeded shuffling, one thread.

Both run where the model's parameters are. Data may be numpy (moved there per call) or tensors already
there (`fedcompress.ondevice` caches them per client, so a GPU client copies its data once). Losses are summed
on the device in float64 and read once at the end: no host sync per batch, and the same numbers as summing
`loss.item()` on the host.
"""

from __future__ import annotations

import warnings

import numpy as np
import torch
from torch import nn

# Datasets are shared read-only arrays (so one client cannot corrupt another's data); these functions only read
# them, which torch warns about once per process for no reason that applies here.
warnings.filterwarnings("ignore", message="The given NumPy array is not writable")


def _device(model: nn.Module) -> torch.device:
    p = next(model.parameters(), None)
    return p.device if p is not None else torch.device("cpu")


def _on(a: np.ndarray | torch.Tensor, device: torch.device) -> torch.Tensor:
    return a.to(device) if isinstance(a, torch.Tensor) else torch.from_numpy(a).to(device)


def train(
    model: nn.Module,
    x: np.ndarray | torch.Tensor,
    y: np.ndarray | torch.Tensor,
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
    device = _device(model)
    gen = torch.Generator().manual_seed(seed)  # on the CPU: the same order on every device
    xt, yt = _on(x, device), _on(y, device)
    opt = torch.optim.SGD(model.parameters(), lr=lr, momentum=momentum)
    anchor = [p.detach().clone() for p in model.parameters()] if proximal_mu > 0 else None
    loss_fn = nn.CrossEntropyLoss()
    total, count = torch.zeros((), dtype=torch.float64, device=device), 0
    for _ in range(epochs):
        order = torch.randperm(len(xt), generator=gen).to(device)
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
            total += loss.detach().double() * len(idx)
            count += len(idx)
    return float(total) / max(count, 1)


@torch.no_grad()
def evaluate(
    model: nn.Module, x: np.ndarray | torch.Tensor, y: np.ndarray | torch.Tensor, batch_size: int = 1024
) -> tuple[float, float]:
    """(mean cross-entropy loss, accuracy) of the model on (x, y)."""
    model.eval()
    device = _device(model)
    xt, yt = _on(x, device), _on(y, device)
    loss_sum = torch.zeros((), dtype=torch.float64, device=device)
    correct = torch.zeros((), dtype=torch.int64, device=device)
    for start in range(0, len(xt), batch_size):
        logits = model(xt[start : start + batch_size])
        target = yt[start : start + batch_size]
        loss_sum += nn.functional.cross_entropy(logits, target, reduction="sum").double()
        correct += (logits.argmax(1) == target).sum()
    n = max(len(xt), 1)
    return float(loss_sum) / n, int(correct) / n
