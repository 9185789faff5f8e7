"""Which fp32 run a row's ratios are against, and how a strategy with its server settings is named.

"N times fewer bytes than fp32 FedAvg" flatters compression whenever a server optimizer (FedAvgM, FedAdam)
reaches the target in fewer rounds: the honest reference is the cheapest fp32 run to the target among the
strategies a study tried with the same data, model, clients per round and local epochs. A row is also compared
with fp32 under its own strategy and server settings: what compression costs that strategy.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from fedcompress.studies.rows import Row

STRATEGY_NAMES = {
    "fedavg": "FedAvg",
    "fedavgm": "FedAvgM",
    "fedadam": "FedAdam",
    "fedyogi": "FedYogi",
    "fedadagrad": "FedAdagrad",
    "fedprox": "FedProx",
    "fedmedian": "FedMedian",
    "fedtrimmedavg": "FedTrimmedAvg",
    "krum": "Krum",
    "multikrum": "MultiKrum",
    "bulyan": "Bulyan",
}
# The run-config keys each inner strategy reads (fedcompress.flower.strategies), with their short names.
SERVER_LR = ("server-learning-rate", "server lr")
STRATEGY_PARAMS: dict[str, tuple[tuple[str, str], ...]] = {
    "fedavgm": (("server-momentum", "momentum"),),
    "fedadam": (SERVER_LR,),
    "fedyogi": (SERVER_LR,),
    "fedadagrad": (SERVER_LR,),
    "fedprox": (("proximal-mu", "mu"),),
    "fedtrimmedavg": (("trim-beta", "beta"),),
    "krum": (("num-malicious", "f"),),
    "multikrum": (("num-malicious", "f"),),
    "bulyan": (("num-malicious", "f"),),
}
# Settings the registry fixes instead of reading a key (a test checks the registry still does): shown in labels
# so a label says what ran.
FIXED: dict[str, tuple[tuple[str, Any], ...]] = {"fedavgm": (("server lr", 1.0),)}
# Every key that belongs to "the strategy" rather than to the data / model / clients a baseline must share.
STRATEGY_KEYS = ("strategy", *sorted({k for ps in STRATEGY_PARAMS.values() for k, _ in ps}))


def strategy_setting(config: dict[str, Any]) -> tuple[Any, ...]:
    """The strategy and the values of the keys it reads: two rows with equal settings ran the same server."""
    name = config.get("strategy", "fedavg")
    return (name, *(config.get(k) for k, _ in STRATEGY_PARAMS.get(name, ())))


def strategy_label(config: dict[str, Any]) -> str:
    """`FedAvg`, `FedAvgM (server lr 1.0, momentum 0.9)`, `FedAdam (server lr 0.01)`."""
    name = config.get("strategy", "fedavg")
    shown = [*FIXED.get(name, ()), *((short, config.get(k)) for k, short in STRATEGY_PARAMS.get(name, ()))]
    settings = ", ".join(f"{short} {value}" for short, value in shown)  # str(1.0) == "1.0": what was set
    title = STRATEGY_NAMES.get(name, name)
    return f"{title} ({settings})" if settings else title


def strategy_order(setting: tuple[Any, ...]) -> tuple[Any, ...]:
    """Table order: FedAvg, FedAvgM, FedAdam, ... then settings ascending."""
    names = list(STRATEGY_NAMES)
    return (names.index(setting[0]) if setting[0] in names else len(names), str(setting[0]), setting[1:])


def can_be_reference(row: Row) -> bool:
    """An fp32 row that reached the target in every seed: one that missed in some seed is no yardstick."""
    return row.is_fp32 and row.all_reached and row.uplink_mb_to_target is not None


def best_baseline(group: Iterable[Row]) -> Row | None:
    """The fp32 row with the fewest uplink MB to the target (median over seeds); ties: fewer total MB."""
    candidates = [r for r in group if can_be_reference(r)]
    if not candidates:
        return None
    return min(candidates, key=lambda r: (_median(r, "uplink"), _median(r, "total"), r.strategy))


def same_strategy_baseline(row: Row, group: Iterable[Row]) -> Row | None:
    """The fp32 row with the row's own strategy and server settings, if the study ran one that qualifies."""
    return next((b for b in group if can_be_reference(b) and b.setting == row.setting), None)


def _median(row: Row, kind: str) -> float:
    s = getattr(row, f"{kind}_mb_to_target")
    return s.median if s else float("inf")
