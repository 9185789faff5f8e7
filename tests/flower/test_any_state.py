"""Every tensor of a state dict travels both ways, compressed or not: float tensors through the codecs, integer
and bool buffers and 0-d tensors exactly, fp16/bf16 models in their own dtype (torchvision-style models written
here; no downloads)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from flwr.app import Context, Message, MetricRecord, RecordDict
from flwr.clientapp import ClientApp
from flwr.serverapp.strategy import FedAvg
from torch import nn

from fedcompress.flower.mod import attach, make_compression_mod
from fedcompress.flower.records import load_record, record_spec, state_spec, state_to_record
from fedcompress.flower.sampling import discover_partitions
from fedcompress.flower.strategy import FedCompress
from tests.flower.loopback import LoopbackGrid


class BasicBlockNet(nn.Module):
    """torchvision's ResNet stem and one BasicBlock, shrunk: conv-bn-relu, residual, pooled classifier."""

    def __init__(self) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(1, 8, 3, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(8)
        self.conv2 = nn.Conv2d(8, 8, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(8)
        self.fc = nn.Linear(8, 4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = torch.relu(self.bn1(self.conv1(x)))
        y = torch.relu(y + self.bn2(self.conv2(y)))
        return self.fc(y.mean((2, 3)))


class TinyEncoder(nn.Module):
    """Embedding, LayerNorm and a linear head, with a 0-d int step counter and a bool mask buffer."""

    def __init__(self) -> None:
        super().__init__()
        self.embed = nn.Embedding(20, 8)
        self.norm = nn.LayerNorm(8)
        self.head = nn.Linear(8, 4)
        self.register_buffer("step", torch.tensor(0))
        self.register_buffer("mask", torch.tensor([True, False, True]))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.norm(self.embed(x)).mean(1))


MODELS = {
    "batchnorm": (BasicBlockNet, torch.float32, lambda g: torch.randn(4, 1, 6, 6, generator=g)),
    "layernorm-embedding": (TinyEncoder, torch.float32, lambda g: torch.randint(0, 20, (4, 5), generator=g)),
    "fp16": (TinyEncoder, torch.float16, lambda g: torch.randint(0, 20, (4, 5), generator=g)),
    "bf16": (BasicBlockNet, torch.bfloat16, lambda g: torch.randn(4, 1, 6, 6, generator=g)),
}


def _model(name: str) -> nn.Module:
    cls, dtype, _ = MODELS[name]
    torch.manual_seed(0)
    return cls().to(dtype)


def _client(name: str, seen: list[dict]) -> ClientApp:
    """A ClientApp that 'trains' (a forward pass in train mode, a noise step, buffers counted) and records what
    it received after the mod."""
    app = ClientApp()
    attach(app)

    @app.train(mods=[make_compression_mod(lambda ctx, cfg: {})])
    def train(msg: Message, context: Context) -> Message:
        model = _model(name)
        load_record(model, msg.content["arrays"])
        seen.append(
            {
                "round": int(msg.content["config"]["server-round"]),
                "spec": record_spec(msg.content["arrays"]),
                "state": {k: v.clone() for k, v in model.state_dict().items()},
            }
        )
        g = torch.Generator().manual_seed(int(context.node_id))
        model.train()
        with torch.no_grad():
            model(
                MODELS[name][2](g).to(MODELS[name][1])
                if MODELS[name][1] != torch.float32 and name != "fp16"
                else MODELS[name][2](g)
            )
            for p in model.parameters():
                p.add_(0.01 * torch.randn(p.shape, generator=g).to(p.dtype))
            if hasattr(model, "step"):
                model.step.fill_(int(msg.content["config"]["server-round"]))
        seen[-1]["sent"] = {k: v.clone() for k, v in model.state_dict().items()}
        return Message(
            RecordDict({"arrays": state_to_record(model), "metrics": MetricRecord({"num-examples": 10})}),
            reply_to=msg,
        )

    return app


@pytest.mark.parametrize(
    "codecs", [("identity", "identity"), ("topk(0.3) > ef > uniform(4) > entropy", "uniform(8) > entropy")]
)
@pytest.mark.parametrize("name", list(MODELS))
def test_state_dict_travels_exactly(name: str, codecs: tuple[str, str]) -> None:
    seen: list[dict] = []
    grid = LoopbackGrid(_client(name, seen), {}, 3)
    model = _model(name)
    strategy = FedCompress(
        FedAvg(fraction_evaluate=0.0),
        partitions=discover_partitions(grid, 3),
        clients_per_round=3,
        uplink=codecs[0],
        downlink=codecs[1],
    )
    result = strategy.start(grid=grid, initial_arrays=state_to_record(model), num_rounds=3)  # type: ignore[arg-type]
    assert not any(strategy.rejections.values()), strategy.rejections
    assert sum(strategy.accepted.values()) == 9
    want = state_spec(model)
    for s in seen:  # what every client received, every round: the model's names, shapes and dtypes
        assert s["spec"] == want
        assert {k: (tuple(v.shape), v.dtype) for k, v in s["state"].items()} == {
            k: (tuple(v.shape), v.dtype) for k, v in model.state_dict().items()
        }
    later = [s["state"] for s in seen if s["round"] == 3]
    if "bn1.num_batches_tracked" in want:  # one batch per client per round, averaged exactly
        assert all(int(s["bn1.num_batches_tracked"]) == 2 for s in later)
        assert all(not torch.equal(s["bn1.running_mean"], model.bn1.running_mean) for s in later)
        # running statistics travel exactly, even through lossy codecs: round 3 receives round 2's mean
        sent = torch.stack([s["sent"]["bn1.running_var"].double() for s in seen if s["round"] == 2]).mean(0)
        eps = torch.finfo(model.bn1.running_var.dtype).eps  # the mean is rounded to the model's dtype
        for s in later:
            assert torch.allclose(s["bn1.running_var"].double(), sent, rtol=max(eps, 1e-6), atol=0), codecs
    if "step" in want:  # 0-d int set to the round by every client: round 3 receives exactly 2
        assert all(s["step"].shape == () and int(s["step"]) == 2 for s in later)
        assert all(s["mask"].tolist() == [True, False, True] for s in later)
    final = result.arrays
    assert set(final) == set(want) and all(tuple(final[k].shape) == want[k][0] for k in want)
    if codecs[0] != "identity":
        ledger = strategy.ledger.cumulative
        assert ledger["uplink_encoded_bytes"] < ledger["uplink_raw_bytes"]


def test_exact_tensors_named_like_our_keys_travel_in_the_frame_exactly() -> None:
    """Exact tensors live inside the frame, so no model name can collide with the record's own keys."""
    from flwr.app import Array

    from fedcompress.flower.payload import payload_record, read_frame
    from fedcompress.flower.records import BF16_STYPE, numpy_to_record

    exact = {
        "payload": Array(np.array(7, np.int64)),  # 0-d stays 0-d
        "fc": Array(np.array([True, False])),
        "bn.running_var": Array(np.array([[1.5, -0.0]], np.float16)),
        **numpy_to_record({"half": np.array([1.0, -2.5], np.float32)}, {"half": ((2,), "bfloat16")}),
    }
    frame = read_frame(payload_record(b"x", exact))
    assert frame is not None and frame.payload == b"x"
    assert list(frame.exact) == list(exact)
    for k, a in exact.items():
        got = frame.exact[k]
        assert got.shape == tuple(a.shape) and got.data == (
            a.data if a.stype == BF16_STYPE else a.numpy().tobytes()
        )
    assert frame.exact["payload"].numpy().shape == () and frame.exact["half"].numpy().tolist() == [1.0, -2.5]
