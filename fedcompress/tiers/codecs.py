"""Codecs sized to each tier: a small model is cheap to send whole, so one top-k fraction for every tier starves
it (1% of the 30,590-parameter tiny CNN is 306 values a round). Per-tier pipelines are written in the run config:

    tier-uplink   = "mid: topk(0.1) > ef > uniform(4) > entropy; tiny: uniform(8) > entropy"
    tier-downlink = "tiny: uniform(8) > entropy"

Tiers not named use the run's `uplink` / `downlink`.
"""

from __future__ import annotations

from collections.abc import Iterable

from fedcompress.errors import ConfigError


def parse_tier_codecs(text: str, key: str, tiers: Iterable[str]) -> dict[str, str]:
    """'name: spec; name: spec' -> {name: spec}; every spec is parsed now so a typo stops the run before work."""
    from fedcompress.codecs import Pipeline

    known = list(tiers)
    out: dict[str, str] = {}
    for item in (s.strip() for s in text.split(";")):
        if not item:
            continue
        name, sep, spec = (p.strip() for p in item.partition(":"))
        if not sep or not name or not spec:
            raise ConfigError(
                f"config key {key!r}: entry {item!r} is not 'tier: pipeline' (e.g. 'tiny: uniform(8) > entropy')"
            )
        if name not in known:
            raise ConfigError(f"config key {key!r}: unknown tier {name!r}; known tiers: {known}")
        if name in out:
            raise ConfigError(f"config key {key!r}: tier {name!r} named twice")
        try:
            Pipeline.parse(spec)
        except ValueError as err:
            raise ConfigError(f"config key {key!r}: tier {name!r}: bad pipeline {spec!r}: {err}") from None
        out[name] = spec
    return out


def tier_codecs(text: str, default: str, key: str, tiers: Iterable[str]) -> dict[str, str]:
    """Each tier's pipeline: its own if named, else the run's."""
    names = list(tiers)
    own = parse_tier_codecs(text, key, names)
    return {t: own.get(t, default) for t in names}
