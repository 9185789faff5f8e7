"""Server-made tier models: pruned from the global model by importance, then distilled towards it."""

from __future__ import annotations

import torch

from fedcompress.data import load_dataset
from fedcompress.models import build_model
from fedcompress.tiers.deliver import make_tier_arrays
from fedcompress.tiers.feddf import load_arrays
from fedcompress.training import train


def _agreement(a: torch.nn.Module, b: torch.nn.Module, x: torch.Tensor) -> float:
    with torch.no_grad():
        return float((a.eval()(x).argmax(1) == b.eval()(x).argmax(1)).float().mean())


def test_tier_model_is_the_tier_shape_and_follows_the_global_model(shared_data) -> None:  # noqa: ANN001
    ds = load_dataset("digits", str(shared_data))
    torch.manual_seed(0)
    teacher = build_model("cnn8", 10, 1.0)
    train(teacher, ds.x_train[:600], ds.y_train[:600], epochs=3, lr=0.1, batch_size=16, seed=0)
    proxy, test = torch.from_numpy(ds.x_train[600:1000].copy()), torch.from_numpy(ds.x_test.copy())
    student = build_model("cnn8", 10, 0.25)
    opts = {"epochs": 0}
    pruned, _ = make_tier_arrays(teacher, student, 0.25, proxy, start=None, seed=0, options=opts)
    assert {k: v.shape for k, v in pruned.items()} == {
        k: tuple(v.shape) for k, v in student.state_dict().items()
    }
    before = _agreement(load_arrays(build_model("cnn8", 10, 0.25), pruned), teacher, test)
    made, secs = make_tier_arrays(
        teacher, student, 0.25, proxy, start=pruned, seed=0, options={"epochs": 5, "lr": 3e-3}
    )
    after = _agreement(load_arrays(build_model("cnn8", 10, 0.25), made), teacher, test)
    assert secs > 0 and after > max(before + 0.1, 0.7), (before, after)
