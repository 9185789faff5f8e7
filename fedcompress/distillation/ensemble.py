"""Server-side ensemble distillation (FedDF-style): the student learns the averaged logits of the client
models on a proxy set the server holds, optionally also their features (hints) and their relations (RKD)."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from fedcompress.distillation.losses import HintLoss, kd_loss, rkd_loss
from fedcompress.errors import ConfigError


def _features_and_logits(model: nn.Module, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """One forward pass giving the penultimate activation and the logits (head: fc2 or fc)."""
    feats = model.features(x)
    head = getattr(model, "fc2", None)
    if head is None:
        head = getattr(model, "fc", None)
    if head is None:
        raise ConfigError(
            f"{type(model).__name__} has features() but no fc2/fc head for feature distillation"
        )
    return feats, head(feats)


@torch.no_grad()
def teacher_outputs(
    teachers: Sequence[nn.Module], x: torch.Tensor, batch_size: int, with_features: bool
) -> tuple[torch.Tensor, list[torch.Tensor]]:
    """Mean logits over teachers for all of `x`, and each teacher's features (only if asked)."""
    logits_sum: torch.Tensor | None = None
    feats: list[torch.Tensor] = []
    for teacher in teachers:
        teacher.eval()
        chunks_l, chunks_f = [], []
        for xb in torch.split(x, batch_size):
            if with_features:
                f, lg = _features_and_logits(teacher, xb)
                chunks_f.append(f)
            else:
                lg = teacher(xb)
            chunks_l.append(lg)
        lg_all = torch.cat(chunks_l)
        logits_sum = lg_all if logits_sum is None else logits_sum + lg_all
        if with_features:
            feats.append(torch.cat(chunks_f))
    assert logits_sum is not None
    return logits_sum / len(teachers), feats


def distill(
    student: nn.Module,
    teachers: Sequence[nn.Module] | nn.Module,
    proxy_x: torch.Tensor,
    *,
    epochs: int = 1,
    batch_size: int = 64,
    lr: float = 1e-3,
    tau: float = 4.0,
    alpha: float = 0.5,
    labels: torch.Tensor | None = None,
    feature_weight: float = 0.0,
    relation_weight: float = 0.0,
    seed: int = 0,
) -> nn.Module:
    """Train `student` in place on `proxy_x` to match the teachers' averaged logits; returns it in eval mode.

    loss = kd_loss(student, mean teacher logits, labels, tau, alpha)
           + feature_weight * mean over teachers of HintLoss (one learnable adapter per teacher)
           + relation_weight * mean over teachers of RKD (distance + 2 * angle) on penultimate features.
    Without `labels` the KD term is pure soft-label distillation. Shuffling and adapter initialisation use
    `seed` (the global RNG is left as it was), so two calls with the same inputs give the same student.
    """
    teacher_list = [teachers] if isinstance(teachers, nn.Module) else list(teachers)
    if not teacher_list:
        raise ConfigError("distill needs at least one teacher")
    if epochs < 0 or batch_size <= 0 or lr <= 0:
        raise ConfigError(f"need epochs >= 0, batch_size > 0, lr > 0; got {epochs}, {batch_size}, {lr}")
    if feature_weight < 0 or relation_weight < 0:
        raise ConfigError("feature_weight and relation_weight must be >= 0")
    if labels is not None and len(labels) != len(proxy_x):
        raise ConfigError(f"labels ({len(labels)}) and proxy_x ({len(proxy_x)}) differ in length")
    with_features = feature_weight > 0 or relation_weight > 0
    t_logits, t_feats = teacher_outputs(teacher_list, proxy_x, batch_size, with_features)

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        hints = nn.ModuleList()
        if feature_weight > 0:
            with torch.no_grad():
                s_dim = student.features(proxy_x[:1]).shape[1]
            hints.extend(HintLoss(s_dim, f.shape[1]).to(proxy_x.device) for f in t_feats)
        gen = torch.Generator().manual_seed(seed)
        opt = torch.optim.Adam([*student.parameters(), *hints.parameters()], lr=lr)
        for _ in range(epochs):
            student.train()
            for idx in torch.randperm(len(proxy_x), generator=gen).split(batch_size):
                xb = proxy_x[idx]
                if with_features:
                    s_feat, s_logits = _features_and_logits(student, xb)
                else:
                    s_logits = student(xb)
                loss = kd_loss(s_logits, t_logits[idx], None if labels is None else labels[idx], tau, alpha)
                if feature_weight > 0:
                    hint = sum(h(s_feat, f[idx]) for h, f in zip(hints, t_feats, strict=True))
                    loss = loss + feature_weight * hint / len(hints)
                if relation_weight > 0 and len(idx) > 2:
                    rel = sum(rkd_loss(s_feat, f[idx]) for f in t_feats)
                    loss = loss + relation_weight * rel / len(t_feats)
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
    return student.eval()
