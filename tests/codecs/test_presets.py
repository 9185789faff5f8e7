"""Compression presets: each resolves to valid pipelines before hashing, and a preset beside a pipeline is an error."""

from __future__ import annotations

import pytest

import fedcompress.launch.simulation as simulation
from fedcompress.cli import build_parser, main, run_config_overrides
from fedcompress.codecs import Pipeline
from fedcompress.codecs.presets import CUSTOM, PRESETS, preset_of
from fedcompress.config import DEFAULT_UPLINK, RunConfig, defaults
from fedcompress.errors import ConfigError
from fedcompress.launch.simulation import resolve_config
from fedcompress.studies.spec import config_hash


@pytest.mark.parametrize("name", list(PRESETS))
def test_every_preset_resolves_to_valid_pipelines(name: str) -> None:
    p = PRESETS[name]
    for spec in (p.uplink, p.downlink):
        if spec != "identity":
            Pipeline.parse(spec)
    cfg = resolve_config({"compression": name})
    assert (cfg.uplink, cfg.downlink, cfg.compression) == (p.uplink, p.downlink, CUSTOM)
    assert preset_of(cfg.uplink, cfg.downlink) == name


def test_two_spellings_of_a_run_are_the_same_run() -> None:
    strong = PRESETS["strong"]
    named = {"compression": "strong", "seed": 3}
    written = {"uplink": strong.uplink, "downlink": strong.downlink, "seed": 3}
    assert resolve_config(named) == resolve_config(written)
    assert resolve_config(named).digest() == resolve_config(written).digest()
    assert config_hash(named) == config_hash(written)  # the study runner's cell id
    other = {"compression": "balanced", "seed": 3}
    assert resolve_config(other).digest() != resolve_config(named).digest()


def test_a_resolved_config_resolves_to_itself() -> None:
    """A run dir stores the resolved config; reading it back (resume, reports) must not change it."""
    cfg = resolve_config({"compression": "light"})
    assert RunConfig.from_run_config(cfg.as_run_config()) == cfg


def test_presets_leave_existing_hashes_alone() -> None:
    """The resolved config has no `compression` key: run dirs, checkpoints and study cell ids made before
    presets existed keep their digests (a new key in as_run_config would change every one of them)."""
    assert "compression" not in RunConfig().as_run_config()
    assert "compression" not in resolve_config({"compression": "strong"}).as_run_config()


@pytest.mark.parametrize("key", ["uplink", "downlink"])
def test_a_preset_and_a_pipeline_together_is_an_error_naming_both(key: str) -> None:
    for value in ("identity", defaults()[key]):  # even the default value, when typed, is ambiguous
        with pytest.raises(ConfigError, match=rf"'compression' = 'strong'.*{key!r} = "):
            resolve_config({"compression": "strong", key: value})
    assert resolve_config({"compression": CUSTOM, key: "identity"}).compression == CUSTOM


def test_a_resolved_config_with_a_foreign_pipeline_is_an_error() -> None:
    """Flower hands the app defaults + overrides: a pipeline that is neither the default nor the preset's."""
    with pytest.raises(ConfigError, match=r"'compression' = 'light'.*'uplink' = 'fp16'"):
        RunConfig.from_run_config({**defaults(), "compression": "light", "uplink": "fp16"})
    cfg = RunConfig.from_run_config({**defaults(), "compression": "light", "uplink": DEFAULT_UPLINK})
    assert cfg.uplink == PRESETS["light"].uplink


def test_unknown_preset_names_the_choices() -> None:
    with pytest.raises(ConfigError, match=r"'compression' = 'max'.*'strong'"):
        resolve_config({"compression": "max"})


def test_simulate_flag(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    """`fedcompress simulate --compression strong` reaches simulate() resolved; with --uplink it stops first."""
    args = build_parser().parse_args(["simulate", "--compression", "strong"])
    assert run_config_overrides(args) == {"compression": "strong"}
    seen: list[RunConfig] = []

    def fake_simulate(overrides: dict, **_: object) -> dict:
        seen.append(resolve_config(overrides))  # what the real simulate() does first
        raise ConfigError("stub: stop before Flower starts")

    monkeypatch.setattr(simulation, "simulate", fake_simulate)
    assert main(["simulate", "--compression", "strong"]) == 2
    assert seen[-1].uplink == PRESETS["strong"].uplink
    assert main(["simulate", "--compression", "strong", "--uplink", "identity"]) == 2
    assert "'compression' = 'strong'" in capsys.readouterr().err and len(seen) == 1


def test_compare_fp32_overrides_a_preset() -> None:
    """`simulate --compression strong --compare-fp32`: the reference run replaces the preset, it does not clash."""
    from fedcompress.launch.compare import FP32

    cfg = resolve_config({"compression": "strong", **FP32})
    assert (cfg.uplink, cfg.downlink) == ("identity", "identity")
