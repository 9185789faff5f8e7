"""`TieredStrategy`: one federation, several device tiers, one model per tier.

Each tier's clients get their tier's model through the downlink codec (a `FedCompress` per tier tracks what each
client holds and decodes its uplink), train it, and send compressed updates. Then, by `mode`:

- "separate": each tier is averaged over its own clients only (the small model alone, plain FedAvg);
- "heterofl": tier models are the leading channels of one global model; each coordinate is averaged over the
  clients whose model holds it (HeteroFL, Diao et al. 2021);
- "distill": each tier is averaged over its clients, then every tier's model is distilled on the server's proxy
  set from the ensemble of all tiers' models (FedDF-style), so each tier learns from every client.
"""

from __future__ import annotations

import copy
import logging
from collections import OrderedDict
from collections.abc import Callable, Iterable
from typing import Any

import numpy as np
import torch
from flwr.app import ArrayRecord, ConfigRecord, Message, MetricRecord
from flwr.serverapp import Grid
from flwr.serverapp.strategy import Strategy
from torch import nn

from fedcompress.devices import Tier
from fedcompress.distillation import distill
from fedcompress.flower.records import numpy_to_record, record_to_numpy, state_to_numpy
from fedcompress.flower.strategy import WIDTH_KEY, FedCompress, _float32
from fedcompress.ledger import Ledger

log = logging.getLogger("fedcompress")
Arrays = OrderedDict[str, np.ndarray]
MODES = ("separate", "heterofl", "distill")


def split_clients(k: int, counts: dict[str, int]) -> dict[str, int]:
    """Clients per round for each tier, proportional to its clients (largest remainder, >= 1 if it has any)."""
    total = sum(counts.values())
    quota = {t: k * c / total for t, c in counts.items()}
    out = {t: min(counts[t], max(1 if counts[t] else 0, int(q))) for t, q in quota.items()}
    for t in sorted(quota, key=lambda t: -(quota[t] - int(quota[t]))):
        if sum(out.values()) >= k:
            break
        if out[t] < counts[t]:
            out[t] += 1
    return out


def slice_like(full: Arrays, shapes: dict[str, tuple[int, ...]]) -> Arrays:
    """The leading block of each tensor (HeteroFL's sub-model): channel-major flattening keeps fc inputs aligned."""
    return OrderedDict(
        (k, np.ascontiguousarray(full[k][tuple(slice(0, s) for s in shape)])) for k, shape in shapes.items()
    )


def heterofl_aggregate(full: Arrays, updates: list[tuple[Arrays, float]]) -> Arrays:
    """Weighted mean per coordinate over the sub-models that hold it; coordinates no client holds keep their value."""
    out = OrderedDict()
    for k, g in full.items():
        acc = np.zeros_like(g, dtype=np.float64)
        cnt = np.zeros_like(g, dtype=np.float64)
        for arrays, weight in updates:
            block = tuple(slice(0, s) for s in arrays[k].shape)
            acc[block] += weight * arrays[k]
            cnt[block] += weight
        out[k] = np.where(cnt > 0, acc / np.maximum(cnt, 1e-12), g).astype(np.float32)
    return out


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
        mode: str = "distill",
        uplink: str = "identity",
        downlink: str = "identity",
        ledger: Ledger | None = None,
        proxy_x: torch.Tensor | None = None,
        distill_options: dict[str, Any] | None = None,
        shared_initial: bool = True,
        teachers: str = "all",
    ) -> None:
        if mode not in MODES:
            raise ValueError(f"tier-training mode {mode!r}: expected one of {MODES}")
        if mode == "distill" and proxy_x is None:
            raise ValueError("distillation needs a proxy set on the server")
        self.tiers = dict(sorted(tiers.items(), key=lambda kv: -kv[1].width))
        self.top = next(iter(self.tiers))
        self.mode = mode
        self.models = models
        self.proxy_x = proxy_x
        self.distill_options = distill_options or {}
        self.seed = seed
        self.teachers = teachers  # "all": every tier teaches every tier; "wider": only tiers at least as wide
        self.tier_of_partition = dict(tier_of)
        self.arrays: dict[str, Arrays] = {t: _copy(state_to_numpy(models[t])) for t in self.tiers}
        self.shapes = {t: {k: v.shape for k, v in a.items()} for t, a in self.arrays.items()}
        if mode == "heterofl":
            self.global_arrays = self.arrays[self.top]
            self.arrays = {t: slice_like(self.global_arrays, self.shapes[t]) for t in self.tiers}
        counts = {t: sum(1 for p in partitions if tier_of[p] == t) for t in self.tiers}
        per_round = split_clients(clients_per_round, counts)
        self.per_tier = {
            t: FedCompress(
                make_inner(),
                partitions={p: n for p, n in partitions.items() if tier_of[p] == t},
                clients_per_round=per_round[t],
                seed=seed,
                uplink=uplink,
                downlink=downlink,
                ledger=ledger,
                # HeteroFL's sub-models are slices of the global model, not what a client rebuilds from the seed
                shared_initial=_copy(self.arrays[t]) if shared_initial and mode != "heterofl" else None,
                tier=t,
            )
            for t in self.tiers
            if counts[t]
        }
        self.partition_of = {n: p for p, n in partitions.items()}
        self.train_metrics: dict[int, MetricRecord | None] = {}
        log.info("tiers %s, clients %s, per round %s, mode %s", list(self.tiers), counts, per_round, mode)

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
        messages: list[Message] = []
        for t, fc in self.per_tier.items():
            tier_config = ConfigRecord(dict(config))
            tier_config[WIDTH_KEY] = self.tiers[t].width
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
        if self.mode == "heterofl":
            updates = []
            for t, fc in self.per_tier.items():
                for msg in fc.decode_replies(server_round, by_tier[t]):
                    n = float(msg.content["metrics"]["num-examples"])
                    updates.append((_float32(record_to_numpy(msg.content["arrays"])), n))
                    losses.append((float(msg.content["metrics"].get("train_loss", 0.0)), n))
            if updates:
                self.global_arrays = heterofl_aggregate(self.global_arrays, updates)
                self.arrays = {t: slice_like(self.global_arrays, self.shapes[t]) for t in self.tiers}
        else:
            for t, fc in self.per_tier.items():
                record, metrics = fc.aggregate_train(server_round, by_tier[t])
                if record is not None:
                    self.arrays[t] = _copy(_float32(record_to_numpy(record)))
                if metrics is not None and "train_loss" in metrics:
                    losses.append((float(metrics["train_loss"]), float(len(by_tier[t]))))
            if self.mode == "distill" and int(self.distill_options.get("epochs", 1)) > 0:
                self._distill(server_round)
        metrics = None
        if losses:
            total = sum(w for _, w in losses)
            metrics = MetricRecord({"train_loss": sum(v * w for v, w in losses) / max(total, 1e-12)})
        self.train_metrics[server_round] = metrics
        return numpy_to_record(self.arrays[self.top]), metrics

    def _distill(self, server_round: int) -> None:
        """Every tier's model learns from the ensemble of all tiers' models on the unlabeled proxy set."""
        for t in self.tiers:
            self.models[t].load_state_dict({k: torch.from_numpy(v) for k, v in self.arrays[t].items()})
        frozen = {t: copy.deepcopy(self.models[t]).eval() for t in self.tiers}
        opts = dict(self.distill_options)
        epochs = int(opts.pop("epochs", 1))
        for i, t in enumerate(self.tiers):
            width = self.tiers[t].width
            teachers = [
                m for u, m in frozen.items() if self.teachers == "all" or self.tiers[u].width >= width
            ]
            distill(
                self.models[t], teachers, self.proxy_x, epochs=epochs, alpha=1.0,
                seed=self.seed * 7919 + server_round * 31 + i, **opts,
            )  # fmt: skip
            self.arrays[t] = _copy(state_to_numpy(self.models[t]))

    def tier_models(self) -> dict[str, nn.Module]:
        """Each tier's current model (weights copied in)."""
        for t in self.tiers:
            self.models[t].load_state_dict({k: torch.from_numpy(v.copy()) for k, v in self.arrays[t].items()})
        return self.models

    def configure_evaluate(
        self, server_round: int, arrays: ArrayRecord, config: ConfigRecord, grid: Grid
    ) -> Iterable[Message]:
        return []

    def aggregate_evaluate(self, server_round: int, replies: Iterable[Message]) -> MetricRecord | None:
        return None

    def summary(self) -> None:
        log.info("TieredStrategy(mode=%s, tiers=%s)", self.mode, {t: x.width for t, x in self.tiers.items()})


def _copy(arrays: Arrays) -> Arrays:
    return OrderedDict((k, np.array(v, dtype=np.float32, copy=True)) for k, v in arrays.items())
