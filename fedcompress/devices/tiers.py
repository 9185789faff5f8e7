"""Device tiers: recipes for the model a class of devices receives, and how clients spread over them.

A tier's `width` is the fraction of channels kept by structured pruning of the global model (a genuinely
smaller dense model, HeteroFL-style), `prune_ratio` is extra unstructured magnitude sparsity, and `quant`
is how the weights are stored ("fp32", "int8" post-training quantization, "kmeansB" B-bit weight sharing).
"""

from __future__ import annotations

import math
import re
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import torch

from fedcompress.errors import ConfigError
from fedcompress.pruning._checks import check_ratio

_KMEANS = re.compile(r"^kmeans([1-8])$")


def quant_bits(quant: str) -> int:
    """Bits per stored weight of a quant mode: fp32 32, int8 8, kmeansB B."""
    if quant == "fp32":
        return 32
    if quant == "int8":
        return 8
    m = _KMEANS.match(quant)
    if m:
        return int(m.group(1))
    raise ConfigError(f"quant must be 'fp32', 'int8' or 'kmeans1'..'kmeans8', got {quant!r}")


@dataclass(frozen=True)
class Tier:
    name: str
    width: float = 1.0
    prune_ratio: float = 0.0
    quant: str = "fp32"

    def __post_init__(self) -> None:
        if not isinstance(self.name, str) or not self.name:
            raise ConfigError(f"tier name must be a non-empty string, got {self.name!r}")
        if not isinstance(self.width, (int, float)) or not 0 < self.width <= 1:
            raise ConfigError(f"tier {self.name!r}: width must be in (0, 1], got {self.width!r}")
        check_ratio(f"tier {self.name!r}: prune_ratio", self.prune_ratio)
        quant_bits(self.quant)


def parse_tiers(table: Mapping[str, Mapping[str, Any]]) -> dict[str, Tier]:
    """{"tiny": {"width": 0.25, "prune_ratio": 0.5, "quant": "int8"}, ...} -> {"tiny": Tier(...)}."""
    if not table:
        raise ConfigError("tier table is empty; define at least one tier")
    tiers: dict[str, Tier] = {}
    for name, spec in table.items():
        if not isinstance(spec, Mapping):
            raise ConfigError(f"tier {name!r} must be a table, got {type(spec).__name__}")
        unknown = sorted(set(spec) - {"width", "prune_ratio", "quant"})
        if unknown:
            raise ConfigError(f"tier {name!r}: unknown keys {unknown}; allowed: width, prune_ratio, quant")
        tiers[name] = Tier(name, **spec)
    return tiers


def parse_mix(table: Mapping[str, float], tiers: Mapping[str, Tier] | None = None) -> dict[str, float]:
    """{"tiny": 0.3, "mid": 0.4, "full": 0.3}: non-negative shares summing to 1 (within 1e-6)."""
    if not table:
        raise ConfigError("tier mix is empty")
    mix: dict[str, float] = {}
    for name, share in table.items():
        if tiers is not None and name not in tiers:
            raise ConfigError(f"tier mix names unknown tier {name!r}; known: {sorted(tiers)}")
        if isinstance(share, bool) or not isinstance(share, (int, float)) or not 0 <= share <= 1:
            raise ConfigError(f"tier mix share for {name!r} must be in [0, 1], got {share!r}")
        mix[name] = float(share)
    total = sum(mix.values())
    if not math.isclose(total, 1.0, abs_tol=1e-6):
        raise ConfigError(f"tier mix shares must sum to 1, got {total}")
    return mix


def load_tiers_toml(text: str) -> tuple[dict[str, Tier], dict[str, float]]:
    """Parse `[tiers.NAME] width=.. prune_ratio=.. quant=..` tables and a `[mix]` table from TOML text."""
    doc = tomllib.loads(text)
    tiers = parse_tiers(doc.get("tiers", {}))
    mix = parse_mix(doc["mix"], tiers) if "mix" in doc else {n: 1 / len(tiers) for n in tiers}
    return tiers, mix


def assign_tiers(num_clients: int, mix: Mapping[str, float], seed: int = 0) -> list[str]:
    """Tier name for each client id: exact counts by largest remainder, order shuffled with `seed`.

    Exact counts (not i.i.d. draws) keep small federations at the asked proportions.
    """
    if num_clients < 0:
        raise ConfigError(f"num_clients must be >= 0, got {num_clients}")
    mix = parse_mix(mix)
    names = list(mix)
    quotas = [mix[n] * num_clients for n in names]
    counts = [int(q) for q in quotas]
    order = sorted(range(len(names)), key=lambda i: (-(quotas[i] - counts[i]), i))
    for i in order[: num_clients - sum(counts)]:
        counts[i] += 1
    labels = [n for n, c in zip(names, counts, strict=True) for _ in range(c)]
    perm = torch.randperm(num_clients, generator=torch.Generator().manual_seed(seed)).tolist()
    return [labels[i] for i in perm]
