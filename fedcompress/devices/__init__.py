"""Device profiles, tiers, budgets and the model each tier receives."""

from fedcompress.devices.artefact import TierArtefact, artefact_size_fn, build_tier_artefact
from fedcompress.devices.fit import NoTierFits, fit_tier
from fedcompress.devices.profile import NODE_KEYS, DeviceProfile
from fedcompress.devices.tiers import Tier, assign_tiers, load_tiers_toml, parse_mix, parse_tiers, quant_bits

__all__ = [
    "NODE_KEYS",
    "DeviceProfile",
    "NoTierFits",
    "Tier",
    "TierArtefact",
    "artefact_size_fn",
    "assign_tiers",
    "build_tier_artefact",
    "fit_tier",
    "load_tiers_toml",
    "parse_mix",
    "parse_tiers",
    "quant_bits",
]
