"""Budgets, not hand-picked widths: a NetAdapt-style search for the recipe that fits a device.

Every decision uses the MEASURED size of the real artefact (written to disk) and the MEASURED latency of the
model loaded back from it (batch 1, one CPU thread on this machine, the reference CPU). Per storage (bits):

1. the floor (every layer at its fewest channels) is measured first: if no storage fits even there, stop
   with an error naming the smallest size and latency any model reaches, before any training;
2. from the teacher's shape, each step sets a target `step` below the current cost for every constraint
   still violated; for each layer, a binary search on its channel count finds the fewest channels removed
   that meet the target (measured); each such candidate is distilled briefly and scored on `val`; the most
   accurate is kept (Yang et al. 2018, NetAdapt);
3. once the artefact fits, the recipe is trained in full (`make_device_model`) and re-measured.

The storage with the most accurate fitting model wins.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from fedcompress.devices.profile import DeviceProfile
from fedcompress.distillation import distill
from fedcompress.errors import ConfigError
from fedcompress.tiers.delivery import (
    DeviceModel,
    Recipe,
    accuracy,
    channel_scores,
    check_family,
    check_proxy,
    file_size,
    make_device_model,
    shrink,
    storage_bits,
    store,
    teacher_channels,
)
from fedcompress.tiers.delivery import (
    latency_ms as artefact_latency_ms,
)

KB = 1024
MBIT_BYTES = 1_000_000 / 8
PROFILE_KEYS = ("memory-kb", "memory-mb", "latency-ms", "downlink-mbps", "max-download-s")
MIN_PROXY = 64
Progress = Callable[[str], None]


class BudgetError(ConfigError):
    """No model of the family can meet the budget; the message names the smallest achievable."""


def _positive(name: str, value: Any) -> float:
    if isinstance(value, bool):
        raise ConfigError(f"{name} must be a number > 0, got {value!r}")
    try:
        v = float(value)
    except (TypeError, ValueError):
        raise ConfigError(f"{name} must be a number > 0, got {value!r}") from None
    if not math.isfinite(v) or v <= 0:
        raise ConfigError(f"{name} must be a number > 0, got {value!r}")
    return v


@dataclass(frozen=True)
class DeviceBudget:
    """What one device allows: artefact bytes in memory, inference latency on the reference CPU (batch 1,
    one thread), and optionally a download-time limit at its downlink speed."""

    memory_bytes: int
    latency_ms: float
    downlink_bytes_per_s: float | None = None
    max_download_s: float = 60.0

    def __post_init__(self) -> None:
        object.__setattr__(self, "memory_bytes", int(_positive("memory budget (bytes)", self.memory_bytes)))
        object.__setattr__(self, "latency_ms", _positive("latency-ms", self.latency_ms))
        if self.downlink_bytes_per_s is not None:
            _positive("downlink (bytes/s)", self.downlink_bytes_per_s)
        _positive("max-download-s", self.max_download_s)

    @property
    def max_bytes(self) -> int:
        """The artefact must fit in memory and download within `max_download_s`."""
        if self.downlink_bytes_per_s is None:
            return self.memory_bytes
        return min(self.memory_bytes, int(self.downlink_bytes_per_s * self.max_download_s))

    def fits(self, nbytes: int, latency_ms: float) -> bool:
        return nbytes <= self.max_bytes and latency_ms <= self.latency_ms

    def describe(self) -> str:
        down = "" if self.downlink_bytes_per_s is None else (
            f", download <= {self.max_download_s:g} s at {self.downlink_bytes_per_s / MBIT_BYTES:g} Mbit/s"
        )  # fmt: skip
        return f"<= {self.max_bytes:,} B artefact (memory {self.memory_bytes:,} B{down}), <= {self.latency_ms:g} ms"

    @classmethod
    def from_mapping(cls, fields: Mapping[str, Any]) -> DeviceBudget:
        """From {"memory-kb" | "memory-mb", "latency-ms", ["downlink-mbps"], ["max-download-s"]} (KB = 1024 B)."""
        unknown = sorted(set(fields) - set(PROFILE_KEYS))
        if unknown:
            raise ConfigError(f"unknown device budget fields {unknown}; accepted: {list(PROFILE_KEYS)}")
        if ("memory-kb" in fields) == ("memory-mb" in fields):
            raise ConfigError("give exactly one of memory-kb or memory-mb (a number > 0)")
        if "latency-ms" not in fields:
            raise ConfigError("latency-ms is missing; expected the inference limit in ms (a number > 0)")
        memory = (
            _positive("memory-kb", fields["memory-kb"]) * KB
            if "memory-kb" in fields
            else _positive("memory-mb", fields["memory-mb"]) * KB * KB
        )
        down = fields.get("downlink-mbps")
        return cls(
            memory_bytes=int(memory),
            latency_ms=_positive("latency-ms", fields["latency-ms"]),
            downlink_bytes_per_s=None if down is None else _positive("downlink-mbps", down) * MBIT_BYTES,
            max_download_s=_positive("max-download-s", fields.get("max-download-s", 60.0)),
        )

    @classmethod
    def from_profile(
        cls, profile: DeviceProfile, latency_ms: float, max_download_s: float = 60.0
    ) -> DeviceBudget:
        """A `DeviceProfile` gives memory and downlink; its own `latency_ms` is network round-trip time, so the
        inference limit is passed separately (and the round trip counts against the download time)."""
        window = _positive("max-download-s", max_download_s) - profile.latency_ms / 1000.0
        if window <= 0:
            raise ConfigError(
                f"max-download-s {max_download_s} is shorter than the link latency {profile.latency_ms} ms"
            )
        return cls(profile.memory_bytes, latency_ms, profile.downlink_bytes_per_s, window)


@dataclass(frozen=True)
class Cost:
    nbytes: int
    latency_ms: float


@dataclass
class Search:
    """The chosen recipe, its trained device model, and every measured step (for the report)."""

    recipe: Recipe
    device_model: DeviceModel
    trace: list[dict[str, Any]] = field(default_factory=list)
    candidates: dict[str, DeviceModel] = field(default_factory=dict)


class _Meter:
    """Measured cost of an untrained shrunk model stored as `storage` (cached by shape)."""

    def __init__(
        self, teacher: nn.Module, scores: Mapping[str, torch.Tensor], proxy_x: torch.Tensor, recipe0: Recipe
    ):
        self.teacher, self.scores, self.proxy_x, self.recipe0 = teacher, scores, proxy_x, recipe0
        self.cache: dict[tuple[str, tuple[int, ...]], Cost] = {}

    def __call__(self, channels: Mapping[str, int], storage: str) -> Cost:
        key = (storage, tuple(channels.values()))
        if key not in self.cache:
            student = shrink(self.teacher, channels, self.scores)
            # qat8 is sized and timed as int8 (same artefact); the fake-quant training comes at the end
            quick = "int8" if storage == "qat8" else storage
            model, data = store(student, quick, self.proxy_x[:64])
            latency = artefact_latency_ms(model, self.proxy_x, runs=30)
            self.cache[key] = Cost(file_size(data), latency)
        return self.cache[key]


def _floor(full: Mapping[str, int], min_keep: float) -> dict[str, int]:
    return {n: max(1, math.ceil(c * min_keep)) for n, c in full.items()}


def _short_score(
    teacher: nn.Module, channels: Mapping[str, int], scores: Mapping[str, torch.Tensor], proxy_x: torch.Tensor,
    val: tuple[torch.Tensor, torch.Tensor], *, lr: float, tau: float, seed: int, short_examples: int,
) -> float:  # fmt: skip
    """NetAdapt's short-term fine-tune: one KD pass over a slice of the proxy set, then val accuracy."""
    student = shrink(teacher, channels, scores)
    distill(student, teacher, proxy_x[:short_examples], epochs=1, lr=lr, tau=tau, seed=seed)
    return accuracy(student, *val)


def check_val(val: Any) -> tuple[torch.Tensor, torch.Tensor]:
    if not (
        isinstance(val, (tuple, list)) and len(val) == 2 and all(isinstance(t, torch.Tensor) for t in val)
    ):
        raise ConfigError("val must be a pair (x, y) of tensors")
    x, y = val
    if len(x) != len(y) or len(y) == 0:
        raise ConfigError(f"val x ({len(x)}) and y ({len(y)}) must be non-empty and of equal length")
    return x, y


def search_recipe(
    teacher: nn.Module,
    budget: DeviceBudget,
    proxy_x: torch.Tensor,
    val: tuple[torch.Tensor, torch.Tensor],
    *,
    family: str,
    storages: Sequence[str] = ("int8", "kmeans4"),
    step: float = 0.25,
    min_keep: float = 1 / 16,
    epochs: int = 5,
    lr: float = 2e-3,
    tau: float = 4.0,
    seed: int = 0,
    short_examples: int = 256,
    importance: str = "l1",
    progress: Progress | None = None,
) -> Search:
    """Search per-layer channels and storage bits for `budget`; see the module docstring."""
    say = progress or (lambda _msg: None)
    check_family(teacher, family)
    if not isinstance(budget, DeviceBudget):
        raise ConfigError(
            f"budget must be a DeviceBudget (see DeviceBudget.from_profile), got {type(budget).__name__}"
        )
    if not storages:
        raise ConfigError("storages must name at least one storage")
    for s in storages:
        storage_bits(s)
    if not 0 < step < 1:
        raise ConfigError(f"step must be in (0, 1), got {step}")
    if not 0 < min_keep <= 1:
        raise ConfigError(f"min_keep must be in (0, 1], got {min_keep}")
    check_proxy(proxy_x, teacher, MIN_PROXY)
    val = check_val(val)
    teacher = teacher.eval()
    full = teacher_channels(teacher)
    say(f"ranking channels of {list(full)} on {len(proxy_x)} proxy examples")
    scores = channel_scores(teacher, proxy_x, importance)
    recipe0 = Recipe(
        family, int(teacher.fc2.out_features), dict(full), {}, 1.0, storages[0], epochs, lr, tau, seed=seed
    )
    meter = _Meter(teacher, scores, proxy_x, recipe0)
    floor = _floor(full, min_keep)
    floors = {s: meter(floor, s) for s in storages}
    for s, c in floors.items():
        say(f"floor {s}: {c.nbytes:,} B, {c.latency_ms:.3f} ms at channels {floor}")
    if not any(budget.fits(c.nbytes, c.latency_ms) for c in floors.values()):
        small_b = min(floors.items(), key=lambda kv: kv[1].nbytes)
        small_l = min(floors.items(), key=lambda kv: kv[1].latency_ms)
        raise BudgetError(
            f"no {family} model meets the budget ({budget.describe()}): the smallest achievable artefact is "
            f"{small_b[1].nbytes:,} B ({small_b[0]}) and the fastest {small_l[1].latency_ms:.3f} ms ({small_l[0]}), "
            f"with every layer at {min_keep:g} of its channels {floor}, storages searched {list(storages)}"
        )
    trace: list[dict[str, Any]] = []
    results: dict[str, DeviceModel] = {}
    for storage in storages:
        if not budget.fits(floors[storage].nbytes, floors[storage].latency_ms):
            say(f"{storage}: even the floor misses the budget; skipped")
            continue
        channels = _adapt(teacher, budget, meter, storage, full, floor, scores, proxy_x, val, step,
                          lr, tau, seed, short_examples, trace, say)  # fmt: skip
        for _attempt in range(4):
            say(f"{storage}: training {channels} for {epochs} epochs on the proxy set")
            dm = make_device_model(
                teacher, family=family, width=1.0, channels=channels, proxy_x=proxy_x, storage=storage,
                epochs=epochs, lr=lr, tau=tau, seed=seed, val=val, scores=scores, importance=importance,
            )  # fmt: skip
            say(
                f"{storage}: {dm.nbytes:,} B, {dm.latency_ms:.3f} ms, val accuracy {dm.accuracy:.4f} ({dm.seconds:.1f} s)"
            )
            trace.append({"storage": storage, "stage": "final", "channels": dict(channels), "bytes": dm.nbytes,
                          "latency_ms": dm.latency_ms, "val_accuracy": dm.accuracy})  # fmt: skip
            if budget.fits(dm.nbytes, dm.latency_ms) or channels == floor:
                break
            say(f"{storage}: the trained artefact misses the budget on re-measurement; one more step")
            meter.cache.clear()
            smaller = _adapt(teacher, budget, meter, storage, channels, floor, scores, proxy_x, val, step,
                             lr, tau, seed, short_examples, trace, say, force=True)  # fmt: skip
            if smaller == channels:
                break
            channels = smaller
        if budget.fits(dm.nbytes, dm.latency_ms):
            results[storage] = dm
    if not results:
        raise BudgetError(
            f"no trained {family} model stayed within the budget ({budget.describe()}) when re-measured"
        )
    best = max(results, key=lambda s: (results[s].accuracy, -results[s].nbytes))
    say(f"chose {best}: {results[best].recipe.channels}")
    return Search(results[best].recipe, results[best], trace, results)


def _adapt(
    teacher: nn.Module, budget: DeviceBudget, meter: _Meter, storage: str, start: Mapping[str, int],
    floor: Mapping[str, int], scores: Mapping[str, torch.Tensor], proxy_x: torch.Tensor,
    val: tuple[torch.Tensor, torch.Tensor], step: float, lr: float, tau: float, seed: int, short_examples: int,
    trace: list[dict[str, Any]], say: Progress, force: bool = False,
) -> dict[str, int]:  # fmt: skip
    """NetAdapt iterations from `start` until the measured untrained artefact fits (or `force`: one step)."""
    channels = dict(start)
    full = teacher_channels(teacher)
    grids = {n: {max(1, round(c * k / 16)) for k in range(1, 16)} for n, c in full.items()}
    cost = meter(channels, storage)
    while force or not budget.fits(cost.nbytes, cost.latency_ms):
        force = False
        t_bytes = (
            budget.max_bytes
            if cost.nbytes <= budget.max_bytes
            else max(budget.max_bytes, cost.nbytes * (1 - step))
        )
        t_lat = budget.latency_ms if cost.latency_ms <= budget.latency_ms else max(budget.latency_ms, cost.latency_ms * (1 - step))  # fmt: skip
        meets = lambda c, tb=t_bytes, tl=t_lat: c.nbytes <= tb and c.latency_ms <= tl  # noqa: E731
        proposals = []
        for layer in channels:
            if channels[layer] <= floor[layer]:
                continue
            trial = {**channels, layer: floor[layer]}
            if not meets(meter(trial, storage)):
                continue
            # binary search on a grid of sixteenths of the teacher's channels (plus the floor): the largest
            # kept count below the current one that meets the target
            grid = sorted({floor[layer], *(c for c in grids[layer] if floor[layer] < c < channels[layer])})
            lo, hi = 0, len(grid) - 1
            while lo < hi:
                mid = (lo + hi + 1) // 2
                if meets(meter({**channels, layer: grid[mid]}, storage)):
                    lo = mid
                else:
                    hi = mid - 1
            proposals.append({**channels, layer: grid[lo]})
        if not proposals:  # no single layer reaches the target: shrink every layer by `step` together
            shrunk = {
                n: max(floor[n], min(c - 1, int(c * (1 - step)))) if c > floor[n] else c
                for n, c in channels.items()
            }
            if shrunk == channels:
                break
            proposals.append(shrunk)
        scored = [
            (
                _short_score(
                    teacher, p, scores, proxy_x, val, lr=lr, tau=tau, seed=seed, short_examples=short_examples
                ),
                p,
            )
            for p in proposals
        ]
        acc, channels = max(scored, key=lambda sp: sp[0])
        cost = meter(channels, storage)
        trace.append({"storage": storage, "stage": "adapt", "channels": dict(channels), "bytes": cost.nbytes,
                      "latency_ms": cost.latency_ms, "short_val_accuracy": acc,
                      "target_bytes": int(t_bytes), "target_latency_ms": t_lat,
                      "proposals": [dict(p) for _, p in scored], "proposal_accuracy": [a for a, _ in scored]})  # fmt: skip
        say(
            f"{storage}: step -> {channels}: {cost.nbytes:,} B, {cost.latency_ms:.3f} ms, short-term accuracy {acc:.4f}"
        )
    return channels


def choose_recipe(
    teacher: nn.Module,
    profile: DeviceBudget | DeviceProfile,
    proxy: torch.Tensor,
    val: tuple[torch.Tensor, torch.Tensor],
    *,
    family: str,
    latency_ms: float | None = None,
    **options: Any,
) -> Recipe:
    """The recipe (per-layer channels, bits) that fits `profile`, chosen by measured size and latency.

    A `DeviceProfile` needs `latency_ms` (the inference limit; the profile's own latency is the network's).
    """
    if isinstance(profile, DeviceProfile):
        if latency_ms is None:
            raise ConfigError("a DeviceProfile has no inference latency limit: pass latency_ms (ms, > 0)")
        profile = DeviceBudget.from_profile(profile, latency_ms)
    return search_recipe(teacher, profile, proxy, val, family=family, **options).recipe
