"""Partitioning: sizes, disjointness, determinism, natural ids, caching and argument errors."""

from __future__ import annotations

import numpy as np
import pytest

from fedcompress.data import load_dataset, partition, split_train_val
from fedcompress.data.base import FederatedDataset
from fedcompress.errors import ConfigError


def _check_cover(parts: list[np.ndarray], n_train: int, exact: bool = True) -> None:
    flat = np.concatenate(parts)
    assert flat.dtype == np.int64
    assert len(np.unique(flat)) == len(flat), "partitions overlap"
    assert flat.min() >= 0 and flat.max() < n_train
    if exact:
        assert len(flat) == n_train


@pytest.mark.parametrize("scheme", ["iid", "dirichlet", "shards"])
def test_schemes_cover_digits(scheme: str) -> None:
    ds = load_dataset("digits")
    parts = partition(ds, scheme, 10, seed=0)
    assert len(parts) == 10
    assert all(len(p) > 0 for p in parts)
    _check_cover(parts, len(ds.y_train))


def test_iid_sizes_balanced() -> None:
    ds = load_dataset("digits")
    sizes = [len(p) for p in partition(ds, "iid", 7, seed=3)]
    assert max(sizes) - min(sizes) <= 1


def test_dirichlet_deterministic_by_seed() -> None:
    ds = load_dataset("digits")
    a = partition(ds, "dirichlet", 8, alpha=0.3, seed=1)
    b = partition(ds, "dirichlet", 8, alpha=0.3, seed=1)
    c = partition(ds, "dirichlet", 8, alpha=0.3, seed=2)
    assert all(np.array_equal(x, y) for x, y in zip(a, b, strict=True))
    assert not all(np.array_equal(x, y) for x, y in zip(a, c, strict=True))


def test_dirichlet_small_alpha_is_skewed() -> None:
    ds = load_dataset("digits")
    skewed = partition(ds, "dirichlet", 5, alpha=0.05, seed=0)
    flat = partition(ds, "dirichlet", 5, alpha=100.0, seed=0)

    def max_class_share(parts: list[np.ndarray]) -> float:
        return float(np.mean([np.bincount(ds.y_train[p], minlength=10).max() / len(p) for p in parts]))

    assert max_class_share(skewed) > max_class_share(flat) + 0.2


def test_shards_classes_per_client() -> None:
    ds = load_dataset("digits")
    parts = partition(ds, "shards", 10, shards_per_client=2, seed=0)
    assert all(len(np.unique(ds.y_train[p])) == 2 for p in parts)
    assert len(np.unique(np.concatenate([ds.y_train[p] for p in parts]))) == 10


def test_partition_cache_hit_is_fast_and_equal(tmp_path, monkeypatch) -> None:
    import time

    monkeypatch.setenv("FEDCOMPRESS_CACHE_DIR", str(tmp_path))
    ds = load_dataset("digits")
    first = partition(ds, "dirichlet", 6, seed=5)
    assert list((tmp_path / "partitions").glob("*.npz"))
    t = time.perf_counter()
    second = partition(ds, "dirichlet", 6, seed=5)
    assert time.perf_counter() - t < 0.1
    assert all(np.array_equal(x, y) for x, y in zip(first, second, strict=True))


def _toy_grouped(n_groups: int = 5) -> FederatedDataset:
    rng = np.random.default_rng(0)
    groups = np.repeat(np.arange(n_groups), np.arange(3, 3 + n_groups))
    y = rng.integers(0, 3, len(groups))
    x = np.zeros((len(y), 1, 2, 2), np.float32)
    return FederatedDataset("toy", x, y, x[:2], y[:2], 3, groups.astype(np.int64), "cnn8")


def test_natural_partitions_are_groups() -> None:
    ds = _toy_grouped()
    parts = partition(ds, "natural", 5)
    for gid, p in enumerate(parts):
        assert np.array_equal(p, np.flatnonzero(ds.groups_train == gid))
    first3 = partition(ds, "natural", 3)
    assert all(np.array_equal(a, b) for a, b in zip(first3, parts[:3], strict=True))
    with pytest.raises(ConfigError, match="natural ids"):
        partition(ds, "natural", 6)


def test_natural_requires_ids() -> None:
    with pytest.raises(ConfigError, match="no natural ids"):
        partition(load_dataset("digits"), "natural", 10)


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"scheme": "zipf", "num_partitions": 3}, "unknown partitioning scheme"),
        ({"scheme": "iid", "num_partitions": 0}, "positive"),
        ({"scheme": "iid", "num_partitions": 10**6}, "exceeds"),
        ({"scheme": "dirichlet", "num_partitions": 3, "alpha": 0.0}, "alpha"),
        ({"scheme": "shards", "num_partitions": 3, "shards_per_client": 11}, "shards_per_client"),
    ],
)
def test_bad_arguments(kwargs: dict, match: str) -> None:
    with pytest.raises(ConfigError, match=match):
        partition(load_dataset("digits"), **kwargs)


def test_split_train_val() -> None:
    idx = np.arange(100, 200)
    tr, va = split_train_val(idx, 0.1, seed=0)
    assert len(va) == 10 and len(tr) == 90
    assert len(np.intersect1d(tr, va)) == 0 and np.array_equal(np.union1d(tr, va), idx)
    tr2, va2 = split_train_val(idx, 0.1, seed=0)
    assert np.array_equal(va, va2)
    one_tr, one_va = split_train_val(np.array([7]), 0.5, seed=0)
    assert list(one_tr) == [7] and len(one_va) == 0
    with pytest.raises(ConfigError):
        split_train_val(idx, 1.0, seed=0)
