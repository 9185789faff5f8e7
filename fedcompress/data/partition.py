"""Split a dataset's train set among clients with flwr-datasets partitioners, and cache the indices on disk.

flwr-datasets (and the ``datasets``/pyarrow stack under it) costs ~3 s to import, so it is imported only when
a partition is not yet in the cache; a cached partition loads with numpy alone in milliseconds.

Schemes (all return sorted int64 indices into ``ds.x_train`` / ``ds.y_train``, one array per partition):

- ``natural``: one partition per natural id (writer, speaking character), via ``NaturalIdPartitioner``.
  Partition ``i`` is natural id ``i`` (ids are ``0..G-1`` in the dataset's own deterministic order, which is
  what ``NaturalIdPartitioner`` sorts by). ``num_partitions < G`` keeps the first ``num_partitions`` ids;
  ``num_partitions > G`` is an error.
- ``iid``: ``IidPartitioner`` over a seeded permutation (the partitioner itself cuts contiguous chunks and has
  no seed), so sizes differ by at most one.
- ``dirichlet``: ``DirichletPartitioner`` over the label with concentration ``alpha`` (smaller = more skewed);
  every partition gets at least ``min(10, n // (2 * num_partitions))`` examples (resampled otherwise).
- ``shards``: label-skew "pathological" split, ``PathologicalPartitioner`` with ``shards_per_client`` classes
  per partition (``first-deterministic``: partition ``i`` always holds class ``i mod C``, so every class is
  used when ``num_partitions >= C``); a class's examples are divided evenly among the partitions holding it.
"""

from __future__ import annotations

import hashlib
import os
import tempfile
from pathlib import Path

import numpy as np

from fedcompress.data.base import FederatedDataset, cache_dir
from fedcompress.errors import ConfigError

SCHEMES = ("natural", "iid", "dirichlet", "shards")
_CACHE_VERSION = "1"


def partition(
    ds: FederatedDataset,
    scheme: str,
    num_partitions: int,
    *,
    alpha: float = 0.3,
    shards_per_client: int = 2,
    seed: int = 0,
) -> list[np.ndarray]:
    """Indices of ``ds``'s train set for each of ``num_partitions`` clients (see module doc for schemes)."""
    params = _validate(ds, scheme, num_partitions, alpha, shards_per_client)
    path = _cache_path(ds, scheme, num_partitions, params, seed)
    cached = _read_cache(path)
    if cached is not None:
        return cached
    parts = _compute(ds, scheme, num_partitions, alpha, shards_per_client, seed)
    parts = [np.sort(np.asarray(p, dtype=np.int64)) for p in parts]
    _write_cache(path, parts)
    return parts


def split_train_val(indices: np.ndarray, val_fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Seeded split of one client's indices into (train, val), both sorted.

    ``round(val_fraction * n)`` go to validation, but at least one example stays in train when ``n >= 1``.
    """
    if not 0.0 <= val_fraction < 1.0:
        raise ConfigError(f"val_fraction must be in [0, 1), got {val_fraction}")
    indices = np.asarray(indices, dtype=np.int64)
    n = len(indices)
    n_val = min(int(round(val_fraction * n)), max(n - 1, 0))
    perm = np.random.default_rng(seed).permutation(n)
    return np.sort(indices[perm[n_val:]]), np.sort(indices[perm[:n_val]])


def _validate(ds: FederatedDataset, scheme: str, n: int, alpha: float, shards: int) -> str:
    """Check arguments early (clear ConfigErrors, not partitioner internals); return the cache-key part."""
    if scheme not in SCHEMES:
        raise ConfigError(f"unknown partitioning scheme '{scheme}': expected one of {', '.join(SCHEMES)}")
    if not isinstance(n, int | np.integer) or n < 1:
        raise ConfigError(f"num_partitions must be a positive integer, got {n!r}")
    if n > len(ds.y_train):
        raise ConfigError(f"num_partitions={n} exceeds the {len(ds.y_train)} train examples of '{ds.name}'")
    if scheme == "natural":
        if ds.groups_train is None:
            raise ConfigError(
                f"dataset '{ds.name}' has no natural ids (writers/characters): use partitioning "
                f"'iid', 'dirichlet' or 'shards', or a dataset with natural ids (femnist, shakespeare)"
            )
        if n > ds.num_groups:
            raise ConfigError(f"num_partitions={n} exceeds the {ds.num_groups} natural ids of '{ds.name}'")
        return ""
    if scheme == "dirichlet":
        if not alpha > 0:
            raise ConfigError(f"dirichlet alpha must be > 0, got {alpha}")
        return f"a{float(alpha)!r}"
    if scheme == "shards":
        if not 1 <= shards <= ds.num_classes:
            raise ConfigError(
                f"shards_per_client must be in 1..{ds.num_classes} for '{ds.name}', got {shards}"
            )
        return f"k{int(shards)}"
    return ""


def _cache_path(ds: FederatedDataset, scheme: str, n: int, params: str, seed: int) -> Path:
    key = "-".join([_CACHE_VERSION, ds.name, ds.fingerprint(), scheme, str(n), params, str(seed)])
    digest = hashlib.sha1(key.encode()).hexdigest()[:20]
    safe_name = "".join(c if c.isalnum() else "_" for c in ds.name)
    return cache_dir() / "partitions" / f"{safe_name}-{scheme}-{n}-{digest}.npz"


def _read_cache(path: Path) -> list[np.ndarray] | None:
    """Cached partitions, or None when absent or unreadable (a corrupt cache is recomputed, not fatal)."""
    if not path.exists():
        return None
    try:
        with np.load(path) as z:
            flat, offsets = z["indices"], z["offsets"]
    except (OSError, ValueError, KeyError):
        return None
    return [p.copy() for p in np.split(flat, offsets[1:-1])]


def _write_cache(path: Path, parts: list[np.ndarray]) -> None:
    """Atomic write (temp file + rename) so concurrent simulation workers never read half a file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    offsets = np.concatenate([[0], np.cumsum([len(p) for p in parts])]).astype(np.int64)
    flat = np.concatenate(parts) if parts else np.zeros(0, np.int64)
    fd, tmp = tempfile.mkstemp(dir=path.parent, suffix=".tmp.npz")
    try:
        with os.fdopen(fd, "wb") as f:
            np.savez(f, indices=flat, offsets=offsets)
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
    except OSError:
        Path(tmp).unlink(missing_ok=True)


def _compute(
    ds: FederatedDataset, scheme: str, n: int, alpha: float, shards: int, seed: int
) -> list[np.ndarray]:
    """Run the flwr-datasets partitioner over an in-memory table of (label, idx[, group])."""
    from datasets import Dataset  # lazy: ~3 s import
    from flwr_datasets.partitioner import (
        DirichletPartitioner,
        IidPartitioner,
        NaturalIdPartitioner,
        PathologicalPartitioner,
    )

    y = ds.y_train
    idx = np.arange(len(y), dtype=np.int64)
    if scheme == "iid":
        idx = np.random.default_rng(seed).permutation(len(y)).astype(np.int64)
    columns: dict[str, np.ndarray] = {"label": y[idx], "idx": idx}
    if scheme == "natural":
        assert ds.groups_train is not None
        columns["group"] = ds.groups_train[idx]
    table = Dataset.from_dict(columns)

    if scheme == "iid":
        partitioner = IidPartitioner(num_partitions=n)
    elif scheme == "natural":
        partitioner = NaturalIdPartitioner(partition_by="group")
    elif scheme == "dirichlet":
        min_size = max(1, min(10, len(y) // (2 * n)))
        partitioner = DirichletPartitioner(
            num_partitions=n, partition_by="label", alpha=alpha, min_partition_size=min_size, seed=seed
        )
    else:
        partitioner = PathologicalPartitioner(
            num_partitions=n,
            partition_by="label",
            num_classes_per_partition=shards,
            class_assignment_mode="first-deterministic",
            seed=seed,
        )
    partitioner.dataset = table
    try:
        parts = [partitioner.load_partition(i).with_format("arrow")["idx"].to_numpy() for i in range(n)]
        if scheme == "natural":
            # partition ids follow sorted natural ids; check the mapping rather than trust it silently
            mapping = partitioner.partition_id_to_natural_id
            if [int(mapping[i]) for i in range(n)] != list(range(n)):
                raise ConfigError(f"'{ds.name}': natural ids are not dense 0..G-1")
        return parts
    except ValueError as exc:  # e.g. Dirichlet could not reach the minimum partition size in 10 tries
        if isinstance(exc, ConfigError):
            raise
        raise ConfigError(f"partitioning '{ds.name}' with scheme '{scheme}' into {n} failed: {exc}") from exc
