"""Device tiers on the server: how one federation trains a model for each device tier (below), and delivering
a model made for each device's budget (`fedcompress.tiers.delivery`).

Modes (run-config `tier-training`):
- "nested": every client trains its tier's width AND every narrower tier's width as the leading blocks of one
  global model (FjORD / slimmable style); aggregated per coordinate. Every client's data reaches every tier.
- "nested-distill" (the default, best measured on FEMNIST: docs/results/femnist_tiers.md): nested, then on the
  server the widest tier's own channels (the coordinates no narrower tier holds, trained by the widest tier's
  clients alone) learn the ensemble of all tiers on the proxy set; the narrower tiers' coordinates are left as the
  clients made them.
- "distill": per-tier averaging, then FedDF ensemble distillation across tiers on the server's proxy set.
- "separate": each tier averaged over its own clients only.
- "heterofl": width slicing, each client trains only its own width (HeteroFL).
- "deliver": the widest tier's clients train the global model; every `tier-refresh-every` rounds the server
  makes each smaller tier's model from it (structured pruning + distillation on the proxy set); the tier's
  clients fine-tune it in between.
"""

from fedcompress.tiers.codecs import parse_tier_codecs, tier_codecs
from fedcompress.tiers.heterofl import heterofl_aggregate, slice_like, split_clients
from fedcompress.tiers.nested import NESTED_KEY, train_nested

MODES = ("nested", "nested-distill", "distill", "separate", "heterofl", "deliver")
NEEDS_PROXY = ("nested-distill", "distill", "deliver")
SLICED = ("nested", "nested-distill", "heterofl")
NESTED = ("nested", "nested-distill")  # clients also train every narrower width

__all__ = [
    "MODES", "NESTED", "NEEDS_PROXY", "NESTED_KEY", "SLICED", "heterofl_aggregate", "parse_tier_codecs", "slice_like",
    "split_clients", "tier_codecs", "train_nested",
]  # fmt: skip
