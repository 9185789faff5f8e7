"""Bad tier settings stop before any work, naming the value and what is accepted."""

from __future__ import annotations

import pytest
import torch
from flwr.serverapp.strategy import FedAvg

from fedcompress.config import RunConfig, defaults
from fedcompress.devices import Tier
from fedcompress.errors import ConfigError
from fedcompress.flower.tiered import MIN_PROXY, TieredStrategy
from fedcompress.models import build_model
from fedcompress.tiers import parse_tier_codecs, tier_codecs

TIERS = {"full": Tier("full", 1.0), "tiny": Tier("tiny", 0.5, quant="int8")}


def _strategy(**kw: object) -> TieredStrategy:
    args = {
        "tiers": TIERS, "tier_of": {0: "full", 1: "tiny"}, "partitions": {0: 10, 1: 11},
        "models": {t: build_model("cnn8", 10, x.width) for t, x in TIERS.items()},
        "make_inner": FedAvg, "clients_per_round": 2, "seed": 0, **kw,
    }  # fmt: skip
    return TieredStrategy(**args)  # type: ignore[arg-type]


def test_proxy_set_too_small_to_distill_from() -> None:
    for mode in ("distill", "deliver"):
        with pytest.raises(
            ConfigError, match=rf"'{mode}'.*holds 10 images; need >= {MIN_PROXY}.*distill-proxy-fraction"
        ):
            _strategy(mode=mode, proxy_x=torch.zeros(10, 1, 8, 8))
    _strategy(mode="nested")  # needs no proxy set


def test_unknown_mode_lists_what_is_accepted() -> None:
    with pytest.raises(ConfigError, match=r"'fjord'.*'nested', 'nested-distill', 'distill'"):
        _strategy(mode="fjord")
    with pytest.raises(ConfigError, match="tier-training"):
        RunConfig.from_run_config({**defaults(), "tier-training": "fjord"})


def test_tier_codecs_parse_and_name_bad_entries() -> None:
    text = "tiny: uniform(8) > entropy; full: topk(0.05) > ef > uniform(4) > entropy"
    assert tier_codecs(text, "identity", "tier-uplink", ["full", "mid", "tiny"]) == {
        "full": "topk(0.05) > ef > uniform(4) > entropy", "mid": "identity", "tiny": "uniform(8) > entropy",
    }  # fmt: skip
    with pytest.raises(ConfigError, match="unknown tier 'huge'"):
        parse_tier_codecs("huge: uniform(8)", "tier-uplink", ["full"])
    with pytest.raises(ConfigError, match=r"'tier-downlink'.*'tiny uniform\(8\)' is not 'tier: pipeline'"):
        parse_tier_codecs("tiny uniform(8)", "tier-downlink", ["tiny"])
    with pytest.raises(ConfigError, match="bad pipeline 'topk"):
        parse_tier_codecs("tiny: topk(7) > nope", "tier-uplink", ["tiny"])
    with pytest.raises(ConfigError, match="named twice"):
        parse_tier_codecs("tiny: fp16; tiny: fp16", "tier-uplink", ["tiny"])
    base = {**defaults(), "tiers": "full=1.0 tiny=0.5", "tier-mix": "full=0.5 tiny=0.5"}
    with pytest.raises(ConfigError, match="unknown tier 'mid'"):
        RunConfig.from_run_config({**base, "tier-uplink": "mid: fp16"})
    with pytest.raises(ConfigError, match="need 'tiers'"):
        RunConfig.from_run_config({**defaults(), "tier-uplink": "mid: fp16"})
