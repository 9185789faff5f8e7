"""The run config: one declaration; the checkout's pyproject agrees with it, and bad values are named."""

import argparse
import tomllib
from dataclasses import fields
from pathlib import Path

import pytest

from fedcompress.cli import build_parser
from fedcompress.config import RunConfig, check_keys, choices_of, defaults, parse_overrides
from fedcompress.errors import ConfigError

ROOT = Path(__file__).resolve().parents[1]


def test_checkout_pyproject_defaults_are_the_declaration() -> None:
    with open(ROOT / "pyproject.toml", "rb") as f:
        in_pyproject = tomllib.load(f)["tool"]["flwr"]["app"]["config"]
    assert in_pyproject == defaults()
    assert RunConfig.from_run_config(defaults()) == RunConfig()


def test_every_key_has_help_and_a_simulate_flag() -> None:
    parser = build_parser()
    sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    dests = {a.dest: a for a in sub.choices["simulate"]._actions}
    for f in fields(RunConfig):
        assert f.metadata["help"], f.name
        assert f.name in dests, f"no flag for {f.name}"
        assert f.metadata["help"] in dests[f.name].help
        if choices_of(f):
            assert tuple(dests[f.name].choices) == choices_of(f)


def test_keys_that_are_not_ours_are_ignored_unless_strict() -> None:
    assert RunConfig.from_run_config({"fraction-evaluate": 0.5, "seed": 3}).seed == 3
    with pytest.raises(ConfigError, match="unknown config key 'fraction-evaluate'"):
        RunConfig.from_run_config({"fraction-evaluate": 0.5}, strict=True)
    with pytest.raises(ConfigError, match="num-rounds"):
        check_keys({"num-rounds": 3})


@pytest.mark.parametrize(
    ("override", "match"),
    [
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
        RunConfig.from_run_config({**defaults(), **override})


def test_overrides_parse_like_flwr_run_config() -> None:
    assert parse_overrides('num-server-rounds=3 uplink="fp16" width=0.5') == {
        "num-server-rounds": 3,
        "uplink": "fp16",
        "width": 0.5,
    }
    assert RunConfig().digest() == RunConfig().digest() != RunConfig(seed=1).digest()


def test_keys_added_later_keep_earlier_runs_digest_while_at_their_default() -> None:
    """A run made before `tier-nested-weight` existed resumes under the same digest; a non-default value counts."""
    import hashlib
    import json

    from fedcompress.config import OMIT_AT_DEFAULT

    body = {
        k: v
        for k, v in RunConfig().as_run_config().items()
        if k not in ("run-dir", "resume-run", *OMIT_AT_DEFAULT)
    }
    body.update({"tier-training": "nested", "distill-lr": 0.001})  # the defaults these runs were made with
    before = hashlib.sha256(json.dumps(body, sort_keys=True).encode()).hexdigest()[:12]
    assert RunConfig().digest() == before
    assert RunConfig(tier_nested_weight=0.5).digest() != before


def test_tier_only_defaults_change_no_digest_of_a_run_without_tiers() -> None:
    """Changing the default tier mode kept every untiered run's digest and study cell id; with tiers it counts."""
    from fedcompress.studies.spec import config_hash

    plain = RunConfig()
    assert plain.tier_training == "nested-distill"
    assert plain.digest() == RunConfig(tier_training="nested", distill_lr=0.001).digest()
    assert config_hash({}) == config_hash({"tier-training": "heterofl", "distill-lr": 0.01})
    tiered = {"tiers": "full=1.0 tiny=0.25", "tier-mix": "full=0.5 tiny=0.5"}
    assert (
        RunConfig.from_run_config({**defaults(), **tiered}).digest()
        != RunConfig.from_run_config({**defaults(), **tiered, "tier-training": "nested"}).digest()
    )
    assert config_hash(tiered) != config_hash({**tiered, "distill-lr": 0.001})
