"""The one place that decides where tensors live: the `device` run-config key resolved to a torch device.

`auto` takes CUDA when this process can see a GPU and the CPU otherwise, so the same config runs on a laptop
and on a GPU box; an explicit `cuda` / `cuda:N` that this process cannot honour is a `ConfigError` (silently
training on the CPU would make a GPU run 10-30x slower without saying why). Also here: moving array dicts
between numpy and a device, and a small per-process cache that keeps each client's data on the device, so
it crosses the bus once per client rather than once per batch or round.
"""

from __future__ import annotations

import re
from collections import OrderedDict
from collections.abc import Callable, Hashable, Mapping
from typing import TYPE_CHECKING

import numpy as np

from fedcompress.errors import ConfigError

if TYPE_CHECKING:  # torch is imported where used: the config (and the CLI) must not pay for it
    import torch

DEVICE_HELP = "'auto' (CUDA when present, else CPU), 'cpu', 'cuda' or 'cuda:N'"
_DEVICE_RE = re.compile(r"^(auto|cpu|cuda(:\d+)?)$")


def valid_device(text: object) -> bool:
    """Whether `text` is a device name this project accepts (syntax only; availability is checked when
    resolved, on the machine that runs the work)."""
    return isinstance(text, str) and _DEVICE_RE.match(text) is not None


def cuda_available() -> bool:
    import torch

    return torch.cuda.is_available()


def resolve_device(text: str = "auto") -> torch.device:
    """`auto` -> `cuda` if available, else `cpu`; `cuda[:N]` checked against the GPUs this process sees."""
    import torch

    if not valid_device(text):
        raise ConfigError(f"config key 'device' = {text!r}: expected {DEVICE_HELP}")
    if text == "cpu" or (text == "auto" and not cuda_available()):
        return torch.device("cpu")
    if text == "auto":
        return torch.device("cuda", torch.cuda.current_device())
    if not cuda_available():
        why = "this torch build has no CUDA" if torch.version.cuda is None else "no GPU is visible"
        raise ConfigError(
            f"config key 'device' = {text!r}: CUDA is not available here ({why}, torch {torch.__version__});"
            " use 'auto' or 'cpu'"
        )
    dev = torch.device(text)
    count = torch.cuda.device_count()
    if dev.index is not None and dev.index >= count:
        raise ConfigError(f"config key 'device' = {text!r}: this process sees {count} GPU(s) (cuda:0..)")
    return dev if dev.index is not None else torch.device("cuda", torch.cuda.current_device())


def device_for(run_config: Mapping[str, object]) -> torch.device:
    """The device a run config asks for; `cpu` when it has no `device` key (a Flower app that did not opt in
    keeps the numpy path it always had)."""
    return resolve_device(str(run_config.get("device", "cpu")))


def to_device(arrays: Mapping[str, np.ndarray], device: torch.device) -> OrderedDict[str, torch.Tensor]:
    """numpy arrays as tensors on `device` (one copy each; none on the CPU, where memory is shared)."""
    import torch

    return OrderedDict((k, torch.as_tensor(np.asarray(v), device=device)) for k, v in arrays.items())


def to_numpy(tensors: Mapping[str, torch.Tensor | np.ndarray]) -> OrderedDict[str, np.ndarray]:
    """Tensors (any device) as numpy arrays on the host; numpy arrays pass through."""
    return OrderedDict(
        (k, v if isinstance(v, np.ndarray) else v.detach().cpu().numpy()) for k, v in tensors.items()
    )


class DeviceCache:
    """Least-recently-used tensors on devices, bounded in bytes: a client's data moved once, reused every round.

    In simulation one Ray actor plays many clients; the bound keeps it from holding every partition at once.
    """

    def __init__(self, max_bytes: int = 4 << 30) -> None:
        self.max_bytes = max_bytes
        self._items: OrderedDict[Hashable, tuple[torch.Tensor, ...]] = OrderedDict()
        self._bytes = 0

    def get(self, key: Hashable, make: Callable[[], tuple[torch.Tensor, ...]]) -> tuple[torch.Tensor, ...]:
        """The cached tensors for `key`, built by `make()` (and kept, budget allowing) when absent."""
        if key in self._items:
            self._items.move_to_end(key)
            return self._items[key]
        value = make()
        size = sum(t.element_size() * t.nelement() for t in value)
        if size <= self.max_bytes:
            self._items[key] = value
            self._bytes += size
            while self._bytes > self.max_bytes:
                _, old = self._items.popitem(last=False)
                self._bytes -= sum(t.element_size() * t.nelement() for t in old)
        return value

    def __len__(self) -> int:
        return len(self._items)

    def clear(self) -> None:
        self._items.clear()
        self._bytes = 0


DATA_CACHE = DeviceCache()
