"""The model each tier receives, built from the global model, and its real size in bytes.

width < 1 -> structured pruning keeping that fraction of channels (ranked by L1 norm);
prune_ratio -> global unstructured magnitude sparsity on top; quant -> how it is serialized:
"fp32" a `torch.save` state dict (load with `pruning.resize_like`), "int8" the quantized state dict
(`quantization.load_int8`), "kmeansB" a `quantization.SharedModel` artefact.
"""

from __future__ import annotations

import copy
import io
from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import nn

from fedcompress.devices.tiers import Tier, quant_bits
from fedcompress.errors import ConfigError
from fedcompress.pruning import magnitude_prune, structured_prune
from fedcompress.quantization import int8_bytes, kmeans_share, quantize_int8


@dataclass
class TierArtefact:
    tier: Tier
    model: nn.Module  # what the device runs (float with shared weights, or int8)
    data: bytes  # what the device downloads and stores

    @property
    def nbytes(self) -> int:
        return len(self.data)


def build_tier_artefact(
    global_model: nn.Module, tier: Tier, calibration: torch.Tensor | None = None
) -> TierArtefact:
    """Shrink `global_model` (untouched) as `tier` says; int8 needs `calibration` inputs."""
    model = (
        structured_prune(global_model, 1.0 - tier.width) if tier.width < 1 else copy.deepcopy(global_model)
    )
    if tier.prune_ratio > 0:
        magnitude_prune(model, tier.prune_ratio)
    model.eval()
    if tier.quant == "fp32":
        buf = _save(model.state_dict())
        return TierArtefact(tier, model, buf)
    if tier.quant == "int8":
        if calibration is None:
            raise ConfigError(f"tier {tier.name!r} uses int8 and needs calibration inputs")
        qmodel = quantize_int8(model, calibration)
        return TierArtefact(tier, qmodel, int8_bytes(qmodel))
    shared = kmeans_share(model, quant_bits(tier.quant))
    return TierArtefact(tier, model, shared.to_bytes())


def _save(obj: object) -> bytes:
    buf = io.BytesIO()
    torch.save(obj, buf)
    return buf.getvalue()


def artefact_size_fn(
    global_model: nn.Module, calibration: torch.Tensor | None = None
) -> Callable[[Tier], int]:
    """A cached `model_size_fn` for `fit_tier` that measures each tier's real artefact."""
    cache: dict[Tier, int] = {}

    def size(tier: Tier) -> int:
        if tier not in cache:
            cache[tier] = build_tier_artefact(global_model, tier, calibration).nbytes
        return cache[tier]

    return size
