"""Nested sub-model training: the narrow model inside a wide one learns to work on its own."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from fedcompress.data import load_dataset
from fedcompress.errors import ConfigError
from fedcompress.models import build_model
from fedcompress.tiers import slice_like, train_nested
from fedcompress.tiers.feddf import load_arrays, model_arrays
from fedcompress.tiers.heterofl import initial_slice
from fedcompress.tiers.nested import check_sliceable, parse_widths
from fedcompress.training import evaluate, train


def _slice_accuracy(full: torch.nn.Module, width: float, x: np.ndarray, y: np.ndarray) -> float:
    small = build_model("cnn8", 10, width)
    arrays = slice_like(model_arrays(full), {k: tuple(v.shape) for k, v in small.state_dict().items()})
    return evaluate(load_arrays(small, arrays), x, y)[1]


def test_nested_training_makes_the_leading_block_a_working_model(shared_data) -> None:  # noqa: ANN001
    ds = load_dataset("digits", str(shared_data))
    x, y = ds.x_train[:800], ds.y_train[:800]
    kw = {"epochs": 4, "lr": 0.1, "batch_size": 16, "seed": 3}
    torch.manual_seed(0)
    plain = build_model("cnn8", 10, 1.0)
    nested = build_model("cnn8", 10, 1.0)
    nested.load_state_dict(plain.state_dict())
    train(plain, x, y, **kw)
    train_nested(nested, [build_model("cnn8", 10, 0.25), build_model("cnn8", 10, 0.5)], x, y, **kw)
    for width, margin in (
        (0.25, 0.2),
        (0.5, 0.1),
    ):  # a plain model's slices are far worse (0.68 at width 0.5)
        got = _slice_accuracy(nested, width, ds.x_test, ds.y_test)
        base = _slice_accuracy(plain, width, ds.x_test, ds.y_test)
        assert got > 0.8 and got > base + margin, (width, got, base)
    assert evaluate(nested, ds.x_test, ds.y_test)[1] > 0.85  # the wide model still learns


def test_sub_model_must_be_a_leading_block() -> None:
    with pytest.raises(ConfigError, match="not a leading block"):
        train_nested(
            build_model("cnn8", 10, 0.5), [build_model("cnn8", 10, 1.0)],
            np.zeros((4, 1, 8, 8), np.float32), np.zeros(4, np.int64), epochs=1, lr=0.1, batch_size=2, seed=0,
        )  # fmt: skip


def test_initial_slice_is_the_leading_block_of_the_seeded_widest_model() -> None:
    wide, own = build_model("cnn8", 10, 1.0), build_model("cnn8", 10, 0.5)
    got = initial_slice(model_arrays(wide), model_arrays(own))
    assert {k: v.shape for k, v in got.items()} == {k: tuple(v.shape) for k, v in own.state_dict().items()}
    np.testing.assert_array_equal(got["conv2.weight"], model_arrays(wide)["conv2.weight"][:16, :8])


def test_bad_widths_and_models_are_named() -> None:
    assert parse_widths("0.5,0.25") == [0.25, 0.5]
    with pytest.raises(ConfigError, match="'0.5,big'"):
        parse_widths("0.5,big")
    with pytest.raises(ConfigError, match="'1.5'"):
        parse_widths("1.5")
    with pytest.raises(ConfigError, match="'lstm'.*'distill' or 'separate'"):
        check_sliceable("lstm")


def test_sub_model_loss_weight_scales_what_narrower_widths_pull() -> None:
    """Weight 0: the narrower widths pull nothing (the client trains its own width alone); weight 1 differs."""
    rng = np.random.default_rng(0)
    x, y = rng.normal(size=(32, 1, 8, 8)).astype(np.float32), rng.integers(0, 10, 32)
    kw = {"epochs": 1, "lr": 0.1, "batch_size": 8, "seed": 1}
    torch.manual_seed(0)
    start = build_model("cnn8", 10, 1.0).state_dict()
    out = {}
    for name, subs, weight in (("alone", [], 1.0), ("zero", [build_model("cnn8", 10, 0.5)], 0.0),
                               ("one", [build_model("cnn8", 10, 0.5)], 1.0)):  # fmt: skip
        m = build_model("cnn8", 10, 1.0)
        m.load_state_dict(start)
        train_nested(m, subs, x, y, sub_weight=weight, **kw)
        out[name] = model_arrays(m)
    for k in start:
        np.testing.assert_allclose(out["zero"][k], out["alone"][k], rtol=1e-6, atol=1e-7)
    assert any(not np.allclose(out["one"][k], out["alone"][k]) for k in start)


def test_distill_outer_moves_only_what_no_narrower_tier_holds() -> None:
    """nested-distill: the widest model's own channels learn from the ensemble; the leading block (what the
    narrower tiers hold) is exactly as it was, so the narrower tiers' models do not change."""
    from fedcompress.tiers.feddf import distill_outer

    torch.manual_seed(0)
    wide, narrow = build_model("cnn8", 10, 1.0), build_model("cnn8", 10, 0.5)
    teacher = build_model("cnn8", 10, 1.0)
    before = model_arrays(wide)
    inner = {k: tuple(v.shape) for k, v in narrow.named_parameters()}
    x = torch.randn(64, 1, 8, 8)
    after = distill_outer(wide, before, inner, [teacher.eval()], x, seed=1, options={"epochs": 2, "lr": 0.01})
    moved = False
    for k, shape in inner.items():
        block = tuple(slice(0, s) for s in shape)
        np.testing.assert_array_equal(after[k][block], before[k][block])
        moved |= not np.array_equal(after[k], before[k])
    assert moved
    assert not any(p._backward_hooks for p in wide.parameters())
