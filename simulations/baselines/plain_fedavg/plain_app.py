"""Stock Flower, as lean as Flower's quickstart-pytorch app: its ClientApp (build the model, load the received
arrays, train, reply `ArrayRecord(model.state_dict())`), its ServerApp (the stock `FedAvg.start` with its own
sampling and aggregation, `lr` in the train config, a central `evaluate_fn` every round), nothing else.

Same data, model and training function as fedcompress, and the same examples: each client trains the train
split of its partition (`fedcompress.task.client_partition`, `val-fraction` held out as fedcompress's
ClientApp does), cached per process as the quickstart caches its partitions.
"""

from __future__ import annotations

import json
import time
from functools import lru_cache

import torch
from flwr.app import ArrayRecord, ConfigRecord, Context, Message, MetricRecord, RecordDict
from flwr.clientapp import ClientApp
from flwr.serverapp import Grid, ServerApp
from flwr.serverapp.strategy import FedAvg

from fedcompress.config import RunConfig
from fedcompress.data import load_dataset
from fedcompress.models import build_model
from fedcompress.task import client_partition
from fedcompress.training import evaluate, train

torch.set_num_threads(1)
server = ServerApp()
client = ClientApp()


def _net(rc: dict) -> torch.nn.Module:
    """The quickstart's `Net()`: the model, built fresh (seeded here, so both apps start alike)."""
    ds = load_dataset(rc["dataset"], rc["data-dir"] or None)
    torch.manual_seed(int(rc["seed"]))
    return build_model(ds.default_model, ds.num_classes)


@lru_cache(maxsize=256)
def _train_data(key: tuple, pid: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The quickstart's `load_data(partition_id, ...)`: this client's train split, cached per process."""
    cfg = RunConfig.from_run_config(dict(key))
    ds = load_dataset(cfg.dataset, cfg.data_dir or None)
    idx, _ = client_partition(cfg, pid)
    return torch.from_numpy(ds.x_train[idx]), torch.from_numpy(ds.y_train[idx])


@client.train()
def train_fn(msg: Message, context: Context) -> Message:
    rc = context.run_config
    model = _net(rc)
    model.load_state_dict(msg.content["arrays"].to_torch_state_dict())
    pid = int(context.node_config["partition-id"])
    x, y = _train_data(tuple(sorted(rc.items())), pid)
    loss = train(model, x, y, epochs=int(rc["local-epochs"]), lr=float(msg.content["config"]["lr"]),
                 batch_size=int(rc["batch-size"]), seed=pid)  # fmt: skip
    reply = RecordDict({"arrays": ArrayRecord(model.state_dict()),
                        "metrics": MetricRecord({"train_loss": loss, "num-examples": len(y)})})  # fmt: skip
    return Message(reply, reply_to=msg)


@server.main()
def main(grid: Grid, context: Context) -> None:
    rc = context.run_config
    ds = load_dataset(rc["dataset"], rc["data-dir"] or None)
    model = _net(rc)
    n = int(rc["num-partitions"])
    strategy = FedAvg(fraction_train=int(rc["clients-per-round"]) / n, fraction_evaluate=0.0)
    stamps: list[float] = []

    def global_evaluate(server_round: int, arrays: ArrayRecord) -> MetricRecord:
        model.load_state_dict(arrays.to_torch_state_dict())
        loss, acc = evaluate(model, ds.x_test, ds.y_test)
        stamps.append(time.perf_counter())
        return MetricRecord({"accuracy": acc, "loss": loss})

    result = strategy.start(grid=grid, initial_arrays=ArrayRecord(model.state_dict()),
                            train_config=ConfigRecord({"lr": float(rc["learning-rate"])}),
                            num_rounds=int(rc["num-server-rounds"]), evaluate_fn=global_evaluate)  # fmt: skip
    if rc["timing-file"]:
        accs = {r: float(m["accuracy"]) for r, m in result.evaluate_metrics_serverapp.items()}
        gaps = [b - a for a, b in zip(stamps, stamps[1:], strict=False)]
        with open(rc["timing-file"], "w") as f:
            json.dump({"round_seconds": gaps, "accuracy": accs}, f)
