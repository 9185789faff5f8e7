"""Choose the biggest tier a device can hold and download in time."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping

from fedcompress.devices.profile import DeviceProfile
from fedcompress.devices.tiers import Tier
from fedcompress.errors import ConfigError


class NoTierFits(ConfigError):
    """No tier satisfies a device's memory and download budgets."""


def fit_tier(
    profile: DeviceProfile,
    tiers: Mapping[str, Tier] | Iterable[Tier],
    model_size_fn: Callable[[Tier], int],
    *,
    max_download_s: float = 60.0,
    memory_factor: float = 1.0,
) -> Tier:
    """Return the tier with the largest artefact that fits.

    Fits means `size * memory_factor <= profile.memory_bytes` (use a factor > 1 to leave room for activations
    and training state) and `profile.download_seconds(size) <= max_download_s`. Ties go to the earlier tier.
    """
    if max_download_s <= 0 or memory_factor <= 0:
        raise ConfigError(
            f"max_download_s and memory_factor must be > 0, got {max_download_s}, {memory_factor}"
        )
    candidates = list(tiers.values()) if isinstance(tiers, Mapping) else list(tiers)
    if not candidates:
        raise ConfigError("fit_tier needs at least one tier")
    sized = [(model_size_fn(t), t) for t in candidates]
    fitting = [
        (size, t)
        for size, t in sized
        if size * memory_factor <= profile.memory_bytes and profile.download_seconds(size) <= max_download_s
    ]
    if fitting:
        best = max(size for size, _ in fitting)
        return next(t for size, t in fitting if size == best)
    small_size, small = min(sized, key=lambda st: st[0])
    raise NoTierFits(
        f"no tier fits device {profile.name!r}: memory budget {profile.memory_bytes} B "
        f"(x{memory_factor} model), download budget {max_download_s} s "
        f"at {profile.downlink_bytes_per_s:.0f} B/s "
        f"+ {profile.latency_ms} ms; smallest tier {small.name!r} is {small_size} B "
        f"({profile.download_seconds(small_size):.2f} s to download)"
    )
