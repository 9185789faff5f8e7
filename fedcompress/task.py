"""What server and client both derive from a RunConfig: the dataset, a client's share of it, the model, the
inner strategy. Cached per process, because a simulation actor serves many clients from one process."""

from __future__ import annotations

from functools import lru_cache

import numpy as np
import torch
from torch import nn

from fedcompress.config import RunConfig
from fedcompress.data import FederatedDataset, load_dataset, partition, split_train_val
from fedcompress.models import build_model


def dataset(cfg: RunConfig) -> FederatedDataset:
    return load_dataset(cfg.dataset, cfg.data_dir or None)


def model_name(cfg: RunConfig) -> str:
    return dataset(cfg).default_model if cfg.model == "auto" else cfg.model


def make_model(cfg: RunConfig, width: float | None = None) -> nn.Module:
    """The global model, initialised from the run's seed (identical in every process)."""
    ds = dataset(cfg)
    torch.manual_seed(cfg.seed)
    return build_model(model_name(cfg), ds.num_classes, cfg.width if width is None else width)


@lru_cache(maxsize=4)
def _partitions(
    name: str, data_dir: str, scheme: str, n: int, alpha: float, shards: int, seed: int
) -> tuple[np.ndarray, ...]:
    ds = load_dataset(name, data_dir or None)
    return tuple(partition(ds, scheme, n, alpha=alpha, shards_per_client=shards, seed=seed))


def uses_proxy(cfg: RunConfig) -> bool:
    """Tiered runs keep a proxy set on the server (for distillation), the same for every way of training tiers."""
    return bool(cfg.tiers)


def proxy_indices(cfg: RunConfig) -> np.ndarray:
    """The train examples the server keeps as an unlabeled proxy set (withheld from every client), seeded."""
    n = len(dataset(cfg).y_train)
    rng = np.random.default_rng([cfg.seed, 0x9E37])
    return np.sort(rng.choice(n, size=max(1, int(round(cfg.distill_proxy_fraction * n))), replace=False))


@lru_cache(maxsize=1024)
def client_partition(cfg: RunConfig, partition_id: int) -> tuple[np.ndarray, np.ndarray]:
    """(train indices, validation indices) of one client, fixed by the seed; cached (read-only), as a client
    asks on every message."""
    parts = _partitions(
        cfg.dataset, cfg.data_dir, cfg.partitioning, cfg.num_partitions, cfg.dirichlet_alpha,
        cfg.shards_per_client, cfg.seed,
    )  # fmt: skip
    if not 0 <= partition_id < len(parts):
        raise ValueError(
            f"partition-id {partition_id} outside [0, {len(parts)}) for num-partitions={len(parts)}"
        )
    mine = parts[partition_id]
    if uses_proxy(cfg):
        mine = np.setdiff1d(mine, proxy_indices(cfg), assume_unique=True)
    train, val = split_train_val(mine, cfg.val_fraction, cfg.seed + partition_id)
    train.setflags(write=False)
    val.setflags(write=False)
    return train, val
