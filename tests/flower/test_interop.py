"""fedcompress plays with stock Flower: a stock ClientApp against our server, our ClientApp against a stock
FedAvg server, and FedCompress around Flower's strategies with their default arguments (in-process loopback
grid: the real ClientApps, mods and records, without Ray start-up)."""

from __future__ import annotations

import time

import numpy as np
import pytest
import torch
from flwr.app import ArrayRecord, ConfigRecord, Context, Message, MetricRecord, RecordDict
from flwr.clientapp import ClientApp
from flwr.serverapp import strategy as fl
from sklearn.datasets import load_digits
from torch import nn

from fedcompress.config import defaults
from fedcompress.errors import RunError
from fedcompress.flower.clientapp import app as our_client_app
from fedcompress.flower.strategy import FedCompress
from tests.flower.loopback import LoopbackGrid

SPARSE = "topk(0.05) > ef > uniform(4) > entropy"

# ---------------------------------------------------------------- a stock Flower ClientApp (no fedcompress code)
stock_app = ClientApp()


def _net() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Flatten(), nn.Linear(64, 32), nn.ReLU(), nn.Linear(32, 10))


@stock_app.train()
def _stock_train(msg: Message, context: Context) -> Message:
    x, y = load_digits(return_X_y=True)
    pid, n = int(context.node_config["partition-id"]), int(context.node_config["num-partitions"])
    xt = torch.tensor(x[pid::n] / 16.0, dtype=torch.float32)
    yt = torch.tensor(y[pid::n])
    model = _net()
    model.load_state_dict(msg.content["arrays"].to_torch_state_dict())
    opt = torch.optim.SGD(model.parameters(), lr=float(msg.content["config"].get("lr", 0.1)))
    for _ in range(5):
        opt.zero_grad()
        loss = nn.functional.cross_entropy(model(xt), yt)
        loss.backward()
        opt.step()
    content = RecordDict(
        {
            "arrays": ArrayRecord(model.state_dict()),
            "metrics": MetricRecord({"num-examples": len(yt), "train_loss": loss.item()}),
        }
    )
    return Message(content=content, reply_to=msg)


def _stock_initial() -> ArrayRecord:
    return ArrayRecord(_net().state_dict())


@pytest.mark.parametrize("codecs", [("identity", "identity"), (SPARSE, "uniform(8) > entropy")])
def test_stock_client_trains_with_plain_fp32_against_our_server(codecs: tuple[str, str]) -> None:
    grid = LoopbackGrid(stock_app, {}, 3)
    strategy = FedCompress(
        fl.FedAvg(fraction_evaluate=0.0),
        clients_per_round=3,
        uplink=codecs[0],
        downlink=codecs[1],
        expected_nodes=3,
    )
    t0 = time.monotonic()
    initial = _stock_initial()
    result = strategy.start(grid=grid, initial_arrays=initial, num_rounds=2)  # type: ignore[arg-type]
    assert time.monotonic() - t0 < 60
    assert (
        strategy.plain == {0, 1, 2}
        and sum(strategy.accepted.values()) == 6
        and not any(strategy.rejections.values())
    )
    rows = [r for r in _ledger_rows(strategy) if r.message_type == "train"]
    assert rows and all(r.codec == "fp32-fallback" for r in rows)  # counted as the documented fallback
    assert any(
        r.message_type.startswith("query") for r in _ledger_rows(strategy)
    )  # the capability query is measured too
    assert any(not np.array_equal(result.arrays[k].numpy(), initial[k].numpy()) for k in initial)
    sent = [m for m in grid.sent if m.metadata.message_type == "train"]
    assert all(not any(str(k).startswith("fedcompress.") for k in m.content["config"]) for m in sent)


def test_stock_client_refused_at_once_when_asked() -> None:
    grid = LoopbackGrid(stock_app, {}, 2)
    strategy = FedCompress(
        fl.FedAvg(), clients_per_round=2, uplink=SPARSE, plain_clients="refuse", expected_nodes=2
    )
    t0 = time.monotonic()
    with pytest.raises(RunError, match=r"node \d+ \(partition 0\).*no fedcompress mod"):
        strategy.start(grid=grid, initial_arrays=_stock_initial(), num_rounds=1)  # type: ignore[arg-type]
    assert time.monotonic() - t0 < 10


def _ledger_rows(strategy: FedCompress) -> list:
    return strategy.ledger.__dict__.get("rows", [])


@pytest.fixture(autouse=True)
def _keep_rows(monkeypatch: pytest.MonkeyPatch) -> None:
    """Keep every ledger row in memory (the ledger itself writes them to a file only)."""
    from fedcompress.ledger import Ledger

    original = Ledger.record

    def record(self, t):  # noqa: ANN001, ANN202
        self.__dict__.setdefault("rows", []).append(t)
        return original(self, t)

    monkeypatch.setattr(Ledger, "record", record)


# ---------------------------------------------------------------- our ClientApp against a stock FedAvg server
def _our_run_config() -> dict:
    return {
        **defaults(),
        "num-partitions": 3,
        "clients-per-round": 2,
        "local-epochs": 1,
        "partitioning": "iid",
        "not-ours": "ignored",
        "fraction-train": 0.5,
    }


@pytest.mark.parametrize("lr", [0.0, 0.1])
def test_our_client_behaves_as_a_plain_client_for_stock_fedavg(lr: float) -> None:
    from fedcompress.config import RunConfig
    from fedcompress.flower.records import state_to_record
    from fedcompress.task import make_model

    grid = LoopbackGrid(our_client_app, _our_run_config(), 3)
    initial = state_to_record(make_model(RunConfig.from_run_config(_our_run_config())))
    result = fl.FedAvg().start(
        grid=grid, initial_arrays=initial, num_rounds=2, train_config=ConfigRecord({"lr": lr})
    )  # type: ignore[arg-type]
    assert len(result.train_metrics_clientapp) == 2 and "eval_acc" in result.evaluate_metrics_clientapp[2]
    moved = max(float(np.abs(result.arrays[k].numpy() - initial[k].numpy()).max()) for k in initial)
    assert (moved > 1e-3) if lr > 0 else (moved < 1e-6)  # the server's "lr" is followed: lr=0 trains nothing
    assert "fedcompress.metadata-bytes" not in result.train_metrics_clientapp[2]


# ---------------------------------------------------------------- FedCompress x Flower strategies x clients per round
def _strategies(k: int) -> dict:
    return {
        "fedavg": fl.FedAvg(),
        "fedprox": fl.FedProx(),
        "fedadam": fl.FedAdam(),
        "krum": fl.Krum(),
        "dp-client-fixed": fl.DifferentialPrivacyClientSideFixedClipping(fl.FedAvg(), noise_multiplier=1e-4, clipping_norm=10.0, num_sampled_clients=k),
    }  # fmt: skip


@pytest.mark.parametrize("k", [1, 2, 10])
@pytest.mark.parametrize("name", ["fedavg", "fedprox", "fedadam", "krum", "dp-client-fixed"])
def test_wrapper_samples_exactly_what_is_asked(name: str, k: int) -> None:
    cfg = {**defaults(), "num-partitions": 10, "local-epochs": 1, "partitioning": "iid", "uplink": SPARSE}
    grid = LoopbackGrid(our_client_app, cfg, 10)
    from fedcompress.config import RunConfig
    from fedcompress.flower.records import state_to_record
    from fedcompress.task import make_model

    strategy = FedCompress(_strategies(k)[name], clients_per_round=k, uplink=SPARSE, expected_nodes=10)
    t0 = time.monotonic()
    strategy.start(
        grid=grid, initial_arrays=state_to_record(make_model(RunConfig.from_run_config(cfg))), num_rounds=2
    )  # type: ignore[arg-type]
    assert time.monotonic() - t0 < 120
    per_round = [
        sum(
            1
            for m in grid.sent
            if m.metadata.message_type == "train" and m.content["config"]["server-round"] == r
        )
        for r in (1, 2)
    ]
    assert per_round == [k, k]
    # every sampled client answered; a reply may be rejected (e.g. FedAdam's default eta=0.1 can make a client
    # diverge to NaN), but it is counted, never lost
    assert [strategy.accepted.get(r, 0) + strategy.rejections.get(r, 0) for r in (1, 2)] == [k, k]
    assert all(m is None or "fedcompress.metadata-bytes" not in m for m in strategy.train_metrics.values())


def test_rounds_with_every_reply_rejected_end_the_run() -> None:
    from fedcompress.flower.serverapp import _check_trained

    strategy = FedCompress(fl.FedAvg(), partitions={0: 1}, clients_per_round=1)
    strategy.rejections.update({1: 1, 2: 1})
    _check_trained(strategy, 1)  # one such round may be recovery
    with pytest.raises(RunError, match="every reply was rejected"):
        _check_trained(strategy, 2)
