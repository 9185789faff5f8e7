"""Name -> loader registry and the cached ``load_dataset`` entry point."""

from __future__ import annotations

import functools
from collections.abc import Callable
from pathlib import Path

from fedcompress.data.base import FederatedDataset, resolve_data_dir
from fedcompress.data.digits import load_digits_dataset
from fedcompress.data.idx import load_fashion_mnist, load_idx, load_mnist
from fedcompress.data.images import load_cifar10, load_imagefolder
from fedcompress.data.leaf import load_femnist, load_femnist_leaf_json
from fedcompress.data.text import load_shakespeare
from fedcompress.errors import ConfigError

Loader = Callable[[Path], FederatedDataset]

DATASETS: dict[str, Loader] = {
    "digits": load_digits_dataset,
    "mnist": load_mnist,
    "fashion-mnist": load_fashion_mnist,
    "idx": load_idx,
    "femnist": load_femnist,
    "femnist-leaf-json": load_femnist_leaf_json,
    "cifar10": load_cifar10,
    "imagefolder": load_imagefolder,
    "shakespeare": load_shakespeare,
    # every character with a train window: 1,038 of 1,089 (the other 51 speak fewer than 82 characters in all)
    "shakespeare-all": functools.partial(load_shakespeare, min_windows=2),
}
HUB_PREFIX = "hub:"


def load_dataset(name: str, data_dir: str | Path | None = None) -> FederatedDataset:
    """Load dataset ``name`` from ``data_dir`` (default: ``default_data_dir()``), cached per process.

    ``hub:<hf-name>`` loads a Hugging Face dataset through flwr-datasets (needs network on first use).
    The result is shared between callers, so its arrays are read-only (index or copy them to modify).
    """
    if not isinstance(name, str) or not (name in DATASETS or name.startswith(HUB_PREFIX)):
        valid = ", ".join(sorted(DATASETS)) + f", {HUB_PREFIX}<hf-name>"
        raise ConfigError(f"unknown dataset '{name}': expected one of {valid}")
    return _load_cached(name, str(resolve_data_dir(data_dir)))


@functools.lru_cache(maxsize=8)
def _load_cached(name: str, data_dir: str) -> FederatedDataset:
    if name.startswith(HUB_PREFIX):
        from fedcompress.data.hub import load_hub_dataset

        ds = load_hub_dataset(name[len(HUB_PREFIX) :])
    else:
        ds = DATASETS[name](Path(data_dir))
    _freeze(ds)
    return ds


def _freeze(ds: FederatedDataset) -> None:
    """Mark the shared cached arrays read-only: an in-place edit by one client would silently leak into all.

    Index them (``x_train[idx]`` copies) or ``.copy()`` before handing them to code that writes in place.
    """
    for arr in (ds.x_train, ds.y_train, ds.x_test, ds.y_test, ds.groups_train):
        if arr is not None:
            arr.flags.writeable = False


load_dataset.cache_clear = _load_cached.cache_clear  # type: ignore[attr-defined]  # for tests / notebooks
