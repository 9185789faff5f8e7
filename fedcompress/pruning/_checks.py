"""Shared argument checks, so every entry point rejects bad ratios with the same clear message."""

from __future__ import annotations

from fedcompress.errors import ConfigError


def check_ratio(field: str, value: float) -> float:
    """Return `value` as float if it lies in [0, 1); a ratio of 1 would delete a whole layer."""
    try:
        ratio = float(value)
    except (TypeError, ValueError):
        raise ConfigError(f"{field} must be a number in [0, 1), got {value!r}") from None
    if not 0.0 <= ratio < 1.0:
        raise ConfigError(f"{field} must be in [0, 1), got {value}")
    return ratio
