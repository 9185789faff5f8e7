"""Device tiers through the real ClientApp in-process: each tier trains its own width, bytes are per tier."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from fedcompress.config import RunConfig, defaults
from fedcompress.devices import NoTierFits
from fedcompress.errors import ConfigError
from fedcompress.flower.clientapp import app as client_app
from fedcompress.flower.records import numpy_to_record, state_to_numpy
from fedcompress.flower.sampling import discover_partitions
from fedcompress.flower.serverapp import _tiered_strategy
from fedcompress.ledger import RunRecorder
from fedcompress.task import client_partition, make_model, proxy_indices
from fedcompress.tiers import heterofl_aggregate, slice_like, split_clients
from tests.flower.loopback import LoopbackGrid

TIERS = {"tiers": "full=1.0 tiny=0.5/int8", "tier-mix": "full=0.5 tiny=0.5"}


def _cfg(**kw: object) -> RunConfig:
    base = {**defaults(), "num-partitions": 6, "clients-per-round": 4, "partitioning": "iid",
            "local-epochs": 2, "learning-rate": 0.1, "batch-size": 16, "seed": 1, "distill-proxy-fraction": 0.1,
            "uplink": "topk(0.1) > ef > uniform(4) > entropy", "downlink": "uniform(8) > entropy", **TIERS}  # fmt: skip
    return RunConfig.from_run_config({**base, **kw})


def _run(cfg: RunConfig, tmp_path: Path, rounds: int = 3, node_config: dict | None = None):  # noqa: ANN202
    grid = LoopbackGrid(client_app, cfg.as_run_config(), cfg.num_partitions)
    for ctx in grid.contexts.values():
        ctx.node_config.update(node_config or {})
    recorder = RunRecorder(tmp_path / "run", cfg.as_run_config(), cfg.digest())
    declared: dict = {}
    partitions = discover_partitions(grid, cfg.num_partitions, declared=declared)
    strategy = _tiered_strategy(cfg, partitions, declared, recorder)
    strategy.start(
        grid=grid, initial_arrays=numpy_to_record(state_to_numpy(make_model(cfg))), num_rounds=rounds
    )  # type: ignore[arg-type]
    return strategy, recorder, grid


@pytest.mark.parametrize("mode", ["nested", "nested-distill", "separate", "heterofl", "distill", "deliver"])
def test_each_tier_trains_its_own_smaller_model(mode: str, tmp_path: Path) -> None:
    cfg = _cfg(**{"tier-training": mode})
    strategy, recorder, grid = _run(cfg, tmp_path, rounds=6)
    full, tiny = strategy.arrays["full"], strategy.arrays["tiny"]
    assert sum(v.size for v in tiny.values()) * 2.5 < sum(v.size for v in full.values())
    widths = {
        float(m.content["config"]["fedcompress.width"])
        for m in grid.sent
        if m.metadata.message_type == "train"
    }
    assert widths == {1.0, 0.5}
    totals = recorder.ledger.round_totals(2)
    if mode != "deliver":  # deliver: a server-made model goes whole to a client that holds none
        assert totals["downlink_message_bytes/tiny"] < totals["downlink_message_bytes/full"]
    if mode in ("heterofl", "nested"):  # tier models are the leading block of the one global model
        for k, v in tiny.items():
            np.testing.assert_array_equal(v, strategy.global_arrays[k][tuple(slice(0, s) for s in v.shape)])
    from fedcompress.task import dataset
    from fedcompress.training import evaluate

    ds = dataset(cfg)
    for t, model in strategy.tier_models().items():
        assert evaluate(model, ds.x_test, ds.y_test)[1] > 0.3, (mode, t)


def test_proxy_set_is_withheld_from_every_client() -> None:
    cfg = _cfg()
    proxy = set(proxy_indices(cfg).tolist())
    assert len(proxy) == round(0.1 * 1438)
    for pid in range(cfg.num_partitions):
        train, val = client_partition(cfg, pid)
        assert not proxy & set(train.tolist()) and not proxy & set(val.tolist())


def test_declared_device_gets_the_largest_tier_that_fits(tmp_path: Path) -> None:
    cfg = _cfg(**{"tier-training": "separate"})
    # ~13.7k fp32 params = ~57 KB; the tiny int8 tier is a few KB: 0.03 MiB holds only the tiny one
    strategy, _, _ = _run(
        cfg, tmp_path, rounds=1, node_config={"device-memory-mb": 0.03, "device-downlink-mbps": 10}
    )
    assert set(strategy.tier_of_partition.values()) == {"tiny"}
    with pytest.raises(NoTierFits, match="memory budget"):
        _run(cfg, tmp_path, rounds=1, node_config={"device-memory-mb": 0.001, "device-downlink-mbps": 10})


def test_bad_tier_config_names_the_key() -> None:
    with pytest.raises(ConfigError, match="tier-mix"):
        _cfg(**{"tier-mix": "full=0.5 tiny=oops"})
    with pytest.raises(ConfigError, match="width must be in"):
        _cfg(tiers="full=1.0 tiny=1.5")
    with pytest.raises(ConfigError, match="unknown tier"):
        _cfg(**{"tier-mix": "full=0.5 huge=0.5"})


def test_heterofl_aggregation_averages_each_coordinate_over_its_holders() -> None:
    full = {"w": np.zeros((4, 4), np.float32)}
    small = {"w": np.ones((2, 2), np.float32)}
    big = {"w": np.full((4, 4), 3.0, np.float32)}
    out = heterofl_aggregate(full, [(small, 1.0), (big, 1.0)])
    np.testing.assert_allclose(out["w"][:2, :2], 2.0)
    np.testing.assert_allclose(out["w"][2:, :], 3.0)
    np.testing.assert_array_equal(slice_like(out, {"w": (2, 2)})["w"], out["w"][:2, :2])
    assert split_clients(10, {"full": 30, "mid": 40, "tiny": 35}) == {"full": 3, "mid": 4, "tiny": 3}
    assert sum(split_clients(4, {"a": 1, "b": 100}).values()) == 4


def test_nested_tiers_train_narrower_widths_with_their_own_codecs(tmp_path: Path) -> None:
    """Full clients are told to train the tiny width too; tiny clients send through their own, larger codec;
    the first downlink is already a compressed delta (from the seeded widest model's slice) and nothing is rejected."""
    cfg = _cfg(
        **{"tier-training": "nested", "tier-uplink": "tiny: uniform(8) > entropy", "tier-nested-weight": 0.5}
    )
    strategy, recorder, grid = _run(cfg, tmp_path, rounds=2)
    nested = {
        float(m.content["config"]["fedcompress.width"]): (
            m.content["config"].get("fedcompress.nested-widths"),
            m.content["config"].get("fedcompress.nested-weight"),
        )
        for m in grid.sent
        if m.metadata.message_type == "train"
    }
    assert nested == {1.0: ("0.5", 0.5), 0.5: (None, None)}
    assert strategy.codecs["tiny"][0] == "uniform(8) > entropy"
    assert strategy.codecs["full"][0] == cfg.uplink
    recorder.ledger.flush()
    rows = [json.loads(x) for x in (recorder.run_dir / "ledger.jsonl").read_text().splitlines()]
    up = {r["tier"]: r["codec"] for r in rows if r["direction"] == "uplink"}
    assert up == {"tiny": "uniform(8) > entropy", "full": cfg.uplink}
    first = [r for r in rows if r["direction"] == "downlink" and r["round"] == 1]
    assert first and all(
        r["codec"] == cfg.downlink and r["encoded_bytes"] < r["raw_bytes"] / 3 for r in first
    )
    assert not any(r["rejected"] for r in rows)


@pytest.mark.parametrize("mode", ["nested", "heterofl", "distill"])
def test_clients_are_told_their_updates_reached_the_model(mode: str, tmp_path: Path) -> None:
    """Error feedback follows what the server applied: a tier mode that aggregates decoded replies itself must
    still report each client's last applied round, or every client re-adds its past updates to its residual."""
    from fedcompress.flower.protocol import APPLIED_ROUND

    cfg = _cfg(**{"tier-training": mode})
    _, _, grid = _run(cfg, tmp_path, rounds=5)
    last_trained: dict[int, int] = {}
    told = 0
    for m in grid.sent:
        if m.metadata.message_type != "train":
            continue
        node, rnd = m.metadata.dst_node_id, int(m.content["config"]["server-round"])
        assert int(m.content["config"][APPLIED_ROUND]) == last_trained.get(node, -1), (mode, node, rnd)
        told += node in last_trained
        last_trained[node] = rnd
    assert told > 0  # some clients came back, so the check above saw a real applied round


def test_sliced_tiers_take_the_run_strategys_server_step(tmp_path: Path) -> None:
    """Nested tiers average each coordinate over its holders, then the run's strategy takes its server step:
    with FedAvgM a round in which no client moved still moves the model by the momentum of the last round."""
    from flwr.app import ConfigRecord, Message, RecordDict

    cfg = _cfg(**{"tier-training": "nested", "strategy": "fedavgm", "server-momentum": 0.9})
    start = state_to_numpy(make_model(cfg))
    strategy, _, grid = _run(cfg, tmp_path, rounds=1)
    after = {k: v.copy() for k, v in strategy.global_arrays.items()}
    assert any(not np.array_equal(after[k], start[k]) for k in start)
    strategy.server_step.configure_train(2, numpy_to_record(after), ConfigRecord(), grid)
    carrier = Message(RecordDict(), reply_to=grid.sent[-1])
    moved = strategy._step(2, {k: v.copy() for k, v in after.items()}, carrier)
    for k in start:  # x2 = x1 - 0.9 * (x0 - x1)
        np.testing.assert_allclose(moved[k], after[k] + 0.9 * (after[k] - start[k]), rtol=1e-5, atol=1e-6)


def test_sliced_tiers_refuse_a_strategy_that_is_not_an_average(tmp_path: Path) -> None:
    cfg = _cfg(**{"tier-training": "nested", "strategy": "krum"})
    with pytest.raises(ConfigError, match="strategy.*fedavgm"):
        _run(cfg, tmp_path, rounds=1)
