"""The fedcompress ServerApp: seeded sampling, compression both ways, central evaluation, a run directory."""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import torch
from flwr.app import ArrayRecord, ConfigRecord, Context, MetricRecord
from flwr.serverapp import Grid, ServerApp

from fedcompress.config import RunConfig
from fedcompress.devices import DeviceProfile, artefact_size_fn, assign_tiers, fit_tier
from fedcompress.devices.config import parse_tier_config
from fedcompress.flower.records import load_record, numpy_to_record, state_to_numpy
from fedcompress.flower.sampling import discover_partitions
from fedcompress.flower.strategies import make_strategy
from fedcompress.flower.strategy import FedCompress
from fedcompress.flower.tiered import TieredStrategy
from fedcompress.ledger import RunRecorder
from fedcompress.ledger.recorder import default_run_dir
from fedcompress.task import dataset, make_model, model_name, proxy_indices
from fedcompress.tiers import SLICED, tier_codecs
from fedcompress.tiers.nested import check_sliceable
from fedcompress.training import evaluate

log = logging.getLogger("fedcompress")


class TargetReached(Exception):  # noqa: N818 - a signal, not an error
    """Raised from central evaluation to end a run once `target-accuracy` is reached."""

    def __init__(self, server_round: int) -> None:
        super().__init__(f"target reached at round {server_round}")
        self.round = server_round


app = ServerApp()


@app.main()
def main(grid: Grid, context: Context) -> None:
    cfg = RunConfig.from_run_config(context.run_config)
    torch.set_num_threads(1)
    recorder = RunRecorder(default_run_dir(cfg.run_dir, cfg.dataset, cfg.digest()), cfg.as_run_config(), cfg.digest())
    print(f"fedcompress: run directory {recorder.run_dir}", flush=True)
    try:
        _run(grid, cfg, recorder)
    except TargetReached as reached:
        print(
            f"fedcompress: target accuracy {cfg.target_accuracy} reached at round {reached.round}; stopping",
            flush=True,
        )
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
    declared: dict[int, dict] = {}
    partitions = discover_partitions(grid, cfg.num_partitions, declared=declared)
    if cfg.tiers:
        strategy = _tiered_strategy(cfg, partitions, declared, recorder)
    else:
        strategy = FedCompress(
            make_strategy(cfg),
            partitions=partitions,
            clients_per_round=cfg.clients_per_round,
            seed=cfg.seed,
            uplink=cfg.uplink,
            downlink=cfg.downlink,
            ledger=recorder.ledger,
            shared_initial={k: v.copy() for k, v in state_to_numpy(model).items()}
            if cfg.downlink_shared_init
            else None,
        )

    def central_eval(server_round: int, arrays: ArrayRecord) -> MetricRecord | None:
        last = server_round == cfg.num_server_rounds
        due = server_round == 0 or last or (cfg.eval_every > 0 and server_round % cfg.eval_every == 0)
        metrics: dict[str, float | None] = {"accuracy": None, "loss": None}
        if due:
            load_record(model, arrays)
            if isinstance(strategy, TieredStrategy):  # every tier's model on the same test set (widest once)
                for t, tier_model in strategy.tier_models().items():
                    loss, metrics[f"accuracy/{t}"] = evaluate(tier_model, ds.x_test, ds.y_test)
                    if t == strategy.top:
                        metrics["loss"], metrics["accuracy"] = loss, metrics[f"accuracy/{t}"]
            else:
                metrics["loss"], metrics["accuracy"] = evaluate(model, ds.x_test, ds.y_test)
        if isinstance(strategy, TieredStrategy) and server_round in strategy.make_seconds:
            metrics["server_make_seconds"] = strategy.make_seconds[server_round]  # making device models
        train_metrics = strategy.train_metrics.get(server_round)
        train_loss = (
            float(train_metrics["train_loss"]) if train_metrics and "train_loss" in train_metrics else None
        )
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

    try:
        strategy.start(
            grid=grid,
            initial_arrays=numpy_to_record(state_to_numpy(model)),
            num_rounds=cfg.num_server_rounds,
            train_config=ConfigRecord({"lr": cfg.learning_rate}),
            evaluate_fn=central_eval,
        )
    finally:
        _save_models(recorder.run_dir, strategy, model)


def _save_models(run_dir: Path, strategy: FedCompress | TieredStrategy, model: torch.nn.Module) -> None:
    """The final model(s) as state dicts: models/global.pt, or models/<tier>.pt per tier (for `fedcompress export`)."""
    out = run_dir / "models"
    out.mkdir(exist_ok=True)
    if isinstance(strategy, TieredStrategy):
        for t, m in strategy.tier_models().items():
            torch.save(m.state_dict(), out / f"{t}.pt")
    else:
        torch.save(model.state_dict(), out / "global.pt")


def _tiered_strategy(
    cfg: RunConfig, partitions: dict[int, int], declared: dict[int, dict], recorder: RunRecorder
) -> TieredStrategy:
    """Tiers from the config; a node that declared a device profile gets the largest tier that fits it."""
    tiers, mix = parse_tier_config(cfg.tiers, cfg.tier_mix)
    if cfg.tier_training in SLICED:
        check_sliceable(model_name(cfg))
    ds = dataset(cfg)
    proxy_x = torch.from_numpy(np.ascontiguousarray(ds.x_train[proxy_indices(cfg)]))
    models = {t: make_model(cfg, width=tier.width) for t, tier in tiers.items()}
    assigned = assign_tiers(cfg.num_partitions, mix, seed=cfg.seed)
    tier_of = {pid: assigned[pid] for pid in partitions}
    profiled = {pid: d for pid, d in declared.items() if any(k.startswith("device-") for k in d)}
    if profiled:
        full = make_model(cfg, width=max(t.width for t in tiers.values()))
        size = artefact_size_fn(full, calibration=proxy_x[:256])
        for pid, d in profiled.items():
            tier_of[pid] = fit_tier(DeviceProfile.from_node_config(d), tiers, size).name
    counts = {t: sum(1 for v in tier_of.values() if v == t) for t in tiers}
    print(
        f"fedcompress: tiers {[f'{t}={x.width}' for t, x in tiers.items()]}, clients per tier {counts}",
        flush=True,
    )
    return TieredStrategy(
        tiers=tiers,
        tier_of=tier_of,
        partitions=partitions,
        models=models,
        make_inner=lambda: make_strategy(cfg),
        clients_per_round=cfg.clients_per_round,
        seed=cfg.seed,
        mode=cfg.tier_training,
        uplink=tier_codecs(cfg.tier_uplink, cfg.uplink, "tier-uplink", tiers),
        downlink=tier_codecs(cfg.tier_downlink, cfg.downlink, "tier-downlink", tiers),
        ledger=recorder.ledger,
        proxy_x=proxy_x,
        refresh_every=cfg.tier_refresh_every,
        distill_options={
            "epochs": cfg.distill_epochs, "lr": cfg.distill_lr, "tau": cfg.distill_tau,
            "feature_weight": cfg.distill_feature_weight, "relation_weight": cfg.distill_relation_weight,
        },
        teachers=cfg.distill_teachers,
        shared_initial=cfg.downlink_shared_init,
    )  # fmt: skip
