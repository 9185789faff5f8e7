"""The fedcompress ClientApp: trains its partition locally; the compression mod encodes what it sends."""

from __future__ import annotations

import torch
from flwr.app import ConfigRecord, Context, Message, MetricRecord, RecordDict
from flwr.clientapp import ClientApp

from fedcompress.config import RunConfig
from fedcompress.flower.mod import make_compression_mod
from fedcompress.flower.records import load_record, numpy_to_record, state_to_numpy
from fedcompress.flower.sampling import QUERY_PARTITION
from fedcompress.flower.strategy import WIDTH_KEY
from fedcompress.task import client_partition, dataset, make_model
from fedcompress.tiers.heterofl import SLICED_FROM_KEY, initial_slice
from fedcompress.tiers.nested import NESTED_KEY, parse_widths, train_nested
from fedcompress.training import evaluate, train

torch.set_num_threads(1)  # one core per virtual client; Ray sizes actors by CPUs
app = ClientApp()


def _width(cfg: RunConfig, config: ConfigRecord) -> float:
    """The model width this node trains: its device tier's, as the server says, else the run's."""
    return float(config.get(WIDTH_KEY, cfg.width))


def _initial_model(context: Context, config: ConfigRecord) -> dict:
    """The run's initial model (of this node's tier), rebuilt from its seed: the base of a first compressed downlink."""
    cfg = RunConfig.from_run_config(context.run_config)
    own = state_to_numpy(make_model(cfg, width=_width(cfg, config)))
    if SLICED_FROM_KEY in config:  # width-sliced tiers: the leading block of the seeded widest model
        return initial_slice(state_to_numpy(make_model(cfg, width=float(config[SLICED_FROM_KEY]))), own)
    return own


compression_mod = make_compression_mod(_initial_model)


def _partition_id(context: Context) -> int:
    if "partition-id" not in context.node_config:
        raise KeyError(
            "node config lacks 'partition-id': start the SuperNode with --node-config 'partition-id=N'"
        )
    return int(context.node_config["partition-id"])


@app.query()
def query(msg: Message, context: Context) -> Message:
    """Tell the server which partition this node holds (node ids are random; partition ids are stable)."""
    if msg.content["config"].get("query") != QUERY_PARTITION:
        raise ValueError(f"unknown query {msg.content['config'].get('query')!r}")
    declared = {k: v for k, v in context.node_config.items() if str(k).startswith("device-")}
    answer = ConfigRecord({"partition-id": _partition_id(context), **declared})
    return Message(RecordDict({"config": answer}), reply_to=msg)


@app.train(mods=[compression_mod])
def train_fn(msg: Message, context: Context) -> Message:
    cfg = RunConfig.from_run_config(context.run_config)
    pid = _partition_id(context)
    ds = dataset(cfg)
    train_idx, _ = client_partition(cfg, pid)
    config = msg.content["config"]
    server_round = int(config.get("server-round", 0))
    model = make_model(cfg, width=_width(cfg, config))
    load_record(model, msg.content["arrays"])
    if NESTED_KEY in config:  # nested tiers: also train each narrower tier's model (leading blocks)
        subs = [make_model(cfg, width=w) for w in parse_widths(str(config[NESTED_KEY]))]
        loss = train_nested(
            model, subs, ds.x_train[train_idx], ds.y_train[train_idx], epochs=cfg.local_epochs,
            lr=cfg.learning_rate, momentum=cfg.momentum, batch_size=cfg.batch_size,
            seed=cfg.seed * 1_000_003 + server_round * 1009 + pid,
        )  # fmt: skip
    else:
        loss = train(
            model,
            ds.x_train[train_idx],
            ds.y_train[train_idx],
            epochs=cfg.local_epochs,
            lr=cfg.learning_rate,
            momentum=cfg.momentum,
            batch_size=cfg.batch_size,
            seed=cfg.seed * 1_000_003 + server_round * 1009 + pid,
            proximal_mu=float(config.get("proximal-mu", 0.0)),
        )
    content = RecordDict(
        {
            "arrays": numpy_to_record(state_to_numpy(model)),
            "metrics": MetricRecord({"num-examples": len(train_idx), "train_loss": loss}),
        }
    )
    return Message(content, reply_to=msg)


@app.evaluate()
def evaluate_fn(msg: Message, context: Context) -> Message:
    cfg = RunConfig.from_run_config(context.run_config)
    ds = dataset(cfg)
    _, val_idx = client_partition(cfg, _partition_id(context))
    model = make_model(cfg, width=_width(cfg, msg.content["config"]))
    load_record(model, msg.content["arrays"])
    loss, acc = evaluate(model, ds.x_train[val_idx], ds.y_train[val_idx])
    metrics = MetricRecord({"num-examples": len(val_idx), "eval_loss": loss, "eval_acc": acc})
    return Message(RecordDict({"metrics": metrics}), reply_to=msg)
