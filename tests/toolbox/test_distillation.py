"""Distillation losses against hand / numpy computations, and server-side ensemble distillation."""

import math

import numpy as np
import pytest
import torch
from torch import nn

from fedcompress.distillation import HintLoss, distill, kd_loss, rkd_angle_loss, rkd_distance_loss
from fedcompress.models import build_model


def _np_softmax(z: np.ndarray) -> np.ndarray:
    e = np.exp(z - z.max(axis=1, keepdims=True))
    return e / e.sum(axis=1, keepdims=True)


def test_kd_loss_matches_numpy_formula():
    s = np.array([[1.0, 2.0, 0.0], [0.5, -1.0, 3.0]])
    t = np.array([[2.0, 1.0, 0.0], [0.0, 0.0, 1.0]])
    labels = np.array([1, 2])
    tau, alpha = 2.0, 0.25
    ps, pt = _np_softmax(s / tau), _np_softmax(t / tau)
    kl = (pt * (np.log(pt) - np.log(ps))).sum(axis=1).mean()
    ce = -np.log(_np_softmax(s)[np.arange(2), labels]).mean()
    expected = alpha * tau**2 * kl + (1 - alpha) * ce
    got = kd_loss(torch.tensor(s), torch.tensor(t), torch.tensor(labels), tau=tau, alpha=alpha)
    assert float(got) == pytest.approx(expected, rel=1e-9)
    # no labels: the soft term alone, whatever alpha says
    soft = kd_loss(torch.tensor(s), torch.tensor(t), None, tau=tau, alpha=alpha)
    assert float(soft) == pytest.approx(tau**2 * kl, rel=1e-9)


def test_kd_loss_is_zero_for_identical_logits_and_rejects_bad_tau():
    z = torch.randn(4, 5)
    assert float(kd_loss(z, z.clone(), None, tau=3.0)) == pytest.approx(0.0, abs=1e-6)
    with pytest.raises(ValueError, match="tau"):
        kd_loss(z, z, None, tau=0.0)
    with pytest.raises(ValueError, match="alpha"):
        kd_loss(z, z, None, alpha=1.5)


def test_hint_loss_by_hand():
    hint = HintLoss(2, 3)
    with torch.no_grad():
        hint.adapter.weight.copy_(torch.tensor([[1.0, 0.0], [0.0, 1.0], [1.0, 1.0]]))
        hint.adapter.bias.zero_()
    # adapter([1, 2]) = [1, 2, 3]; teacher [0, 2, 5] -> squared errors 1, 0, 4 -> mean 5/3
    loss = hint(torch.tensor([[1.0, 2.0]]), torch.tensor([[0.0, 2.0, 5.0]]))
    assert float(loss.detach()) == pytest.approx(5 / 3)
    loss.backward()
    assert hint.adapter.weight.grad is not None


def test_rkd_distance_by_hand():
    # student: right triangle 3-4-5 -> mean distance 4 -> 0.75, 1, 1.25
    # teacher: collinear 1, 2, 1 -> mean 4/3
    # -> 0.75, 1.5, 0.75 ; |diffs| 0, 0.5, 0.5 -> smooth L1 0, 0.125, 0.125 ; symmetric 3x3 mean = 0.5 / 9
    student = torch.tensor([[0.0, 0.0], [3.0, 0.0], [0.0, 4.0]])
    teacher = torch.tensor([[0.0, 0.0, 0.0], [1.0, 0.0, 0.0], [2.0, 0.0, 0.0]])
    assert float(rkd_distance_loss(student, teacher)) == pytest.approx(1 / 18, rel=1e-5)
    assert float(rkd_distance_loss(student * 7.0, student)) == pytest.approx(0.0, abs=1e-6)


def _np_angle_loss(s: np.ndarray, t: np.ndarray) -> float:
    def cosines(e: np.ndarray) -> np.ndarray:
        n = len(e)
        out = np.zeros((n, n, n))
        for j in range(n):
            for i in range(n):
                for k in range(n):
                    a, b = e[i] - e[j], e[k] - e[j]
                    na, nb = np.linalg.norm(a), np.linalg.norm(b)
                    out[j, i, k] = 0.0 if na == 0 or nb == 0 else a @ b / (na * nb)
        return out.ravel()

    d = np.abs(cosines(s) - cosines(t))
    return float(np.where(d < 1, 0.5 * d**2, d - 0.5).mean())


def test_rkd_angle_matches_triplet_loop():
    rng = np.random.default_rng(0)
    s, t = rng.normal(size=(5, 3)), rng.normal(size=(5, 4))
    got = rkd_angle_loss(torch.tensor(s), torch.tensor(t))
    assert float(got) == pytest.approx(_np_angle_loss(s, t), rel=1e-6)
    # right angle at the origin: cos = 0 for (i=1, j=0, k=2)
    tri = np.array([[0.0, 0.0], [3.0, 0.0], [0.0, 4.0]])
    assert float(rkd_angle_loss(torch.tensor(tri), torch.tensor(tri * 2))) == pytest.approx(0.0, abs=1e-7)


def _soft_gap(student: nn.Module, teachers: list[nn.Module], x: torch.Tensor) -> float:
    with torch.no_grad():
        t = torch.stack([m.eval()(x) for m in teachers]).mean(0)
        return float(kd_loss(student.eval()(x), t, None, tau=2.0))


def test_distill_ensemble_reduces_gap_and_is_seeded():
    torch.manual_seed(0)
    teachers = [build_model("cnn8", 10, 0.5), build_model("cnn8", 10, 0.25)]
    x = torch.randn(96, 1, 8, 8)
    torch.manual_seed(1)
    student_a = build_model("cnn8", 10, 0.25)
    student_b = build_model("cnn8", 10, 0.25)
    student_b.load_state_dict(student_a.state_dict())
    before = _soft_gap(student_a, teachers, x)
    kwargs = dict(epochs=5, batch_size=32, lr=1e-2, tau=2.0, alpha=0.5, seed=3)
    distill(student_a, teachers, x, **kwargs)
    distill(student_b, teachers, x, **kwargs)
    assert _soft_gap(student_a, teachers, x) < 0.5 * before
    for pa, pb in zip(student_a.parameters(), student_b.parameters(), strict=True):
        assert torch.equal(pa, pb)


def test_distill_with_labels_features_and_relations_runs():
    torch.manual_seed(0)
    teachers = [build_model("cnn8", 10, 0.5), build_model("cnn8", 10, 1.0)]  # different feature widths
    student = build_model("cnn8", 10, 0.25)
    x, y = torch.randn(40, 1, 8, 8), torch.randint(0, 10, (40,))
    out = distill(
        student, teachers, x, epochs=1, batch_size=16, labels=y, feature_weight=1.0, relation_weight=1.0
    )
    assert out is student and not out.training
    assert all(math.isfinite(float(p.detach().sum())) for p in out.parameters())
    with pytest.raises(ValueError, match="labels"):
        distill(student, teachers, x, labels=y[:5])
