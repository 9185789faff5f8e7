"""The fedcompress ServerApp: seeded sampling, compression both ways, central evaluation, a run directory."""

from __future__ import annotations

import logging
import os
import time
from pathlib import Path

import torch
from flwr.app import ArrayRecord, ConfigRecord, Context, MetricRecord
from flwr.serverapp import Grid, ServerApp

from fedcompress.config import RunConfig
from fedcompress.flower.records import load_record, numpy_to_record, state_to_numpy
from fedcompress.flower.sampling import discover_partitions
from fedcompress.flower.strategy import FedCompress
from fedcompress.ledger import RunRecorder
from fedcompress.task import dataset, make_model, make_strategy
from fedcompress.training import evaluate

log = logging.getLogger("fedcompress")


class TargetReached(Exception):  # noqa: N818 - a signal, not an error
    """Raised from central evaluation to end a run once `target-accuracy` is reached."""

    def __init__(self, server_round: int) -> None:
        super().__init__(f"target reached at round {server_round}")
        self.round = server_round
app = ServerApp()


def run_dir_for(cfg: RunConfig) -> Path:
    """Where this run writes: run-dir if set, else $FEDCOMPRESS_RUNS_DIR (or ./runs)/<time>-<dataset>."""
    if cfg.run_dir:
        return Path(cfg.run_dir).expanduser().resolve()
    root = Path(os.environ.get("FEDCOMPRESS_RUNS_DIR", "runs")).resolve()
    return root / f"{time.strftime('%Y%m%d-%H%M%S')}-{cfg.dataset}-{cfg.digest()}"


@app.main()
def main(grid: Grid, context: Context) -> None:
    cfg = RunConfig.from_run_config(context.run_config)
    torch.set_num_threads(1)
    recorder = RunRecorder(run_dir_for(cfg), cfg.as_run_config(), cfg.digest())
    print(f"fedcompress: run directory {recorder.run_dir}", flush=True)
    try:
        _run(grid, cfg, recorder)
    except TargetReached as reached:
        print(f"fedcompress: target accuracy {cfg.target_accuracy} reached at round {reached.round}; stopping", flush=True)
    except BaseException as err:
        recorder.finish(status="failed", error=f"{type(err).__name__}: {err}")
        raise
    summary = recorder.finish()
    print(
        f"fedcompress: done: final accuracy {summary['final_accuracy']}, best {summary['best_accuracy']} "
        f"(round {summary['best_round']}), uplink {summary['uplink_mb']:.2f} MB, downlink {summary['downlink_mb']:.2f} MB, "
        f"{summary['seconds_per_round']:.2f} s/round",
        flush=True,
    )


def _run(grid: Grid, cfg: RunConfig, recorder: RunRecorder) -> None:
    ds = dataset(cfg)
    model = make_model(cfg)
    partitions = discover_partitions(grid, cfg.num_partitions)
    strategy = FedCompress(
        make_strategy(cfg),
        partitions=partitions,
        clients_per_round=cfg.clients_per_round,
        seed=cfg.seed,
        uplink=cfg.uplink,
        downlink=cfg.downlink,
        ledger=recorder.ledger,
        shared_initial={k: v.copy() for k, v in state_to_numpy(model).items()} if cfg.downlink_shared_init else None,
    )

    def central_eval(server_round: int, arrays: ArrayRecord) -> MetricRecord | None:
        last = server_round == cfg.num_server_rounds
        due = server_round == 0 or last or (cfg.eval_every > 0 and server_round % cfg.eval_every == 0)
        metrics: dict[str, float | None] = {"accuracy": None, "loss": None}
        if due:
            load_record(model, arrays)
            metrics["loss"], metrics["accuracy"] = evaluate(model, ds.x_test, ds.y_test)
        train_metrics = strategy.train_metrics.get(server_round)
        train_loss = float(train_metrics["train_loss"]) if train_metrics and "train_loss" in train_metrics else None
        row = recorder.end_round(server_round, {**metrics, "train_loss": train_loss})
        if server_round > 0:
            acc = "" if row["accuracy"] is None else f"acc {row['accuracy']:.4f}  "
            print(
                f"round {server_round:4d}/{cfg.num_server_rounds}  {acc}up {row['uplink_bytes'] / 1e6:8.3f} MB  "
                f"down {row['downlink_bytes'] / 1e6:8.3f} MB  total {(row['uplink_bytes_cum'] + row['downlink_bytes_cum']) / 1e6:9.2f} MB  "
                f"{row['seconds']:.2f} s" + (f"  rejected {row['rejected']}" if row["rejected"] else ""),
                flush=True,
            )
        if server_round > 0 and cfg.target_accuracy > 0 and (row["accuracy"] or 0.0) >= cfg.target_accuracy:
            raise TargetReached(server_round)
        return MetricRecord({k: v for k, v in metrics.items() if v is not None}) if due else None

    strategy.start(
        grid=grid,
        initial_arrays=numpy_to_record(state_to_numpy(model)),
        num_rounds=cfg.num_server_rounds,
        train_config=ConfigRecord({"lr": cfg.learning_rate}),
        evaluate_fn=central_eval,
    )

