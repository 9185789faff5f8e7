"""The broadcast downlink: one encode per distinct base model, server state bounded by the ring, not by clients."""

from __future__ import annotations

import shutil

import numpy as np
import pytest

from fedcompress.errors import ConfigError
from fedcompress.flower import held_store
from fedcompress.flower.clientapp import app as client_app
from fedcompress.flower.downlink import HeldModels, models_in_budget
from fedcompress.flower.payload import payload_of
from fedcompress.flower.records import state_to_numpy
from fedcompress.flower.sampling import discover_partitions
from fedcompress.flower.strategies import make_strategy
from fedcompress.flower.strategy import FedCompress
from fedcompress.ledger import Ledger
from fedcompress.task import make_model
from tests.flower.loopback import LoopbackGrid
from tests.flower.test_fedcompress_strategy import SPARSE, _config

DOWN = "topk(0.1) > uniform(4) > entropy"


class RecordingGrid(LoopbackGrid):
    """Keeps each train message's payload bytes as sent (the client mod decodes messages in place)."""

    payloads: list[bytes | None]

    def send_and_receive(self, messages, *, timeout=None):  # noqa: ANN001, ANN201
        messages = list(messages)
        self.payloads = getattr(self, "payloads", [])
        self.payloads += [
            payload_of(m.content["arrays"]) for m in messages if m.metadata.message_type == "train"
        ]
        return super().send_and_receive(messages, timeout=timeout)


def _run(rounds: int, ring: int = 16, per_round: int = 4, n: int = 8, grid_hook=None):  # noqa: ANN001, ANN202
    cfg = _config(uplink=SPARSE, downlink=DOWN, **{"num-partitions": n, "clients-per-round": per_round})
    grid = RecordingGrid(client_app, cfg.as_run_config(), n)
    model = make_model(cfg)
    initial = {k: v.copy() for k, v in state_to_numpy(model).items()}
    strategy = FedCompress(
        make_strategy(cfg), partitions=discover_partitions(grid, n), clients_per_round=per_round, seed=cfg.seed,
        uplink=cfg.uplink, downlink=cfg.downlink, ledger=Ledger(), shared_initial=initial, downlink_ring=ring,
    )  # fmt: skip
    if grid_hook is not None:
        grid_hook(grid)
    from fedcompress.flower.records import numpy_to_record

    strategy.start(grid=grid, initial_arrays=numpy_to_record(initial), num_rounds=rounds)  # type: ignore[arg-type]
    return strategy, grid


def test_first_round_encodes_once_and_broadcasts_the_same_bytes() -> None:
    strategy, grid = _run(rounds=1)
    payloads = grid.payloads
    assert len(payloads) == 4 and all(p is not None for p in payloads)
    assert len(set(payloads)) == 1  # everyone holds the initial model: one payload, broadcast
    assert len(strategy.compression.models.models) == 1  # and they all hold the same model, kept once


def test_server_and_clients_agree_bit_for_bit_with_fewer_models_than_clients() -> None:
    strategy, grid = _run(rounds=4)
    held = strategy.held
    assert len(held) == 8
    distinct = strategy.compression.models.models
    assert len(distinct) < len(held)  # groups share one model
    for pid, (_, arrays) in held.items():
        got = held_store.load(grid.contexts[strategy.partitions[pid]])
        assert got is not None
        for k in arrays:
            np.testing.assert_array_equal(arrays[k], got[k])


def test_clients_behind_the_ring_get_a_delta_from_the_initial_model() -> None:
    strategy, grid = _run(rounds=4, ring=1, per_round=3)
    assert not any(v for v in strategy.rejections.values())
    models = strategy.compression.models
    assert all(4 - h.round <= 1 for h in models.models.values())  # nothing older than the ring is kept
    assert models.dropped > 0


def test_lost_held_model_is_an_error_then_repaired_never_trained_on() -> None:
    store = {}

    def hook(grid: LoopbackGrid) -> None:
        store["dir"] = held_store.default_dir({}, 1)

    strategy, grid = _run(rounds=2, per_round=8, grid_hook=hook)
    shutil.rmtree(store["dir"])  # every client's held model is gone
    # one more round with the same strategy: every client errs (base missing), none is trained on
    from fedcompress.flower.records import numpy_to_record

    arrays = numpy_to_record(next(iter(strategy.held.values()))[1])
    strategy.start(grid=grid, initial_arrays=arrays, num_rounds=1)  # type: ignore[arg-type]
    assert strategy.rejections.get(1, 0) == 8, strategy.rejections  # all 8 replies rejected, none aggregated
    assert not strategy.held  # the server forgot what they hold: next time they get the full model


def test_state_budget_too_small_is_a_clear_error_at_start_up() -> None:
    with pytest.raises(ConfigError, match="server-state-mb"):
        models_in_budget(1.0, 400_000)
    assert models_in_budget(0.0, 400_000) is None
    assert models_in_budget(10.0, 1_000_000) == 8


def test_budget_caps_the_models_kept() -> None:
    models = HeldModels(ring=10, max_models=2)
    for pid in range(5):
        models.hold(pid, f"{pid:016x}", pid, {"w": np.zeros(3, np.float32)})
    models.evict(5)
    assert len(models.models) == 2 and models.base(0, 6) is None and models.base(4, 6) is not None
