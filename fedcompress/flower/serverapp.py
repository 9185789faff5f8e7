"""The fedcompress ServerApp: seeded sampling, compression both ways, central evaluation, a run directory."""

from __future__ import annotations

import logging
import shutil
from pathlib import Path

import numpy as np
import torch
from flwr.app import ArrayRecord, ConfigRecord, Context, MetricRecord
from flwr.serverapp import Grid, ServerApp
from flwr.serverapp.strategy import Strategy

from fedcompress.accel import resolve_device
from fedcompress.config import RunConfig
from fedcompress.devices import DeviceProfile, artefact_size_fn, assign_tiers, fit_tier
from fedcompress.devices.config import parse_tier_config
from fedcompress.errors import RunError
from fedcompress.flower import held_store
from fedcompress.flower.checkpoint import Checkpoint, Checkpointer, run_rounds
from fedcompress.flower.downlink import models_in_budget
from fedcompress.flower.health import Failures, Finite, NormBound, Quorum, count_timeouts, wire
from fedcompress.flower.records import load_record, state_to_numpy, state_to_record
from fedcompress.flower.sampling import discover_partitions, sample_partitions
from fedcompress.flower.strategies import make_strategy
from fedcompress.flower.strategy import FedCompress
from fedcompress.flower.tiered import TieredStrategy
from fedcompress.ledger import RunRecorder
from fedcompress.ledger.recorder import default_run_dir
from fedcompress.ondevice import DeviceEvaluator
from fedcompress.task import dataset, make_model, model_name, proxy_indices
from fedcompress.tiers import SLICED, tier_codecs
from fedcompress.tiers.nested import check_sliceable

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
    run_dir = default_run_dir(cfg.run_dir, cfg.dataset, cfg.digest())
    ckpt, resumed = open_checkpoint(cfg, run_dir)  # checkpoint.py: exact resume
    recorder = RunRecorder(
        run_dir, cfg.as_run_config(), cfg.digest(), resume_at=resumed.offsets if resumed else None
    )
    print(f"fedcompress: run directory {recorder.run_dir}", flush=True)
    try:
        _run(grid, cfg, recorder, ckpt, resumed)
    except TargetReached as reached:
        print(
            f"fedcompress: target accuracy {cfg.target_accuracy} reached at round {reached.round}; stopping",
            flush=True,
        )
    except BaseException as err:
        recorder.finish(status="failed", error=f"{type(err).__name__}: {err}")
        if ckpt is None:  # nothing will resume: the simulated clients' held models can go
            shutil.rmtree(held_store.default_dir(context.run_config, context.run_id), ignore_errors=True)
        raise
    shutil.rmtree(held_store.default_dir(context.run_config, context.run_id), ignore_errors=True)
    summary = recorder.finish()
    if ckpt is not None:  # finished: the per-client files are no longer needed (state.npz stays, small)
        ckpt.release()
    print(
        f"fedcompress: done: final accuracy {summary['final_accuracy']}, best {summary['best_accuracy']} "
        f"(round {summary['best_round']}), uplink {summary['uplink_mb']:.2f} MB, downlink {summary['downlink_mb']:.2f} MB, "
        f"{summary['seconds_per_round']:.2f} s/round",
        flush=True,
    )


def _run(
    grid: Grid, cfg: RunConfig, recorder: RunRecorder, ckpt: Checkpointer | None, resumed: Checkpoint | None
) -> None:
    ds = dataset(cfg)
    model = make_model(cfg)
    device = resolve_device(cfg.device)
    evaluate_on = DeviceEvaluator(device)  # the CPU model stays what is saved; a device twin evaluates
    test_key = (cfg.digest(), "test")
    declared: dict[int, dict] = {}
    failures = Failures()
    if cfg.tiers:
        partitions = discover_partitions(grid, cfg.num_partitions, declared=declared)
        strategy = _tiered_strategy(cfg, partitions, declared, recorder, device)
    else:
        model_bytes = 4 * sum(int(v.size) for v in state_to_numpy(model).values())
        strategy = FedCompress(
            guarded(make_strategy(cfg), cfg, failures),  # health.py: norm bound, quorum
            downlink_ring=cfg.downlink_ring,
            max_held_models=models_in_budget(cfg.server_state_mb, model_bytes),  # too small: fails now
            clients_per_round=cfg.clients_per_round,
            seed=cfg.seed,
            uplink=cfg.uplink,
            downlink=cfg.downlink,
            ledger=recorder.ledger,
            on_reject=failures.on_reject,
            shared_initial={k: v.copy() for k, v in state_to_numpy(model).items()}
            if cfg.downlink_shared_init
            else None,
        )
        wire(strategy, failures)
        if cfg.discovery == "node-order":  # no query round trip per node: 10,000 nodes start in seconds
            strategy.partitions.update(node_order_partitions(grid, cfg.num_partitions))
        else:
            strategy.discover(
                grid, cfg.num_partitions, declared=declared, at_round=resumed.round + 1 if resumed else 0
            )  # queries measured; stock nodes: plain fp32
        if resumed:
            resumed.restore(strategy)
            load_record(model, resumed.arrays)

    def central_eval(server_round: int, arrays: ArrayRecord) -> MetricRecord | None:
        last = server_round == cfg.num_server_rounds
        due = server_round == 0 or last or (cfg.eval_every > 0 and server_round % cfg.eval_every == 0)
        metrics: dict[str, float | None] = {"accuracy": None, "loss": None}
        if due:
            load_record(model, arrays)
            if isinstance(strategy, TieredStrategy):  # every tier's model on the same test set (widest once)
                for t, tier_model in strategy.tier_models().items():
                    loss, metrics[f"accuracy/{t}"] = evaluate_on(tier_model, ds.x_test, ds.y_test, test_key)
                    if t == strategy.top:
                        metrics["loss"], metrics["accuracy"] = loss, metrics[f"accuracy/{t}"]
            else:
                metrics["loss"], metrics["accuracy"] = evaluate_on(model, ds.x_test, ds.y_test, test_key)
        if isinstance(strategy, TieredStrategy) and server_round in strategy.make_seconds:
            metrics["server_make_seconds"] = strategy.make_seconds[server_round]  # making device models
        train_metrics = strategy.train_metrics.get(server_round)
        train_loss = (
            float(train_metrics["train_loss"]) if train_metrics and "train_loss" in train_metrics else None
        )
        if server_round > 0 and isinstance(strategy, FedCompress):
            sampled = sample_partitions(
                cfg.seed, server_round, list(strategy.partitions), cfg.clients_per_round
            )
            count_timeouts(strategy, failures, server_round, sampled)
        health = failures.row(server_round)
        row = recorder.end_round(server_round, {**metrics, "train_loss": train_loss, **health})
        if ckpt is not None and isinstance(strategy, FedCompress):
            ckpt.save(server_round, arrays, strategy)
        if server_round > 0:
            acc = "" if row["accuracy"] is None else f"acc {row['accuracy']:.4f}  "
            print(
                f"round {server_round:4d}/{cfg.num_server_rounds}  {acc}up {row['uplink_bytes'] / 1e6:8.3f} MB  "
                f"down {row['downlink_bytes'] / 1e6:8.3f} MB  total {(row['uplink_bytes_cum'] + row['downlink_bytes_cum']) / 1e6:9.2f} MB  "
                f"{row['seconds']:.2f} s"
                + (f"  rejected {row['rejected']}" if row["rejected"] else "")
                + "".join(f"  {k[7:]} {v}" for k, v in health.items() if k.startswith("failed_") and v)
                + ("  kept previous model" if health["kept_previous_model"] else ""),
                flush=True,
            )
        _check_trained(strategy, server_round)
        check_target(cfg, [row], server_round)
        return MetricRecord({k: v for k, v in metrics.items() if v is not None}) if due else None

    timeout = cfg.round_timeout or 3600.0
    try:
        if resumed is not None and isinstance(strategy, FedCompress):
            check_target(cfg, recorder.rows, resumed.round)
            run_rounds(
                strategy, grid, resumed.arrays, first_round=resumed.round + 1, num_rounds=cfg.num_server_rounds,
                timeout=timeout, train_config=ConfigRecord({"lr": cfg.learning_rate}), evaluate_fn=central_eval,
            )  # fmt: skip
        else:
            strategy.start(
                grid=grid,
                initial_arrays=state_to_record(model),
                num_rounds=cfg.num_server_rounds,
                timeout=timeout,
                train_config=ConfigRecord({"lr": cfg.learning_rate}),
                evaluate_fn=central_eval,
            )
    finally:
        _save_models(recorder.run_dir, strategy, model)
    last = cfg.num_server_rounds
    if strategy.rejections.get(last, 0) and not _accepted(strategy, last):
        raise RunError(
            f"round {last}, the last: every reply was rejected; the final model was not trained by it"
        )


def guarded(inner: Strategy, cfg: RunConfig, failures: Failures) -> Strategy:
    """The inner strategy behind the server's guards the config asks for (health.py); `Finite` always."""
    inner = Finite(inner, failures=failures)
    if cfg.min_reply_fraction > 0:
        inner = Quorum(inner, min_fraction=cfg.min_reply_fraction, failures=failures)
    if cfg.norm_bound > 0:
        inner = NormBound(inner, bound=cfg.norm_bound)
    return inner


def open_checkpoint(cfg: RunConfig, run_dir: Path) -> tuple[Checkpointer | None, Checkpoint | None]:
    """The run's checkpointer (None: checkpoints off, or tiers, which do not checkpoint yet) and, when resuming,
    the checkpoint to continue from (None: nothing saved yet, start afresh)."""
    if not cfg.checkpoint or cfg.tiers:
        if cfg.resume_run:
            raise RunError(
                "resume needs checkpoint=true and a run without tiers (tiered runs do not checkpoint yet)"
            )
        return None, None
    ckpt = Checkpointer(run_dir, cfg.as_run_config())
    resumed = ckpt.load() if cfg.resume_run else None
    if resumed is None:  # a fresh start: nothing of an earlier run in this folder may be mistaken for ours
        for stale in (ckpt.folder, run_dir / "client-state"):
            shutil.rmtree(stale, ignore_errors=True)
    if resumed is not None:
        print(f"fedcompress: resuming after round {resumed.round} from {ckpt.folder}", flush=True)
    return ckpt, resumed


def check_target(cfg: RunConfig, rows: list[dict], server_round: int) -> None:
    """End the run once central accuracy reached `target-accuracy` (also when a resumed run had reached it)."""
    acc = rows[-1].get("accuracy") if rows else None
    if server_round > 0 and cfg.target_accuracy > 0 and (acc or 0.0) >= cfg.target_accuracy:
        raise TargetReached(server_round)


def node_order_partitions(grid: Grid, expected: int, timeout: float = 120.0) -> dict[int, int]:
    """Sampling slots for the nodes in node-id order, without asking each node (see config key `discovery`).

    Slot i is not node i's data partition (the simulation engine gives random node ids), so sampling is not
    the same from run to run; each node still trains its own partition and reports it to the ledger.
    """
    import time

    deadline = time.monotonic() + timeout
    while len(nodes := sorted(grid.get_node_ids())) < expected:
        if time.monotonic() > deadline:
            raise RunError(f"only {len(nodes)} of {expected} nodes connected within {timeout:.0f} s")
        time.sleep(1.0)
    return dict(enumerate(nodes))


def _check_trained(strategy: FedCompress | TieredStrategy, server_round: int) -> None:
    """A round in which every reply was rejected trained nothing: two in a row end the run with the reasons
    (one alone may be recovery, e.g. clients that could not rebuild the shared initial model)."""
    rejected = strategy.rejections
    if server_round < 2 or not all(
        rejected.get(r, 0) and not _accepted(strategy, r) for r in (server_round - 1, server_round)
    ):
        return
    raise RunError(
        f"rounds {server_round - 1} and {server_round}: every reply was rejected ({rejected[server_round]} this round); "
        "see the warnings above and ledger.jsonl for each client's reason"
    )


def _accepted(strategy: FedCompress | TieredStrategy, server_round: int) -> int:
    if isinstance(strategy, FedCompress):
        return strategy.accepted.get(server_round, 0)
    return sum(fc.accepted.get(server_round, 0) for fc in strategy.per_tier.values())


def _save_models(run_dir: Path, strategy: FedCompress | TieredStrategy, model: torch.nn.Module) -> None:
    """The final model(s) as state dicts: models/global.pt, or models/<tier>.pt per tier (for `fedcompress export`)."""
    out = run_dir / "models"
    out.mkdir(exist_ok=True)
    if isinstance(strategy, TieredStrategy):
        for t, m in strategy.tier_models().items():
            torch.save({k: v.cpu() for k, v in m.state_dict().items()}, out / f"{t}.pt")  # loadable anywhere
    else:
        torch.save(model.state_dict(), out / "global.pt")


def _tiered_strategy(
    cfg: RunConfig,
    partitions: dict[int, int],
    declared: dict[int, dict],
    recorder: RunRecorder,
    device: torch.device | None = None,
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
        models={t: m.to(device) for t, m in models.items()} if device is not None else models,
        make_inner=lambda: make_strategy(cfg),
        clients_per_round=cfg.clients_per_round,
        seed=cfg.seed,
        mode=cfg.tier_training,
        uplink=tier_codecs(cfg.tier_uplink, cfg.uplink, "tier-uplink", tiers),
        downlink=tier_codecs(cfg.tier_downlink, cfg.downlink, "tier-downlink", tiers),
        ledger=recorder.ledger,
        proxy_x=proxy_x.to(device) if device is not None else proxy_x,  # distillation runs there
        refresh_every=cfg.tier_refresh_every,
        nested_weight=cfg.tier_nested_weight,
        distill_options={
            "epochs": cfg.distill_epochs, "lr": cfg.distill_lr, "tau": cfg.distill_tau,
            "feature_weight": cfg.distill_feature_weight, "relation_weight": cfg.distill_relation_weight,
        },
        teachers=cfg.distill_teachers,
        shared_initial=cfg.downlink_shared_init,
    )  # fmt: skip
