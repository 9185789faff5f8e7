"""What a device can hold and how fast it talks: the inputs to choosing its tier.

Flower node config keys (`flower-supernode --node-config '...'` or the simulation's per-node config):

| key                    | meaning                              | unit                    | default   |
|------------------------|--------------------------------------|-------------------------|-----------|
| `device-name`          | label in logs and ledgers            | str                     | "device"  |
| `device-memory-mb`     | memory the model may occupy          | MiB (2^20 bytes), > 0   | required  |
| `device-downlink-mbps` | server -> device bandwidth           | megabit/s (10^6 bit), > 0 | required |
| `device-uplink-mbps`   | device -> server bandwidth           | megabit/s, > 0          | = downlink |
| `device-latency-ms`    | round-trip latency added per message | ms, >= 0                | 0         |
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from fedcompress.errors import ConfigError

MIB = 1 << 20
MBIT_BYTES = 1_000_000 / 8

NODE_KEYS = (
    "device-name",
    "device-memory-mb",
    "device-downlink-mbps",
    "device-uplink-mbps",
    "device-latency-ms",
)


def _positive(field: str, value: Any, *, allow_zero: bool = False) -> float:
    rng = "[0, inf)" if allow_zero else "(0, inf)"
    if value is None or isinstance(value, bool):
        raise ConfigError(f"{field} is missing; expected a number in {rng}")
    try:
        v = float(value)
    except (TypeError, ValueError):
        raise ConfigError(f"{field} must be a number in {rng}, got {value!r}") from None
    if not math.isfinite(v) or v < 0 or (v == 0 and not allow_zero):
        raise ConfigError(f"{field} must be in {rng}, got {value!r}")
    return v


@dataclass(frozen=True)
class DeviceProfile:
    """A device's memory budget (bytes), link speeds (bytes/s) and latency (ms); validated on creation."""

    name: str
    memory_bytes: int
    downlink_bytes_per_s: float
    uplink_bytes_per_s: float
    latency_ms: float = 0.0

    def __post_init__(self) -> None:
        if not isinstance(self.name, str) or not self.name:
            raise ConfigError(f"name must be a non-empty string, got {self.name!r}")
        object.__setattr__(self, "memory_bytes", int(_positive("memory_bytes", self.memory_bytes)))
        for f in ("downlink_bytes_per_s", "uplink_bytes_per_s"):
            object.__setattr__(self, f, _positive(f, getattr(self, f)))
        object.__setattr__(self, "latency_ms", _positive("latency_ms", self.latency_ms, allow_zero=True))

    def download_seconds(self, nbytes: int) -> float:
        """Time to receive `nbytes`: one latency plus transfer time."""
        return self.latency_ms / 1000.0 + nbytes / self.downlink_bytes_per_s

    def upload_seconds(self, nbytes: int) -> float:
        return self.latency_ms / 1000.0 + nbytes / self.uplink_bytes_per_s

    @classmethod
    def from_node_config(cls, config: Mapping[str, Any]) -> DeviceProfile:
        """Build from a Flower node config using the `device-*` keys documented in this module."""
        unknown = sorted(k for k in config if k.startswith("device-") and k not in NODE_KEYS)
        if unknown:
            raise ConfigError(f"unknown node config keys {unknown}; known device keys are {list(NODE_KEYS)}")
        if "device-memory-mb" not in config:
            raise ConfigError("device-memory-mb is missing; expected MiB in (0, inf)")
        if "device-downlink-mbps" not in config:
            raise ConfigError("device-downlink-mbps is missing; expected megabit/s in (0, inf)")
        memory = _positive("device-memory-mb", config["device-memory-mb"]) * MIB
        down = _positive("device-downlink-mbps", config["device-downlink-mbps"]) * MBIT_BYTES
        up_raw = config.get("device-uplink-mbps", config["device-downlink-mbps"])
        up = _positive("device-uplink-mbps", up_raw) * MBIT_BYTES
        latency = _positive("device-latency-ms", config.get("device-latency-ms", 0.0), allow_zero=True)
        return cls(str(config.get("device-name", "device")), int(memory), down, up, latency)
