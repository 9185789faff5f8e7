"""`TieredStrategy`: one federation, several device tiers, one model per tier (the Flower side).

Each tier's clients get their tier's model through their tier's downlink codec (a `FedCompress` per tier tracks
what each client holds and decodes its uplink), train it, and send compressed updates. How the tiers' models are
combined is the `mode` (see `fedcompress.tiers`); the algorithms live there, this class only routes messages.
"""

from __future__ import annotations

import copy
import logging
import time
from collections import OrderedDict
from collections.abc import Callable, Iterable
from typing import Any

import numpy as np
import torch
from flwr.app import ArrayRecord, ConfigRecord, Message, MetricRecord, RecordDict
from flwr.serverapp import Grid
from flwr.serverapp.strategy import FedAdagrad, FedAdam, FedAvg, FedAvgM, FedProx, FedYogi, Strategy
from torch import nn

from fedcompress.devices import Tier
from fedcompress.errors import ConfigError
from fedcompress.flower.records import numpy_to_record, record_to_numpy, state_to_numpy
from fedcompress.flower.strategy import WIDTH_KEY, FedCompress
from fedcompress.ledger import Ledger
from fedcompress.tiers import (
    MODES,
    NEEDS_PROXY,
    NESTED,
    NESTED_KEY,
    SLICED,
    heterofl_aggregate,
    slice_like,
    split_clients,
)
from fedcompress.tiers.deliver import make_tier_arrays
from fedcompress.tiers.feddf import distill_outer, feddf_step, load_arrays
from fedcompress.tiers.heterofl import SLICED_FROM_KEY
from fedcompress.tiers.nested import NESTED_WEIGHT_KEY, format_widths

log = logging.getLogger("fedcompress")
Arrays = OrderedDict[str, np.ndarray]
MIN_PROXY = 64  # fewer unlabeled images than this cannot stand for the data distribution in distillation

__all__ = ["MODES", "TieredStrategy", "heterofl_aggregate", "slice_like", "split_clients"]


class TieredStrategy(Strategy):
    def __init__(
        self,
        *,
        tiers: dict[str, Tier],
        tier_of: dict[int, str],
        partitions: dict[int, int],
        models: dict[str, nn.Module],
        make_inner: Callable[[], Strategy],
        clients_per_round: int,
        seed: int,
        mode: str = "nested",
        uplink: str | dict[str, str] = "identity",
        downlink: str | dict[str, str] = "identity",
        ledger: Ledger | None = None,
        proxy_x: torch.Tensor | None = None,
        distill_options: dict[str, Any] | None = None,
        shared_initial: bool = True,
        teachers: str = "all",
        refresh_every: int = 5,
        nested_weight: float = 1.0,
    ) -> None:
        if mode not in MODES:
            raise ConfigError(f"config key 'tier-training' = {mode!r}: expected one of {MODES}")
        if mode in NEEDS_PROXY and (proxy_x is None or len(proxy_x) < MIN_PROXY):
            got = 0 if proxy_x is None else len(proxy_x)
            raise ConfigError(
                f"tier-training {mode!r} distills on the server's proxy set, which holds {got} images; need >= "
                f"{MIN_PROXY}: raise 'distill-proxy-fraction' or use tier-training 'nested'"
            )
        if refresh_every < 1:
            raise ConfigError(
                f"config key 'tier-refresh-every' = {refresh_every!r}: expected an integer >= 1"
            )
        self.tiers = dict(sorted(tiers.items(), key=lambda kv: -kv[1].width))
        self.top = next(iter(self.tiers))
        self.mode = mode
        self.models = models
        self.proxy_x = proxy_x
        self.distill_options = distill_options or {}
        self.seed = seed
        self.teachers = teachers  # "all": every tier teaches every tier; "wider": only tiers at least as wide
        self.refresh_every = refresh_every
        self.nested_weight = nested_weight
        self.tier_of_partition = dict(tier_of)
        self.arrays: dict[str, Arrays] = {t: _copy(state_to_numpy(models[t])) for t in self.tiers}
        self.shapes = {t: {k: v.shape for k, v in a.items()} for t, a in self.arrays.items()}
        self.server_step: Strategy | None = None
        if mode in SLICED:
            self.global_arrays = self.arrays[self.top]
            self.arrays = {t: slice_like(self.global_arrays, self.shapes[t]) for t in self.tiers}
            self.server_step = _server_step(make_inner(), mode)
        ups = uplink if isinstance(uplink, dict) else dict.fromkeys(self.tiers, uplink)
        downs = downlink if isinstance(downlink, dict) else dict.fromkeys(self.tiers, downlink)
        self.codecs = {t: (ups[t], downs[t]) for t in self.tiers}
        counts = {t: sum(1 for p in partitions if tier_of[p] == t) for t in self.tiers}
        per_round = split_clients(clients_per_round, counts)
        # a client rebuilds its round-0 model from the seed (sliced tiers: a slice of the seeded widest model);
        # server-made models are not rebuildable, so those go whole on a client's first visit
        rebuilt = {t for t in self.tiers if mode != "deliver" or t == self.top}
        self.per_tier = {
            t: FedCompress(
                make_inner(),
                partitions={p: n for p, n in partitions.items() if tier_of[p] == t},
                clients_per_round=per_round[t],
                seed=seed,
                uplink=ups[t],
                downlink=downs[t],
                ledger=ledger,
                shared_initial=_copy(self.arrays[t]) if shared_initial and t in rebuilt else None,
                tier=t,
            )
            for t in self.tiers
            if counts[t]
        }
        self.partition_of = {n: p for p, n in partitions.items()}
        self.train_metrics: dict[int, MetricRecord | None] = {}
        self.make_seconds: dict[int, float] = {}  # server time spent making device models, per round
        log.info(
            "tiers %s, clients %s, per round %s, mode %s, codecs %s",
            list(self.tiers),
            counts,
            per_round,
            mode,
            self.codecs,
        )

    @property
    def rejections(self) -> dict[int, int]:
        out: dict[int, int] = {}
        for fc in self.per_tier.values():
            for r, n in fc.rejections.items():
                out[r] = out.get(r, 0) + n
        return out

    def configure_train(
        self, server_round: int, arrays: ArrayRecord, config: ConfigRecord, grid: Grid
    ) -> Iterable[Message]:
        if self.mode == "deliver" and (server_round - 1) % self.refresh_every == 0:
            self._deliver(server_round)
        if self.server_step is not None:  # the server optimizer learns where the global model now is
            self.server_step.configure_train(server_round, numpy_to_record(self.global_arrays), config, grid)
        messages: list[Message] = []
        for t, fc in self.per_tier.items():
            tier_config = ConfigRecord(dict(config))
            tier_config[WIDTH_KEY] = self.tiers[t].width
            if self.mode in SLICED:
                tier_config[SLICED_FROM_KEY] = self.tiers[self.top].width
            if self.mode in NESTED:
                narrower = [x.width for x in self.tiers.values() if x.width < self.tiers[t].width]
                if narrower:
                    tier_config[NESTED_KEY] = format_widths(narrower)
                    if self.nested_weight != 1.0:
                        tier_config[NESTED_WEIGHT_KEY] = self.nested_weight
            messages.extend(
                fc.configure_train(server_round, numpy_to_record(self.arrays[t]), tier_config, grid)
            )
        return messages

    def aggregate_train(
        self, server_round: int, replies: Iterable[Message]
    ) -> tuple[ArrayRecord | None, MetricRecord | None]:
        by_tier: dict[str, list[Message]] = {t: [] for t in self.per_tier}
        for reply in replies:
            pid = self.partition_of.get(reply.metadata.src_node_id)
            if pid is not None:
                by_tier[self.tier_of_partition[pid]].append(reply)
        losses: list[tuple[float, float]] = []
        if self.mode in SLICED:
            updates, carrier = [], None
            for t, fc in self.per_tier.items():
                for msg in fc.decode_replies(server_round, by_tier[t]):
                    n = float(msg.content["metrics"]["num-examples"])
                    updates.append((_copy(record_to_numpy(msg.content["arrays"])), n))
                    losses.append((float(msg.content["metrics"].get("train_loss", 0.0)), n))
                    carrier = msg
            if carrier is not None:  # at least one accepted reply
                self.global_arrays = self._step(
                    server_round, heterofl_aggregate(self.global_arrays, updates), carrier
                )
                if self.mode == "nested-distill" and len(self.tiers) > 1:
                    self.global_arrays = self._distill_outer(server_round)
                self.arrays = {t: slice_like(self.global_arrays, self.shapes[t]) for t in self.tiers}
                for fc in self.per_tier.values():  # clients' error feedback: their updates are in the model
                    fc.mark_applied(server_round)
        else:
            for t, fc in self.per_tier.items():
                record, metrics = fc.aggregate_train(server_round, by_tier[t])
                if record is not None:
                    self.arrays[t] = _copy(record_to_numpy(record))
                if metrics is not None and "train_loss" in metrics:
                    losses.append((float(metrics["train_loss"]), float(len(by_tier[t]))))
            if self.mode == "distill" and int(self.distill_options.get("epochs", 1)) > 0:
                self.arrays = feddf_step(
                    {t: self.models[t] for t in self.tiers}, self.arrays,
                    {t: x.width for t, x in self.tiers.items()}, self.proxy_x, teachers=self.teachers,
                    seed=self.seed * 7919 + server_round * 31, options=self.distill_options,
                )  # fmt: skip
        metrics = None
        if losses:
            total = sum(w for _, w in losses)
            metrics = MetricRecord({"train_loss": sum(v * w for v, w in losses) / max(total, 1e-12)})
        self.train_metrics[server_round] = metrics
        return numpy_to_record(self.arrays[self.top]), metrics

    def _distill_outer(self, server_round: int) -> Arrays:
        """The widest tier's own channels learn the ensemble of every tier's model (each a slice of the global
        model) on the proxy set; what narrower tiers hold stays as aggregated."""
        t0 = time.perf_counter()
        teachers = [
            copy.deepcopy(load_arrays(self.models[t], slice_like(self.global_arrays, self.shapes[t]))).eval()
            for t in self.tiers
        ]
        second = list(self.tiers)[1]
        out = distill_outer(
            self.models[self.top], self.global_arrays, dict(self.shapes[second]), teachers, self.proxy_x,
            seed=self.seed * 7919 + server_round * 31, options=self.distill_options,
        )  # fmt: skip
        self.make_seconds[server_round] = time.perf_counter() - t0
        return out

    def _step(self, server_round: int, averaged: Arrays, carrier: Message) -> Arrays:
        """The run's server optimizer (FedAvg: none; FedAvgM: momentum; FedAdam/FedYogi/FedAdagrad: adaptive)
        applied to the per-coordinate average, by the Flower strategy itself: the average is handed to it as the
        one reply of the round (the carrier, a decoded reply whose content is replaced)."""
        carrier.content = RecordDict(
            {"arrays": numpy_to_record(averaged), "metrics": MetricRecord({"num-examples": 1})}
        )
        record, _ = self.server_step.aggregate_train(server_round, [carrier])  # type: ignore[union-attr]
        return averaged if record is None else _copy(record_to_numpy(record))

    def _deliver(self, server_round: int) -> None:
        """Make every smaller tier's model from the global (widest tier's) model; time it."""
        teacher = load_arrays(self.models[self.top], self.arrays[self.top])
        spent = 0.0
        for i, (t, tier) in enumerate(self.tiers.items()):
            if t == self.top:
                continue
            self.arrays[t], secs = make_tier_arrays(
                teacher, self.models[t], tier.width, self.proxy_x,
                start=None if server_round == 1 else self.arrays[t],
                seed=self.seed * 7919 + server_round * 31 + i, options=self.distill_options,
            )  # fmt: skip
            spent += secs
        self.make_seconds[server_round] = spent

    def tier_models(self) -> dict[str, nn.Module]:
        """Each tier's current model (weights copied in)."""
        for t in self.tiers:
            load_arrays(self.models[t], self.arrays[t])
        return self.models

    def configure_evaluate(
        self, server_round: int, arrays: ArrayRecord, config: ConfigRecord, grid: Grid
    ) -> Iterable[Message]:
        return []

    def aggregate_evaluate(self, server_round: int, replies: Iterable[Message]) -> MetricRecord | None:
        return None

    def summary(self) -> None:
        log.info("TieredStrategy(mode=%s, tiers=%s)", self.mode, {t: x.width for t, x in self.tiers.items()})


SERVER_STEPS = (FedAvg, FedProx, FedAvgM, FedAdam, FedYogi, FedAdagrad)  # an average, then an optimizer step


def _server_step(strategy: Strategy, mode: str) -> Strategy:
    """The inner strategy as the server optimizer of a sliced mode; robust aggregators (median, Krum, ...) need
    whole models from every client, which per-coordinate averaging of sub-models cannot give them."""
    if type(strategy) not in SERVER_STEPS:
        raise ConfigError(
            f"config key 'strategy' = {type(strategy).__name__}: tier-training {mode!r} averages each coordinate "
            "over the sub-models that hold it, then takes the strategy's server step; expected one of "
            "fedavg, fedprox, fedavgm, fedadam, fedyogi, fedadagrad (or tier-training 'distill' / 'separate')"
        )
    return strategy


def _copy(arrays: Arrays) -> Arrays:
    """float32 copies (server strategies such as FedAdam aggregate in float64; models and codecs use float32)."""
    return OrderedDict((k, np.array(v, dtype=np.float32, copy=True)) for k, v in arrays.items())
