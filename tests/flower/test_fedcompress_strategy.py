"""FedCompress around Flower strategies, driven through the real ClientApp (with its compression mod) in-process."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest
from flwr.app import Array, ArrayRecord, ConfigRecord, Message, RecordDict

from fedcompress.config import RunConfig, defaults
from fedcompress.flower import held_store
from fedcompress.flower.clientapp import app as client_app
from fedcompress.flower.frame import pack
from fedcompress.flower.payload import frame_record, read_frame
from fedcompress.flower.protocol import FRAME_KEY, LEGACY_STYPE
from fedcompress.flower.records import numpy_to_record, record_to_numpy, state_to_numpy
from fedcompress.flower.sampling import discover_partitions
from fedcompress.flower.strategies import make_strategy
from fedcompress.flower.strategy import FedCompress
from fedcompress.ledger import Ledger
from fedcompress.task import dataset, make_model
from fedcompress.training import evaluate
from tests.flower.loopback import LoopbackGrid

SPARSE = "topk(0.05) > ef > uniform(4) > entropy"


def _config(**kw: object) -> RunConfig:
    base = {**defaults(), "num-partitions": 5, "clients-per-round": 4, "partitioning": "iid",
            "local-epochs": 2, "learning-rate": 0.1, "batch-size": 16, "seed": 3,
            "uplink": "identity", "downlink": "identity"}  # fmt: skip
    return RunConfig.from_run_config({**base, **kw})


def _run(cfg: RunConfig, rounds: int, tamper=None, shared_initial=None):  # noqa: ANN001, ANN202
    grid = LoopbackGrid(client_app, cfg.as_run_config(), cfg.num_partitions, tamper=tamper)
    ledger = Ledger()
    strategy = FedCompress(
        make_strategy(cfg), partitions=discover_partitions(grid, cfg.num_partitions),
        clients_per_round=cfg.clients_per_round, seed=cfg.seed, uplink=cfg.uplink, downlink=cfg.downlink, ledger=ledger,
        shared_initial=shared_initial,
    )  # fmt: skip
    model = make_model(cfg)
    initial = numpy_to_record(state_to_numpy(model))
    result = strategy.start(grid=grid, initial_arrays=initial, num_rounds=rounds)  # type: ignore[arg-type]
    model.load_state_dict(
        {k: __import__("torch").from_numpy(v) for k, v in record_to_numpy(result.arrays).items()}
    )
    ds = dataset(cfg)
    return strategy, ledger, grid, evaluate(model, ds.x_test, ds.y_test)[1], initial, result


def test_compressed_both_ways_learns_with_far_fewer_bytes() -> None:
    cfg = _config(uplink=SPARSE, downlink="uniform(8) > entropy")
    strategy, ledger, grid, acc, _, _ = _run(cfg, rounds=4)
    assert acc > 0.6
    up = ledger.cumulative
    assert up["uplink_encoded_bytes"] * 15 < up["uplink_raw_bytes"]
    # first contact gets the full model; later rounds send 8-bit deltas
    assert up["downlink_encoded_bytes"] * 1.5 < up["downlink_raw_bytes"]
    assert all(v == 0 for v in strategy.rejections.values())
    # error feedback lives in each trained node's context.state
    trained = {m.metadata.dst_node_id for m in grid.sent if m.metadata.message_type == "train"}
    assert all("fedcompress.residual" in grid.contexts[n].state for n in trained)


def test_downlink_tracks_exactly_what_each_client_holds() -> None:
    cfg = _config(uplink=SPARSE, downlink="topk(0.1) > uniform(4) > entropy")
    strategy, _, grid, _, _, _ = _run(cfg, rounds=3)
    for pid, (_, held) in strategy.held.items():
        ctx = grid.contexts[strategy.partitions[pid]]
        client_held = held_store.load(ctx)  # shared folder: the simulation engine sets num-partitions
        for k in held:
            np.testing.assert_array_equal(held[k], client_held[k])


def test_first_downlink_is_a_delta_from_the_seeded_initial_model() -> None:
    cfg = _config(uplink=SPARSE, downlink="topk(0.1) > uniform(4) > entropy")
    initial = {k: v.copy() for k, v in state_to_numpy(make_model(cfg)).items()}
    strategy, ledger, grid, acc, _, _ = _run(cfg, rounds=3, shared_initial=initial)
    assert all(grid.sent_encoded)  # no full fp32 model, even at first contact
    assert ledger.cumulative["downlink_encoded_bytes"] * 8 < ledger.cumulative["downlink_raw_bytes"]
    assert acc > 0.4 and not strategy.rejections.get(1)


def test_client_with_a_different_initial_model_errors_then_gets_full_models() -> None:
    cfg = _config(uplink=SPARSE, downlink="uniform(8) > entropy", **{"clients-per-round": 5})
    wrong = {k: v + 1.0 for k, v in state_to_numpy(make_model(cfg)).items()}
    strategy, _, grid, _, _, _ = _run(cfg, rounds=2, shared_initial=wrong)
    assert strategy.rejections[1] == 5  # every client refused a delta against a base it does not hold
    assert strategy.rejections.get(2, 0) == 0 and strategy.no_shared_base == set(range(5))
    assert grid.sent_encoded == [True] * 5 + [False] * 5


def _corrupt(kind: str):  # noqa: ANN202
    def tamper(pid: int, reply: Message) -> Message:
        if pid != 1 or reply.has_error() or reply.metadata.message_type != "train":
            return reply
        frame = read_frame(reply.content["arrays"])  # the metrics stay in it: only the named part is bad
        assert frame is not None
        payload = frame.payload
        if kind == "truncate":
            bad = frame_record(replace(frame, payload=payload[: len(payload) // 2]))
        elif kind == "bitflip":
            b = bytearray(payload)
            b[len(b) // 2] ^= 0x10
            bad = frame_record(replace(frame, payload=bytes(b)))
        elif kind == "version":  # the codec payload's version
            b = bytearray(payload)
            b[4] = 99
            bad = frame_record(replace(frame, payload=bytes(b)))
        elif kind == "frame-version":  # the frame's (the protocol's) version
            b = bytearray(pack(frame))
            b[3] = 3
            bad = ConfigRecord({FRAME_KEY: bytes(b)})
        elif kind == "frame-garbage":
            bad = ConfigRecord({FRAME_KEY: b"not-a-frame"})
        elif kind == "plain-nan":
            arrays = {"w": np.full((3,), np.nan, dtype=np.float32)}
            bad = numpy_to_record(arrays)
        else:  # protocol 1's payload Array
            bad = ArrayRecord(
                {"payload": Array(dtype="uint8", shape=(len(payload),), stype=LEGACY_STYPE, data=payload)}
            )
        reply.content["arrays"] = bad
        return reply

    return tamper


@pytest.mark.parametrize(
    "kind", ["truncate", "bitflip", "version", "frame-version", "frame-garbage", "plain-nan", "protocol-1"]
)
def test_corrupt_payload_rejected_counted_and_round_goes_on(kind: str) -> None:
    cfg = _config(uplink=SPARSE, **{"clients-per-round": 5})
    strategy, ledger, _, acc, initial, result = _run(cfg, rounds=2, tamper=_corrupt(kind))
    assert strategy.rejections == {1: 1, 2: 1}
    rows = [ledger.round_totals(r) for r in (1, 2)]
    assert all(r["rejected"] == 1 and r["uplink_messages"] == 5 for r in rows)
    final = record_to_numpy(result.arrays)
    assert all(np.isfinite(v).all() for v in final.values())
    assert any(not np.array_equal(final[k], v) for k, v in record_to_numpy(initial).items())
    assert acc > 0.3


@pytest.mark.parametrize("inner", ["fedprox", "fedadam", "krum"])
def test_compression_composes_with_other_flower_strategies(inner: str) -> None:
    cfg = _config(
        uplink=SPARSE, downlink="uniform(8) > entropy", strategy=inner, **{"server-learning-rate": 0.05}
    )
    strategy, ledger, grid, acc, _, _ = _run(cfg, rounds=3)
    assert type(strategy.inner).__name__.lower() == inner
    assert acc > (0.25 if inner == "krum" else 0.4), acc  # Krum keeps one client's model: slower start
    assert ledger.cumulative["uplink_encoded_bytes"] * 15 < ledger.cumulative["uplink_raw_bytes"]
    if inner == "fedprox":
        cfgs = [m.content["config"] for m in grid.sent if m.metadata.message_type == "train"]
        assert all(float(c["proximal-mu"]) == cfg.proximal_mu for c in cfgs)


def test_identity_sends_what_stock_flower_sends() -> None:
    cfg = _config()
    _, ledger, grid, acc, _, _ = _run(cfg, rounds=2)
    train_msgs = [m for m in grid.sent if m.metadata.message_type == "train"]
    assert not any(grid.sent_encoded)
    assert (
        ledger.cumulative["uplink_raw_bytes"]
        <= ledger.cumulative["uplink_encoded_bytes"]
        < 1.05 * ledger.cumulative["uplink_raw_bytes"]
    )
    assert isinstance(train_msgs[0].content["config"], ConfigRecord) and isinstance(
        train_msgs[0].content, RecordDict
    )


def test_identity_run_rejects_nan_and_wrong_shapes() -> None:
    def tamper(pid: int, reply: Message) -> Message:
        if reply.metadata.message_type == "train" and pid in (1, 2):
            arrays = record_to_numpy(reply.content["arrays"])
            if pid == 1:
                arrays["fc2.bias"] = np.full_like(arrays["fc2.bias"], np.nan)
            else:
                arrays["fc2.bias"] = arrays["fc2.bias"][:-1]
            reply.content["arrays"] = numpy_to_record(arrays)
        return reply

    strategy, _, _, acc, _, result = _run(_config(**{"clients-per-round": 5}), rounds=2, tamper=tamper)
    assert strategy.rejections == {1: 2, 2: 2}
    assert all(np.isfinite(v).all() for v in record_to_numpy(result.arrays).values()) and acc > 0.3


def test_batchnorm_model_trains_compressed_through_the_clientapp() -> None:
    """cnn8bn's int64 num_batches_tracked and running stats travel exactly; no reply is rejected."""
    cfg = _config(model="cnn8bn", uplink=SPARSE, downlink="topk(0.1) > uniform(4) > entropy")
    initial = {k: v.copy() for k, v in state_to_numpy(make_model(cfg)).items()}
    strategy, ledger, grid, acc, _, result = _run(cfg, rounds=3, shared_initial=initial)
    assert not any(strategy.rejections.values()) and sum(strategy.accepted.values()) == 12
    final = record_to_numpy(result.arrays)
    assert final["bn1.num_batches_tracked"].shape == () and int(final["bn1.num_batches_tracked"]) > 0
    assert acc > 0.4, acc
    assert ledger.cumulative["uplink_encoded_bytes"] * 10 < ledger.cumulative["uplink_raw_bytes"]
