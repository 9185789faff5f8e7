"""Knowledge distillation: response, feature and relation losses, and server-side ensemble distillation."""

from fedcompress.distillation.ensemble import distill, teacher_outputs
from fedcompress.distillation.losses import (
    HintLoss,
    kd_loss,
    pairwise_distances,
    rkd_angle_loss,
    rkd_distance_loss,
    rkd_loss,
)

__all__ = [
    "HintLoss",
    "distill",
    "kd_loss",
    "pairwise_distances",
    "rkd_angle_loss",
    "rkd_distance_loss",
    "rkd_loss",
    "teacher_outputs",
]
