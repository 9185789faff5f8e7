"""make_device_model: a real smaller model of the family, distilled, stored and measured from its artefact."""

from __future__ import annotations

import os

import pytest
import torch

from fedcompress.errors import ConfigError
from fedcompress.models import build_model
from fedcompress.pruning import prune_to_plan
from fedcompress.tiers.delivery import (
    Recipe,
    channel_scores,
    load_artefact,
    make_device_model,
    shrink,
    teacher_channels,
)


def _acc(model, x, y):
    with torch.no_grad():
        return float((model(x).argmax(1) == y).float().mean())


def test_width_gives_the_family_shape_and_a_working_int8_artefact(teacher, digits, tmp_path):
    x, _, xt, yt = digits
    dm = make_device_model(teacher, family="cnn8", width=0.5, proxy_x=x[:400], epochs=3, val=(xt, yt))
    assert dm.recipe.channels == teacher_channels(build_model("cnn8", 10, 0.5))
    assert dm.recipe.storage == "int8" and dm.latency_ms > 0
    path = dm.save(tmp_path / "model.bin")
    assert os.path.getsize(path) == dm.nbytes == len(dm.artefact)
    assert [p.name for p in tmp_path.iterdir()] == ["model.bin"]  # no temporary left behind
    loaded = load_artefact(path, Recipe.from_dict(dm.recipe.to_dict()), xt)
    assert torch.equal(loaded(xt[:50]).argmax(1), dm.model(xt[:50]).argmax(1))
    assert dm.accuracy == pytest.approx(_acc(dm.model, xt, yt))
    assert dm.accuracy > _acc(teacher, xt, yt) - 0.10


def test_distillation_recovers_what_pruning_lost(teacher, digits):
    x, _, xt, yt = digits
    kw = dict(family="cnn8", width=0.25, proxy_x=x[:600], storage="fp32", val=(xt, yt))
    raw = make_device_model(teacher, epochs=0, **kw)
    taught = make_device_model(teacher, epochs=4, **kw)
    assert taught.accuracy > raw.accuracy + 0.05


@pytest.mark.parametrize("importance", ["l1", "taylor"])
def test_keeping_the_important_channels_beats_keeping_the_unimportant(teacher, digits, importance):
    x, _, xt, yt = digits
    kept = teacher_channels(build_model("cnn8", 10, 0.5))
    scores = channel_scores(teacher, x[:400], importance)
    best = shrink(teacher, kept, scores)
    worst = shrink(teacher, kept, {n: -s for n, s in scores.items()})
    assert _acc(best, xt, yt) > _acc(worst, xt, yt) + 0.1


def test_kept_channels_compute_what_they_computed(teacher, digits):
    x = digits[0][:8]
    plan = {"conv1": torch.tensor([3, 0, 7]), "conv2": torch.arange(10), "fc1": torch.tensor([1, 5])}
    small = prune_to_plan(teacher, plan)
    assert small.conv1.out_channels == 3 and small.conv2.in_channels == 3 and small.fc2.in_features == 2
    assert torch.allclose(small.conv1(x), teacher.conv1(x)[:, [0, 3, 7]])


def test_no_pruning_keeps_the_teacher_and_stores_smaller_with_fewer_bits(teacher, digits):
    x, _, xt, yt = digits
    full = make_device_model(teacher, family="cnn8", width=1.0, proxy_x=x[:200], storage="fp32", epochs=3)
    assert full.recipe.epochs == 0  # nothing pruned: no distillation
    assert torch.equal(full.model(xt[:20]), teacher(xt[:20]))
    k4 = make_device_model(teacher, family="cnn8", width=1.0, proxy_x=x[:200], storage="kmeans4", epochs=0)
    i8 = make_device_model(teacher, family="cnn8", width=1.0, proxy_x=x[:200], storage="int8", epochs=0)
    assert k4.nbytes < i8.nbytes < full.nbytes


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"storage": "int4"}, "storage must be"),
        ({"width": 0.0}, "width must be a number in (0, 1]"),
        ({"width": 1.5}, "width must be a number in (0, 1]"),
        ({"family": "cnn28"}, "not the 'cnn28' family"),
        ({"family": "resnet"}, "unknown model family"),
        ({"epochs": -1}, "epochs must be an integer >= 0"),
        (
            {"channels": {"conv1": 99, "conv2": 4, "fc1": 4}},
            "channels['conv1'] must be an integer in [1, 16]",
        ),
    ],
)
def test_bad_arguments_stop_with_the_value_and_what_is_accepted(teacher, digits, kwargs, message):
    args = {"family": "cnn8", "width": 0.5, "proxy_x": digits[0][:100], **kwargs}
    with pytest.raises(ConfigError) as err:
        make_device_model(teacher, **args)
    assert message in str(err.value)


def test_a_proxy_set_too_small_is_refused(teacher, digits):
    with pytest.raises(ConfigError, match="proxy set has 5 examples; at least 32"):
        make_device_model(teacher, family="cnn8", width=0.5, proxy_x=digits[0][:5])


def test_qat_and_feature_relation_losses_give_a_working_int8_student(teacher, digits):
    x, _, xt, yt = digits
    kw = dict(family="cnn8", width=0.5, proxy_x=x[:256], epochs=1, val=(xt, yt))
    ptq = make_device_model(teacher, storage="int8", **kw)
    qat = make_device_model(teacher, storage="qat8", feature_weight=1.0, relation_weight=1.0, **kw)
    assert qat.recipe.feature_weight == 1.0 and qat.recipe.storage == "qat8"
    assert qat.nbytes == ptq.nbytes  # the same int8 artefact layout, trained differently
    assert qat.accuracy > 0.5
