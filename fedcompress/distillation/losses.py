"""Distillation losses: response (soft labels), feature (hints) and relation (RKD).

The seed article's MXNet sketch weights the soft term by alpha but forgets the tau^2 factor; without it the
soft-target gradients shrink as 1/tau^2 and alpha stops meaning what it says (Hinton et al. 2015).
"""

from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F

from fedcompress.errors import ConfigError


def kd_loss(
    student_logits: torch.Tensor,
    teacher_logits: torch.Tensor,
    labels: torch.Tensor | None = None,
    tau: float = 4.0,
    alpha: float = 0.5,
) -> torch.Tensor:
    """alpha * tau^2 * KL(softmax(t/tau) || softmax(s/tau)) + (1 - alpha) * CE(s, labels).

    KL is averaged over the batch. Without labels (unlabeled proxy data) the loss is the soft term alone,
    tau^2 * KL, whatever alpha is.
    """
    if tau <= 0:
        raise ConfigError(f"tau must be > 0, got {tau}")
    if not 0.0 <= alpha <= 1.0:
        raise ConfigError(f"alpha must be in [0, 1], got {alpha}")
    log_p_s = F.log_softmax(student_logits / tau, dim=1)
    log_p_t = F.log_softmax(teacher_logits.detach() / tau, dim=1)
    soft = F.kl_div(log_p_s, log_p_t, reduction="batchmean", log_target=True) * tau**2
    if labels is None:
        return soft
    return alpha * soft + (1.0 - alpha) * F.cross_entropy(student_logits, labels)


class HintLoss(nn.Module):
    """FitNets-style hint: a learnable Linear adapter maps student features to the teacher's width, then MSE.

    The adapter's parameters must be trained with the student (pass `hint.parameters()` to the optimizer).
    """

    def __init__(self, student_dim: int, teacher_dim: int) -> None:
        super().__init__()
        self.adapter = nn.Linear(student_dim, teacher_dim)

    def forward(self, student_features: torch.Tensor, teacher_features: torch.Tensor) -> torch.Tensor:
        return F.mse_loss(self.adapter(student_features), teacher_features.detach())


def pairwise_distances(e: torch.Tensor, eps: float = 1e-12) -> torch.Tensor:
    """Euclidean distance matrix with an exact zero diagonal (clamped before sqrt: finite gradients)."""
    sq = e.pow(2).sum(1)
    d = (sq[:, None] + sq[None, :] - 2 * e @ e.t()).clamp(min=eps).sqrt()
    return d * (1 - torch.eye(len(e), dtype=d.dtype, device=d.device))


def rkd_distance_loss(student: torch.Tensor, teacher: torch.Tensor) -> torch.Tensor:
    """Distance-wise RKD (Park et al. 2019): smooth L1 between pairwise distances, each normalised by the
    mean of its non-zero distances, so student and teacher may live at different scales and widths."""
    with torch.no_grad():
        t = pairwise_distances(teacher.detach())
        t = t / t[t > 0].mean()
    s = pairwise_distances(student)
    s = s / s[s > 0].mean()
    return F.smooth_l1_loss(s, t)


def _angles(e: torch.Tensor) -> torch.Tensor:
    """cos of the angle at vertex j between e_i and e_k, all (i, j, k): unit(e_i - e_j) . unit(e_k - e_j)."""
    diff = F.normalize(e[None, :, :] - e[:, None, :], p=2, dim=2)  # diff[j, i] = unit(e_i - e_j)
    return torch.bmm(diff, diff.transpose(1, 2)).reshape(-1)


def rkd_angle_loss(student: torch.Tensor, teacher: torch.Tensor) -> torch.Tensor:
    """Angle-wise RKD: smooth L1 between the cosines of all triplet angles of the two embeddings."""
    with torch.no_grad():
        t = _angles(teacher.detach())
    return F.smooth_l1_loss(_angles(student), t)


def rkd_loss(
    student: torch.Tensor, teacher: torch.Tensor, distance_weight: float = 1.0, angle_weight: float = 2.0
) -> torch.Tensor:
    """Both RKD terms with the paper's default weights (1 and 2)."""
    return distance_weight * rkd_distance_loss(student, teacher) + angle_weight * rkd_angle_loss(
        student, teacher
    )
