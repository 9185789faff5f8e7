"""The run config: pyproject's defaults and the typed view agree, and bad values are named."""

import pytest

from fedcompress.config import RunConfig, parse_overrides, pyproject_defaults
from fedcompress.errors import ConfigError


def test_pyproject_defaults_match_the_typed_config() -> None:
    defaults = pyproject_defaults()
    assert set(defaults) == set(RunConfig.keys())
    assert RunConfig.from_run_config(defaults) == RunConfig()


@pytest.mark.parametrize(
    ("override", "match"),
    [
        ({"num-rounds": 3}, "unknown config key 'num-rounds'"),
        ({"seed": "zero"}, "'seed' = 'zero': expected int"),
        ({"learning-rate": -1.0}, "'learning-rate'"),
        ({"clients-per-round": 50}, "<= num-partitions"),
        ({"strategy": "fedbest"}, "'strategy'"),
        ({"partitioning": "random"}, "'partitioning'"),
        ({"uplink": "topk(2.0) > ef"}, "'uplink'"),
        ({"downlink": "uniform(40)"}, "'downlink'"),
        ({"tiers": "full=1.0", "tier-mix": "full=0.7"}, "sum to 1"),
        ({"tier-training": "magic"}, "'tier-training'"),
    ],
)
def test_bad_values_are_named(override: dict, match: str) -> None:
    with pytest.raises(ConfigError, match=match):
        RunConfig.from_run_config({**pyproject_defaults(), **override})


def test_overrides_parse_like_flwr_run_config() -> None:
    assert parse_overrides('num-server-rounds=3 uplink="fp16" width=0.5') == {
        "num-server-rounds": 3,
        "uplink": "fp16",
        "width": 0.5,
    }
    assert RunConfig().digest() == RunConfig().digest() != RunConfig(seed=1).digest()
