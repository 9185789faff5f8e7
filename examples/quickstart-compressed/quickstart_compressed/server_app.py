"""ServerApp: Flower's quickstart server; fedcompress wraps the strategy (marked) and measures every byte."""

from __future__ import annotations

import json
from pathlib import Path

import torch
from flwr.app import ArrayRecord, ConfigRecord, Context, MetricRecord
from flwr.serverapp import Grid, ServerApp
from flwr.serverapp.strategy import FedAvg

from fedcompress.flower.strategy import FedCompress  # fedcompress
from fedcompress.ledger import Ledger
from quickstart_compressed.task import Net, load_data, test

app = ServerApp()


@app.main()
def main(grid: Grid, context: Context) -> None:
    rc = context.run_config
    out = Path(str(rc["out-dir"])) if rc["out-dir"] else None
    if out:
        out.mkdir(parents=True, exist_ok=True)
    ledger = Ledger(out / "ledger.jsonl" if out else None)
    strategy = FedCompress(  # fedcompress: seeded sampling, compression both ways, every message measured
        FedAvg(fraction_evaluate=0.0),
        clients_per_round=int(rc["clients-per-round"]),
        uplink=str(rc["uplink"]),
        downlink=str(rc["downlink"]),
        ledger=ledger,
    )
    net = Net()
    x_test, y_test = load_data(None, 1)
    rounds: list[dict] = []

    def central_evaluate(server_round: int, arrays: ArrayRecord) -> MetricRecord:
        net.load_state_dict(arrays.to_torch_state_dict())
        loss, acc = test(net, x_test, y_test)
        bytes_ = ledger.round_totals(server_round)
        row = {"round": server_round, "accuracy": acc, "loss": loss, **bytes_}
        rounds.append(row)
        up, down = bytes_.get("uplink_message_bytes", 0), bytes_.get("downlink_message_bytes", 0)
        print(f"round {server_round}: accuracy {acc:.3f}  uplink {up} B  downlink {down} B", flush=True)
        return MetricRecord({"accuracy": acc, "loss": loss})

    strategy.start(
        grid=grid,
        initial_arrays=ArrayRecord(net.state_dict()),
        num_rounds=int(rc["num-server-rounds"]),
        train_config=ConfigRecord({"lr": float(rc["lr"])}),
        evaluate_fn=central_evaluate,
    )
    ledger.close()
    if out:
        (out / "rounds.json").write_text(json.dumps(rounds, indent=2))
    torch.save(net.state_dict(), out / "model.pt") if out else None
