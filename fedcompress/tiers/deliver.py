"""Tier models made on the server from the global model (the "deliver" and "nested+deliver" modes).

The first time, the delivery pipeline's importance-based structured pruning (Taylor scores on the proxy set,
`fedcompress.tiers.delivery`) cuts the global model to the tier's width, a smaller dense model of the same family;
every time, the tier model is distilled from the global model on the server's unlabeled proxy set (later refreshes
start from the tier's current model, which holds what its clients learned since). Time is measured,
because the server pays it every refresh.
"""

from __future__ import annotations

import time
from collections import OrderedDict
from typing import Any

import numpy as np
import torch
from torch import nn

from fedcompress.distillation import distill
from fedcompress.models import MODELS
from fedcompress.tiers.feddf import load_arrays, model_arrays

Arrays = OrderedDict[str, np.ndarray]


def make_tier_arrays(
    teacher: nn.Module,
    student: nn.Module,
    width: float,
    proxy_x: torch.Tensor,
    *,
    start: Arrays | None,
    seed: int,
    options: dict[str, Any],
) -> tuple[Arrays, float]:
    """(the tier model's weights, seconds spent). `start`: weights to distill into (e.g. the tier's current
    model, which holds what its clients learned); None prunes the teacher to `width` by filter importance."""
    t0 = time.perf_counter()
    if start is None:
        from fedcompress.tiers.delivery import channel_scores, shrink, width_channels

        family = next(name for name, cls in MODELS.items() if type(teacher) is cls)
        channels = width_channels(teacher, family, width)
        start = model_arrays(shrink(teacher, channels, channel_scores(teacher, proxy_x)))
    load_arrays(student, start)
    opts = dict(options)
    epochs = int(opts.pop("epochs", 1))
    if epochs > 0:
        distill(student, teacher.eval(), proxy_x, epochs=epochs, alpha=1.0, seed=seed, **opts)
    return model_arrays(student), time.perf_counter() - t0
