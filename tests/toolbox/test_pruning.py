"""Unstructured sparsity, structured shrinking with exact kept channels, automatic budgeted pruning."""

import copy

import pytest
import torch
from torch import nn

from fedcompress.models import build_model, count_parameters
from fedcompress.pruning import (
    auto_prune,
    channel_importance,
    fine_tune,
    keep_plan,
    layer_chain,
    magnitude_prune,
    prunable_weights,
    pruned_param_count,
    resize_like,
    sparsity,
    structured_prune,
)

SHAPES = {"cnn28": (1, 28, 28), "cnn32": (3, 32, 32), "cnn8": (1, 8, 8)}


def _model(name: str, width: float = 0.25, seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    return build_model(name, 10, width).eval()


def _x(name: str, n: int = 6) -> torch.Tensor:
    return torch.randn(n, *SHAPES[name], generator=torch.Generator().manual_seed(1))


@pytest.mark.parametrize("scope", ["global", "layer"])
def test_unstructured_reaches_ratio_and_is_permanent(scope):
    model = _model("cnn28")
    magnitude_prune(model, 0.6, scope=scope)
    assert sparsity(model) == pytest.approx(0.6, abs=2e-3)
    if scope == "layer":
        for module, name in prunable_weights(model):
            w = getattr(module, name)
            assert float((w == 0).float().mean()) == pytest.approx(0.6, abs=0.02)
    assert not any(n.endswith("_orig") for n, _ in model.named_parameters())
    assert all(not m._forward_pre_hooks for m in model.modules())


def test_unstructured_global_keeps_largest_magnitudes():
    model = _model("cnn8")
    before = torch.cat([getattr(m, n).detach().abs().flatten() for m, n in prunable_weights(model)])
    magnitude_prune(model, 0.5)
    after = torch.cat([getattr(m, n).detach().abs().flatten() for m, n in prunable_weights(model)])
    assert float(before[after > 0].min()) >= float(before[after == 0].max())


@pytest.mark.parametrize("bad", [1.0, -0.1, 1.5])
def test_bad_ratios_name_field_and_range(bad):
    with pytest.raises(ValueError, match=r"ratio.*\[0, 1\)"):
        magnitude_prune(_model("cnn8"), bad)
    with pytest.raises(ValueError, match=r"ratio.*\[0, 1\)"):
        structured_prune(_model("cnn8"), bad)
    with pytest.raises(ValueError, match=r"per_layer_ratios\['conv2'\].*\[0, 1\)"):
        structured_prune(_model("cnn8"), per_layer_ratios={"conv2": bad})


def test_channel_importance_by_hand():
    w = torch.tensor([[[[1.0, -2.0]]], [[[3.0, 0.0]]], [[[-1.0, 1.0]]]])  # 3 filters
    assert torch.allclose(channel_importance(w, "l1"), torch.tensor([3.0, 3.0, 2.0]))
    assert torch.allclose(channel_importance(w, "l2"), torch.tensor([5**0.5, 3.0, 2**0.5]))


@pytest.mark.parametrize("name", ["cnn28", "cnn32", "cnn8"])
@pytest.mark.parametrize("norm", ["l1", "l2"])
def test_structured_shrinks_and_keeps_first_layer_channels_exactly(name, norm):
    model = _model(name)
    pruned = structured_prune(model, 0.5, norm=norm)
    assert type(pruned) is type(model)
    assert count_parameters(pruned) < 0.4 * count_parameters(model)
    assert count_parameters(pruned) == pruned_param_count(
        model, dict.fromkeys(layer_chain(model).layers, 0.5)
    )
    x = _x(name)
    keep = keep_plan(model, 0.5, norm=norm)
    with torch.no_grad():
        assert torch.equal(model.conv1(x)[:, keep["conv1"]], pruned.conv1(x))
        assert pruned(x).shape == model(x).shape


@pytest.mark.parametrize("name", ["cnn28", "cnn32", "cnn8"])
def test_single_layer_pruning_keeps_its_channels_exactly(name):
    model = _model(name)
    layers = layer_chain(model).layers
    last_conv = layers[-2]
    pruned = structured_prune(model, per_layer_ratios={last_conv: 0.5})
    keep = keep_plan(model, per_layer_ratios={last_conv: 0.5})[last_conv]
    x = _x(name)

    def conv_stack(m: nn.Module) -> torch.Tensor:
        h = x
        for layer in layers[:-1]:
            h = getattr(m, layer)(h)
            if layer != last_conv:
                h = m.pool(torch.relu(h))
        return h

    with torch.no_grad():
        assert torch.equal(conv_stack(model)[:, keep], conv_stack(pruned))


@pytest.mark.parametrize("name", ["cnn28", "cnn32", "cnn8"])
def test_pruned_model_equals_original_with_pruned_channels_zeroed(name):
    """Checks the next-layer slicing, including fc1's flattened (C, H, W) columns."""
    model = _model(name)
    ratios = {n: 0.5 for n in layer_chain(model).layers}
    pruned = structured_prune(model, per_layer_ratios=ratios)
    masked = copy.deepcopy(model)
    plan = keep_plan(model, per_layer_ratios=ratios)
    with torch.no_grad():
        for layer, keep in plan.items():
            drop = torch.ones(
                getattr(masked, layer).out_channels if layer != "fc1" else masked.fc1.out_features
            )
            drop[keep] = 0
            getattr(masked, layer).weight[drop.bool()] = 0
            getattr(masked, layer).bias[drop.bool()] = 0
        x = _x(name)
        assert torch.allclose(pruned(x), masked(x), atol=1e-5)
        assert torch.allclose(pruned.features(x), masked.features(x)[:, plan["fc1"]], atol=1e-5)


def test_resize_like_rebuilds_a_pruned_model_from_its_state_dict():
    model = _model("cnn32")
    pruned = structured_prune(model, per_layer_ratios={"conv1": 0.25, "conv3": 0.5, "fc1": 0.75})
    rebuilt = resize_like(build_model("cnn32", 10, 0.25), pruned.state_dict())
    x = _x("cnn32")
    with torch.no_grad():
        assert torch.equal(rebuilt.eval()(x), pruned(x))


def test_structured_rejects_lstm_clearly():
    with pytest.raises(ValueError, match="CharLSTM"):
        structured_prune(build_model("lstm", 20, 0.25), 0.5)


def test_auto_prune_meets_param_and_byte_budgets():
    model = _model("cnn8", width=0.5)
    x, y = _x("cnn8", 64), torch.randint(0, 10, (64,))
    budget = count_parameters(model) // 2
    result = auto_prune(model, x, y, max_params=budget)
    assert result.params <= budget
    assert result.params == count_parameters(result.model)
    assert set(result.ratios) == set(layer_chain(model).layers)
    assert all(set(curve) >= {0.0, 0.5} for curve in result.sensitivity.values())
    by_bytes = auto_prune(model, x, y, max_bytes=budget, bytes_per_param=4.0)
    assert by_bytes.params * 4 <= budget
    with pytest.raises(ValueError, match="budget"):
        auto_prune(model, x, y, max_params=10)


def test_fine_tune_keeps_sparsity_and_learns():
    model = _model("cnn8")
    magnitude_prune(model, 0.5)
    x, y = _x("cnn8", 32), torch.randint(0, 10, (32,))
    loss_before = float(nn.functional.cross_entropy(model(x), y).detach())
    fine_tune(model, [(x, y)] * 20, epochs=1, lr=0.05)
    assert sparsity(model) >= 0.5 - 1e-3
    assert float(nn.functional.cross_entropy(model(x), y).detach()) < loss_before
