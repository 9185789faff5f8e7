"""Device profiles, tier tables and mixes, tier assignment and fitting."""

import pytest
import torch

from fedcompress.devices import (
    DeviceProfile,
    NoTierFits,
    Tier,
    artefact_size_fn,
    assign_tiers,
    build_tier_artefact,
    fit_tier,
    load_tiers_toml,
    parse_mix,
    parse_tiers,
)
from fedcompress.models import build_model

TOML = """
[tiers.tiny]
width = 0.5
prune_ratio = 0.5
quant = "kmeans4"
[tiers.mid]
width = 0.75
quant = "int8"
[tiers.full]
[mix]
tiny = 0.3
mid = 0.4
full = 0.3
"""


@pytest.mark.parametrize(
    ("field", "kwargs"),
    [
        ("memory_bytes", dict(memory_bytes=-1)),
        ("memory_bytes", dict(memory_bytes=None)),
        ("downlink_bytes_per_s", dict(downlink_bytes_per_s=0)),
        ("uplink_bytes_per_s", dict(uplink_bytes_per_s=float("nan"))),
        ("latency_ms", dict(latency_ms=-5)),
    ],
)
def test_profile_validation_names_field_and_range(field, kwargs):
    base = dict(name="phone", memory_bytes=10, downlink_bytes_per_s=1.0, uplink_bytes_per_s=1.0, latency_ms=0)
    with pytest.raises(ValueError, match=rf"{field}.*\[?\(?0, inf\)"):
        DeviceProfile(**{**base, **kwargs})


def test_profile_from_node_config_units_and_errors():
    p = DeviceProfile.from_node_config(
        {"device-name": "pi", "device-memory-mb": 64, "device-downlink-mbps": 10, "device-latency-ms": 20}
    )
    assert p.memory_bytes == 64 * 2**20
    assert p.downlink_bytes_per_s == 1.25e6 and p.uplink_bytes_per_s == 1.25e6
    assert p.download_seconds(1_250_000) == pytest.approx(1.02)
    with pytest.raises(ValueError, match="device-memory-mb"):
        DeviceProfile.from_node_config({"device-downlink-mbps": 10})
    with pytest.raises(ValueError, match="device-downlink-mbps"):
        DeviceProfile.from_node_config({"device-memory-mb": 64, "device-downlink-mbps": -1})
    with pytest.raises(ValueError, match="device-memroy-mb"):
        DeviceProfile.from_node_config({"device-memroy-mb": 64, "device-downlink-mbps": 1})


def test_tiers_and_mix_from_toml():
    tiers, mix = load_tiers_toml(TOML)
    assert tiers["tiny"] == Tier("tiny", 0.5, 0.5, "kmeans4")
    assert tiers["full"] == Tier("full")
    assert mix == {"tiny": 0.3, "mid": 0.4, "full": 0.3}
    with pytest.raises(ValueError, match=r"prune_ratio.*\[0, 1\)"):
        parse_tiers({"bad": {"prune_ratio": 1.0}})
    with pytest.raises(ValueError, match="quant"):
        parse_tiers({"bad": {"quant": "int3"}})
    with pytest.raises(ValueError, match="sum to 1"):
        parse_mix({"a": 0.5, "b": 0.6})
    with pytest.raises(ValueError, match="unknown tier"):
        parse_mix({"huge": 1.0}, tiers)


def test_assign_tiers_exact_counts_and_seeded():
    mix = {"tiny": 0.3, "mid": 0.4, "full": 0.3}
    a = assign_tiers(10, mix, seed=1)
    assert sorted(a) == sorted(["tiny"] * 3 + ["mid"] * 4 + ["full"] * 3)
    assert a == assign_tiers(10, mix, seed=1)
    assert a != assign_tiers(10, mix, seed=2)
    assert len(assign_tiers(7, mix, seed=0)) == 7


def test_fit_tier_picks_biggest_that_fits_and_explains_failure():
    tiers = {"tiny": Tier("tiny", 0.25), "mid": Tier("mid", 0.5), "full": Tier("full")}
    sizes = {"tiny": 1_000, "mid": 10_000, "full": 100_000}
    size_fn = lambda t: sizes[t.name]  # noqa: E731
    roomy = DeviceProfile("pc", 10**6, 1e6, 1e6)
    assert fit_tier(roomy, tiers, size_fn).name == "full"
    small_mem = DeviceProfile("watch", 20_000, 1e6, 1e6)
    assert fit_tier(small_mem, tiers, size_fn).name == "mid"
    slow = DeviceProfile("iot", 10**6, 100.0, 100.0)  # 100 B/s, 60 s budget -> 6,000 B
    assert fit_tier(slow, tiers, size_fn).name == "tiny"
    with pytest.raises(NoTierFits, match=r"memory budget 500 B.*smallest tier 'tiny' is 1000 B"):
        fit_tier(DeviceProfile("dust", 500, 1e6, 1e6), tiers, size_fn)


def test_tier_artefacts_shrink_and_feed_fit_tier():
    torch.manual_seed(0)
    model = build_model("cnn8", 10, 1.0).eval()
    calib = torch.randn(16, 1, 8, 8)
    tiers, _ = load_tiers_toml(TOML)
    sizes = {n: build_tier_artefact(model, t, calib).nbytes for n, t in tiers.items()}
    assert sizes["tiny"] < sizes["mid"] < sizes["full"]
    art = build_tier_artefact(model, tiers["mid"], calib)
    assert art.model(calib).shape == (16, 10)
    device = DeviceProfile("m", sizes["mid"] + 1, 1e6, 1e6)
    assert fit_tier(device, tiers, artefact_size_fn(model, calib)).name == "mid"
