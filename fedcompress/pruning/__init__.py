"""Model pruning: unstructured magnitude, structured (really smaller models) and importance-based auto."""

from fedcompress.pruning.auto import AutoPruneResult, allocate_ratios, auto_prune, layer_sensitivity
from fedcompress.pruning.finetune import fine_tune
from fedcompress.pruning.structured import (
    channel_importance,
    keep_plan,
    layer_chain,
    prune_to_plan,
    pruned_param_count,
    resize_like,
    structured_prune,
)
from fedcompress.pruning.unstructured import magnitude_prune, prunable_weights, sparsity

__all__ = [
    "AutoPruneResult",
    "allocate_ratios",
    "auto_prune",
    "channel_importance",
    "fine_tune",
    "keep_plan",
    "layer_chain",
    "layer_sensitivity",
    "magnitude_prune",
    "prunable_weights",
    "prune_to_plan",
    "pruned_param_count",
    "resize_like",
    "sparsity",
    "structured_prune",
]
