"""Running clients' and the server's work on the resolved device, with data copied there once.

`fedcompress.accel` decides the device; this module puts models and data on it: client partitions and the
server's test set are cached on the device per process (Ray actors play many clients, so the cache is
bounded), and the server evaluates on a device twin of its CPU model (the CPU model stays what is saved and
exported, loadable on any machine).
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Hashable

import numpy as np
import torch
from torch import nn

from fedcompress.accel import DATA_CACHE
from fedcompress.training import evaluate


def data_on(
    device: torch.device, key: Hashable, make: Callable[[], tuple[np.ndarray, np.ndarray]]
) -> tuple[torch.Tensor, ...]:
    """(x, y) from `make()` as tensors on `device`: on the CPU as numpy made them (no copy, no cache);
    elsewhere copied once per `key` and cached."""
    if device.type == "cpu":
        x, y = make()
        return torch.from_numpy(x), torch.from_numpy(y)

    def build() -> tuple[torch.Tensor, ...]:
        x, y = make()
        return torch.from_numpy(np.ascontiguousarray(x)).to(device), torch.from_numpy(y).to(device)

    return DATA_CACHE.get((str(device), key), build)


class DeviceEvaluator:
    """Evaluates CPU models on `device` through device twins (weights copied in per call, data cached)."""

    def __init__(self, device: torch.device) -> None:
        self.device = device
        self._twins: dict[int, tuple[nn.Module, nn.Module]] = {}  # id -> (model, twin): the model kept alive

    def twin(self, model: nn.Module) -> nn.Module:
        """`model` itself when it is already there, else its device twin holding its current weights."""
        first = next(model.parameters(), None)
        if first is None or first.device == self.device:
            return model
        if id(model) not in self._twins:
            self._twins[id(model)] = (model, copy.deepcopy(model).to(self.device))
        twin = self._twins[id(model)][1]
        twin.load_state_dict(model.state_dict())
        return twin

    def __call__(self, model: nn.Module, x: np.ndarray, y: np.ndarray, key: Hashable) -> tuple[float, float]:
        xt, yt = data_on(self.device, key, lambda: (x, y))
        return evaluate(self.twin(model), xt, yt)
