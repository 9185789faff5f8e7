"""Device selection, the device data cache, and the launcher's GPU resources."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from fedcompress.accel import DeviceCache, device_for, resolve_device, valid_device
from fedcompress.config import RunConfig
from fedcompress.errors import ConfigError
from fedcompress.launch.simulation import check_devices, federation_config
from fedcompress.ondevice import DeviceEvaluator, data_on
from fedcompress.training import evaluate, train

HAS_CUDA = torch.cuda.is_available()


def test_auto_picks_cuda_only_when_present() -> None:
    assert resolve_device("auto").type == ("cuda" if HAS_CUDA else "cpu")
    assert resolve_device("cpu") == torch.device("cpu")
    assert device_for({}) == torch.device("cpu")  # an app that did not opt in keeps the numpy path


@pytest.mark.skipif(HAS_CUDA, reason="this machine has CUDA: the error cannot happen here")
@pytest.mark.parametrize("text", ["cuda", "cuda:0", "cuda:3"])
def test_asking_for_cuda_without_it_is_a_config_error(text: str) -> None:
    with pytest.raises(ConfigError, match=rf"config key 'device' = '{text}': CUDA is not available here"):
        resolve_device(text)
    with pytest.raises(ConfigError, match="'device'"):
        check_devices(RunConfig(device=text))


@pytest.mark.skipif(not HAS_CUDA, reason="no CUDA device here")
def test_cuda_index_beyond_the_visible_gpus() -> None:
    assert resolve_device("cuda").type == "cuda"
    with pytest.raises(ConfigError, match="GPU"):
        resolve_device(f"cuda:{torch.cuda.device_count()}")


@pytest.mark.parametrize("text", ["gpu", "CUDA", "cuda:", "cuda:x", "cpu:0", "", "mps"])
def test_bad_device_names_are_named(text: str) -> None:
    assert not valid_device(text)
    with pytest.raises(ConfigError, match="config key 'device'"):
        RunConfig.from_run_config({"device": text})
    with pytest.raises(ConfigError, match="config key 'device'"):
        resolve_device(text)


def test_gpu_share_reaches_ray_and_is_checked() -> None:
    assert federation_config(4, 1.0) == "num-supernodes=4 client-resources-num-cpus=1"
    assert federation_config(4, 2, 0.25).endswith(
        "client-resources-num-cpus=2 client-resources-num-gpus=0.25"
    )
    with pytest.raises(ConfigError, match="'client-num-gpus'"):
        RunConfig.from_run_config({"client-num-gpus": -1})
    if not HAS_CUDA:
        with pytest.raises(ConfigError, match="'client-num-gpus' = 0.5: no GPU is visible"):
            check_devices(RunConfig(client_num_gpus=0.5))
    check_devices(RunConfig(device="cpu"))


def test_cache_keeps_recent_tensors_within_its_budget() -> None:
    cache = DeviceCache(max_bytes=3 * 400)
    calls: list[int] = []

    def make(i: int):
        return lambda: (calls.append(i), (torch.zeros(100),))[1]  # 400 bytes

    for i in range(3):
        cache.get(i, make(i))
    cache.get(0, make(0))  # hit: 0 becomes the most recent
    cache.get(3, make(3))  # evicts 1, the least recent
    cache.get(0, make(0))
    cache.get(1, make(1))
    assert calls == [0, 1, 2, 3, 1] and len(cache) == 3
    big = cache.get("big", lambda: (torch.zeros(1000),))  # over budget: returned, not kept
    assert big[0].numel() == 1000 and "big" not in cache._items


def test_cpu_data_is_shared_not_copied_and_training_matches_numpy_input() -> None:
    rng = np.random.default_rng(0)
    x = rng.normal(size=(40, 1, 8, 8)).astype(np.float32)
    y = rng.integers(0, 3, 40).astype(np.int64)
    xt, yt = data_on(torch.device("cpu"), "k", lambda: (x, y))
    assert xt.data_ptr() == x.ctypes.data

    def model() -> torch.nn.Module:
        torch.manual_seed(0)
        return torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(64, 3))

    a, b = model(), model()
    la = train(a, x, y, epochs=2, lr=0.1, batch_size=8, seed=1)
    lb = train(b, xt, yt, epochs=2, lr=0.1, batch_size=8, seed=1)
    assert la == lb
    for p, q in zip(a.parameters(), b.parameters(), strict=True):
        assert torch.equal(p, q)
    assert DeviceEvaluator(torch.device("cpu"))(a, x, y, "k") == evaluate(b, x, y)


def test_a_fraction_of_a_cpu_per_client_becomes_more_logical_cpus(monkeypatch: pytest.MonkeyPatch) -> None:
    """Flower 1.42 takes whole CPUs per client; 0.2 of a core each means five clients in flight per core."""
    import os

    monkeypatch.delenv("RAY_ADDRESS", raising=False)
    monkeypatch.setattr(os, "cpu_count", lambda: 2)
    assert federation_config(10, 0.2) == "num-supernodes=10 client-resources-num-cpus=1 init-args-num-cpus=10"
    with pytest.raises(ConfigError, match="whole number of CPUs"):
        federation_config(10, 1.5)
    with pytest.raises(ConfigError, match="must be > 0"):
        federation_config(10, 0)
    monkeypatch.setenv("RAY_ADDRESS", "127.0.0.1:6379")
    with pytest.raises(ConfigError, match="RAY_ADDRESS"):
        federation_config(10, 0.5)
