"""The inner Flower strategies a run can name (`strategy = "fedadam"`), as a registry of factories.

Each factory builds the strategy set to train every node the sampling wrapper shows it: fedcompress samples
(seeded), so the inner strategy's own sampling must take all it is shown.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from flwr.serverapp.strategy import Strategy

    from fedcompress.config import RunConfig

TAKE_ALL_SHOWN: dict[str, Any] = dict(
    fraction_train=1.0, fraction_evaluate=0.0, min_train_nodes=1, min_evaluate_nodes=0, min_available_nodes=1
)


def _fl() -> Any:
    from flwr.serverapp import strategy as fl

    return fl


STRATEGIES: dict[str, Callable[[RunConfig], Strategy]] = {
    "fedavg": lambda cfg: _fl().FedAvg(**TAKE_ALL_SHOWN),
    "fedprox": lambda cfg: _fl().FedProx(proximal_mu=cfg.proximal_mu, **TAKE_ALL_SHOWN),
    "fedavgm": lambda cfg: _fl().FedAvgM(
        server_learning_rate=1.0, server_momentum=cfg.server_momentum, **TAKE_ALL_SHOWN
    ),
    "fedmedian": lambda cfg: _fl().FedMedian(**TAKE_ALL_SHOWN),
    "krum": lambda cfg: _fl().Krum(num_malicious_nodes=cfg.num_malicious, **TAKE_ALL_SHOWN),
    "multikrum": lambda cfg: _fl().MultiKrum(
        num_malicious_nodes=cfg.num_malicious,
        num_nodes_to_select=max(1, cfg.clients_per_round - cfg.num_malicious),
        **TAKE_ALL_SHOWN,
    ),
    "fedtrimmedavg": lambda cfg: _fl().FedTrimmedAvg(beta=cfg.trim_beta, **TAKE_ALL_SHOWN),
    "bulyan": lambda cfg: _fl().Bulyan(num_malicious_nodes=_bulyan_f(cfg), **TAKE_ALL_SHOWN),
    "fedadam": lambda cfg: _fl().FedAdam(eta=cfg.server_learning_rate, **TAKE_ALL_SHOWN),
    "fedyogi": lambda cfg: _fl().FedYogi(eta=cfg.server_learning_rate, **TAKE_ALL_SHOWN),
    "fedadagrad": lambda cfg: _fl().FedAdagrad(eta=cfg.server_learning_rate, **TAKE_ALL_SHOWN),
}


def _bulyan_f(cfg: RunConfig) -> int:
    """Bulyan needs n >= 4f + 3 replies: the assumed attackers, capped at what a round of n clients allows."""
    return min(cfg.num_malicious, max(0, (cfg.clients_per_round - 3) // 4))


def make_strategy(cfg: RunConfig) -> Strategy:
    """The inner Flower strategy named in the config."""
    return STRATEGIES[cfg.strategy](cfg)
