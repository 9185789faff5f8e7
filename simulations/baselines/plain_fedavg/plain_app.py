"""Stock Flower: FedAvg.start with its own sampling and aggregation, central evaluation every round, nothing else."""

from __future__ import annotations

import json
import time

import torch
from flwr.app import ArrayRecord, Context, Message, MetricRecord, RecordDict
from flwr.clientapp import ClientApp
from flwr.serverapp import Grid, ServerApp
from flwr.serverapp.strategy import FedAvg

from fedcompress.data import load_dataset, partition
from fedcompress.models import build_model
from fedcompress.training import evaluate, train

torch.set_num_threads(1)
server = ServerApp()
client = ClientApp()


def _setup(rc: dict):  # noqa: ANN202
    ds = load_dataset(rc["dataset"], rc["data-dir"] or None)
    torch.manual_seed(int(rc["seed"]))
    return ds, build_model(ds.default_model, ds.num_classes)


@client.train()
def train_fn(msg: Message, context: Context) -> Message:
    rc = context.run_config
    ds, model = _setup(rc)
    pid = int(context.node_config["partition-id"])
    idx = partition(ds, rc["partitioning"], int(rc["num-partitions"]), seed=int(rc["seed"]))[pid]
    model.load_state_dict(msg.content["arrays"].to_torch_state_dict())
    loss = train(model, ds.x_train[idx], ds.y_train[idx], epochs=int(rc["local-epochs"]),
                 lr=float(rc["learning-rate"]), batch_size=int(rc["batch-size"]), seed=pid)  # fmt: skip
    reply = RecordDict({"arrays": ArrayRecord(model.state_dict()),
                        "metrics": MetricRecord({"num-examples": len(idx), "train_loss": loss})})  # fmt: skip
    return Message(reply, reply_to=msg)


@server.main()
def main(grid: Grid, context: Context) -> None:
    rc = context.run_config
    ds, model = _setup(rc)
    n = int(rc["num-partitions"])
    strategy = FedAvg(fraction_train=int(rc["clients-per-round"]) / n, fraction_evaluate=0.0)
    stamps: list[float] = []

    def central(server_round: int, arrays: ArrayRecord) -> MetricRecord:
        model.load_state_dict(arrays.to_torch_state_dict())
        loss, acc = evaluate(model, ds.x_test, ds.y_test)
        stamps.append(time.perf_counter())
        return MetricRecord({"accuracy": acc, "loss": loss})

    result = strategy.start(grid=grid, initial_arrays=ArrayRecord(model.state_dict()),
                            num_rounds=int(rc["num-server-rounds"]), evaluate_fn=central)  # fmt: skip
    if rc["timing-file"]:
        accs = {r: float(m["accuracy"]) for r, m in result.evaluate_metrics_serverapp.items()}
        gaps = [b - a for a, b in zip(stamps, stamps[1:], strict=False)]
        with open(rc["timing-file"], "w") as f:
            json.dump({"round_seconds": gaps, "accuracy": accs}, f)
