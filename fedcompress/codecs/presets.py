"""Named compression presets: the best measured pipeline pairs, picked by name (`--compression strong`).

A user should not need to know the stages to get a good trade-off, so the pairs that measured best are named
here, once. No imports: `fedcompress.config` reads this table while it declares and resolves its keys.
A preset is only a spelling: it resolves to `uplink` / `downlink` before a config is hashed, so a run named by
a preset and the same run with the pipelines written out are the same run.

Where the choices come from (FEMNIST by writer, target 80%, seed 0; docs/results/femnist_uplink/report.md,
and MNIST Dirichlet(0.3), docs/results/mnist_dirichlet/report.md): see the README's preset table. The issue-13
study (`fedcompress/studies/specs/femnist_ratios.toml`, `mnist_ratios.toml`) re-measures them over three seeds
against the best tuned fp32 baseline.
"""

from __future__ import annotations

from dataclasses import dataclass

CUSTOM = "custom"  # no preset: `uplink` / `downlink` are used as given


@dataclass(frozen=True)
class Preset:
    """One named pair of pipelines and why it was chosen."""

    uplink: str
    downlink: str
    why: str


PRESETS: dict[str, Preset] = {
    "none": Preset("identity", "identity", "plain fp32 both ways: the baseline every ratio is against"),
    "light": Preset(
        "uniform(8)",
        "identity",
        "8-bit uplink: 4.0x fewer uplink bytes, reaches the target in the same round",
    ),
    "balanced": Preset(
        "topk(0.01) > ef > uniform(4) > entropy",
        "topk(0.1) > uniform(4) > entropy",
        "FEMNIST 80%, FedAvgM: 149x fewer uplink bytes, 42x fewer in total than the best fp32 baseline",
    ),
    "strong": Preset(
        "topk(0.003) > ef > ternary > entropy",
        "topk(0.05) > uniform(4) > entropy",
        "FEMNIST 80%, FedAdam 0.03: 252x fewer uplink bytes, 45x fewer in total than the best fp32 baseline",
    ),
    "sparsest": Preset(
        "topk(0.002) > ef > ternary > entropy",
        "topk(0.05) > uniform(4) > entropy",
        "FEMNIST 80%, FedAdam 0.03, three seeds: 325x fewer uplink bytes (282-368x), 46x fewer in total than the"
        " best fp32 baseline",
    ),
}

NAMES: tuple[str, ...] = (CUSTOM, *PRESETS)


def preset(name: str) -> Preset | None:
    """The preset called `name`; None for `custom` (callers check the name against NAMES first)."""
    return None if name == CUSTOM else PRESETS[name]


def preset_of(uplink: str, downlink: str) -> str | None:
    """The name of the preset these pipelines spell, if any (reports label rows with it)."""
    for name, p in PRESETS.items():
        if (p.uplink, p.downlink) == (uplink, downlink):
            return name
    return None
