"""The fedcompress ClientApp: trains its partition locally; the compression mod encodes what it sends.

It plays with any Flower server: run-config keys that are not fedcompress's are ignored, a standard `lr` in the
train config overrides the learning rate, and without fedcompress keys in a message the mod stays out of the
way (a plain Flower client).
"""

from __future__ import annotations

import dataclasses
from functools import lru_cache
from typing import Any

import torch
from flwr.app import ConfigRecord, Context, Message, MetricRecord, RecordDict
from flwr.clientapp import ClientApp

from fedcompress.accel import resolve_device
from fedcompress.config import RunConfig
from fedcompress.flower.attacks import attack_mod
from fedcompress.flower.client_state import state_store_mod
from fedcompress.flower.faults import delivery_mod, fault_mod
from fedcompress.flower.mod import attach, make_compression_mod
from fedcompress.flower.protocol import (
    DEFAULT_RECORD_KEY,
    NUM_PARTITIONS,
    PARTITION_ID,
    RECORD_KEY,
    SERVER_ROUND,
    WIDTH,
)
from fedcompress.flower.records import load_record, state_to_numpy, state_to_record
from fedcompress.ondevice import data_on
from fedcompress.task import client_partition, dataset, make_model
from fedcompress.tiers.heterofl import SLICED_FROM_KEY, initial_slice
from fedcompress.tiers.nested import NESTED_KEY, NESTED_WEIGHT_KEY, parse_widths, train_nested
from fedcompress.training import evaluate, train

torch.set_num_threads(1)  # one core per virtual client; Ray sizes actors by CPUs
app = ClientApp()


def run_config(context: Context) -> RunConfig:
    """The run config (keys that are not ours ignored); the federation's size from the node config when the
    simulation engine sets it, so `flwr run .` works with any number of SuperNodes."""
    n = context.node_config.get(NUM_PARTITIONS)
    return _parsed(tuple(context.run_config.items()), None if n is None else int(n))


@lru_cache(maxsize=8)
def _parsed(items: tuple[tuple[str, Any], ...], num_partitions: int | None) -> RunConfig:
    """Parsed and checked once per process, not per message (an actor plays many clients of one run)."""
    cfg = RunConfig.from_run_config(dict(items))
    if num_partitions is not None:
        n = num_partitions
        cfg = dataclasses.replace(cfg, num_partitions=n, clients_per_round=min(cfg.clients_per_round, n))
    return cfg


def _width(cfg: RunConfig, config: ConfigRecord) -> float:
    """The model width this node trains: its device tier's, as the server says, else the run's."""
    return float(config.get(WIDTH, cfg.width))


def _initial_model(context: Context, config: ConfigRecord) -> dict:
    """The run's initial model (of this node's tier), rebuilt from its seed: the base of a first compressed downlink."""
    cfg = run_config(context)
    own = state_to_numpy(make_model(cfg, width=_width(cfg, config)))
    if SLICED_FROM_KEY in config:  # width-sliced tiers: the leading block of the seeded widest model
        return initial_slice(state_to_numpy(make_model(cfg, width=float(config[SLICED_FROM_KEY]))), own)
    return own


compression_mod = make_compression_mod(_initial_model)
attach(app)  # answers the server's capability / partition query


def _partition_id(context: Context) -> int:
    if PARTITION_ID not in context.node_config:
        raise KeyError(
            "node config lacks 'partition-id': start the SuperNode with --node-config 'partition-id=N'"
        )
    return int(context.node_config[PARTITION_ID])


# client_state.py: round-versioned state on disk; faults.py: fault injection, error feedback follows delivery
# attacks.py: poisoned updates, made before (inside) compression so they travel the same pipeline
@app.train(mods=[state_store_mod, fault_mod, delivery_mod, compression_mod, attack_mod])
def train_fn(msg: Message, context: Context) -> Message:
    cfg = run_config(context)
    pid = _partition_id(context)
    ds = dataset(cfg)
    train_idx, _ = client_partition(cfg, pid)
    config = msg.content["config"]
    key = str(config.get(RECORD_KEY, DEFAULT_RECORD_KEY))
    server_round = int(config.get(SERVER_ROUND, 0))
    model = make_model(cfg, width=_width(cfg, config))
    load_record(model, msg.content[key])
    lr = float(config.get("lr", cfg.learning_rate))  # Flower's servers send "lr"; it wins over ours
    seed = cfg.seed * 1_000_003 + server_round * 1009 + pid
    if NESTED_KEY in config:  # nested tiers: also train each narrower tier's model (leading blocks)
        subs = [make_model(cfg, width=w) for w in parse_widths(str(config[NESTED_KEY]))]
        loss = train_nested(
            model, subs, ds.x_train[train_idx], ds.y_train[train_idx], epochs=cfg.local_epochs,
            lr=lr, momentum=cfg.momentum, batch_size=cfg.batch_size, seed=seed,
            sub_weight=float(config.get(NESTED_WEIGHT_KEY, 1.0)),
        )  # fmt: skip
    else:
        device = resolve_device(cfg.device)  # the data below crosses to a GPU once per client, then is cached
        x, y = data_on(
            device, (cfg.digest(), pid, "train"), lambda: (ds.x_train[train_idx], ds.y_train[train_idx])
        )
        loss = train(
            model.to(device), x, y, epochs=cfg.local_epochs, lr=lr, momentum=cfg.momentum,
            batch_size=cfg.batch_size, seed=seed, proximal_mu=float(config.get("proximal-mu", 0.0)),
        )  # fmt: skip
    content = RecordDict(
        {
            key: state_to_record(model),
            "metrics": MetricRecord({"num-examples": len(train_idx), "train_loss": loss}),
        }
    )
    return Message(content, reply_to=msg)


@app.evaluate()
def evaluate_fn(msg: Message, context: Context) -> Message:
    cfg = run_config(context)
    ds = dataset(cfg)
    pid = _partition_id(context)
    _, val_idx = client_partition(cfg, pid)
    config = msg.content.get("config") or ConfigRecord()
    model = make_model(cfg, width=_width(cfg, config))
    load_record(model, msg.content[str(config.get(RECORD_KEY, DEFAULT_RECORD_KEY))])
    device = resolve_device(cfg.device)
    x, y = data_on(device, (cfg.digest(), pid, "val"), lambda: (ds.x_train[val_idx], ds.y_train[val_idx]))
    loss, acc = evaluate(model.to(device), x, y)
    metrics = MetricRecord({"num-examples": len(val_idx), "eval_loss": loss, "eval_acc": acc})
    return Message(RecordDict({"metrics": metrics}), reply_to=msg)
