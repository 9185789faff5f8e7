"""Tiers and their mix as written in a Flower run config (scalar strings only).

tiers    = "full=1.0 mid=0.5/int8 tiny=0.25/int8"   # name=width[/quant], quant: fp32 | int8 | kmeansB
tier-mix = "full=0.3 mid=0.4 tiny=0.3"              # shares of clients, summing to 1
"""

from __future__ import annotations

from fedcompress.devices.tiers import Tier, parse_mix
from fedcompress.errors import ConfigError


def _pairs(text: str, key: str) -> list[tuple[str, str]]:
    out = []
    for item in text.replace(",", " ").split():
        name, sep, value = item.partition("=")
        if not sep or not name or not value:
            raise ConfigError(f"config key {key!r}: entry {item!r} is not name=value (e.g. 'tiny=0.25/int8')")
        out.append((name, value))
    return out


def parse_tier_config(tiers: str, mix: str) -> tuple[dict[str, Tier], dict[str, float]]:
    """Tiers ordered largest first, and the mix; errors name the key, the entry and the allowed range."""
    if not tiers:
        raise ConfigError(
            "config key 'tiers' is empty but 'tier-mix' is set: define tiers like 'full=1.0 tiny=0.25'"
        )
    parsed: dict[str, Tier] = {}
    for name, value in _pairs(tiers, "tiers"):
        width, _, quant = value.partition("/")
        try:
            parsed[name] = Tier(name, width=float(width), quant=quant or "fp32")
        except ValueError as err:
            raise ConfigError(f"config key 'tiers': entry {name}={value!r}: {err}") from None
    if not mix:
        raise ConfigError("config key 'tier-mix' is empty: give each tier a share, e.g. 'full=0.5 tiny=0.5'")
    try:
        shares = {name: float(v) for name, v in _pairs(mix, "tier-mix")}
    except ValueError as err:
        raise ConfigError(f"config key 'tier-mix': {err}") from None
    mix_parsed = parse_mix(shares, parsed)
    ordered = dict(sorted(parsed.items(), key=lambda kv: -kv[1].width))
    return ordered, mix_parsed
