"""FEMNIST by writer: the converted ``.npz`` (fast default) and the original LEAF JSON shards.

LEAF stores pixels with 1.0 = white background; both loaders invert to MNIST's convention (ink high,
background 0) before standardising, so a model or augmentation written for MNIST sees the same polarity.
``groups_train`` is the writer index; the central test set holds the held-out samples of the same writers.
"""

from __future__ import annotations

import json
import re
import tarfile
import zipfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np

from fedcompress.data.base import (
    FederatedDataset,
    as_labels,
    dense_ids,
    file_key,
    load_or_build_arrays,
    normalise_images,
    require_path,
)
from fedcompress.errors import ConfigError

FEMNIST_CLASSES = 62
NPZ_NAME = "femnist_leaf/femnist_leaf_niid05_20shards.npz"
JSON_TAR_NAME = "femnist_leaf/leaf_femnist_niid05_json_shards.tar.xz"
NPZ_KEYS = ("x_train", "y_train", "w_train", "x_test", "y_test")
LEAF_FORMAT = (
    '{"users": [...], "num_samples": [...], "user_data": {user: {"x": [[784 floats]], "y": [ints]}}}'
)


def _femnist_dataset(name: str, a: dict[str, np.ndarray]) -> FederatedDataset:
    """uint8 (N,28,28), background 255 -> inverted, standardised (N,1,28,28) float32."""
    x_train, x_test = normalise_images(255 - a["x_train"][:, None], 255 - a["x_test"][:, None])
    groups = dense_ids(a["w_train"])
    return FederatedDataset(
        name,
        x_train,
        as_labels(a["y_train"]),
        x_test,
        as_labels(a["y_test"]),
        FEMNIST_CLASSES,
        groups,
        "cnn28",
    )


def read_femnist_npz(path: Path) -> dict[str, np.ndarray]:
    """The arrays of the converted npz, checked: keys, uint8 28x28 images, matching lengths."""
    require_path(path, "FEMNIST npz")
    expected = f"an npz with {', '.join(NPZ_KEYS)} (uint8 images N x 28 x 28, int labels, int writer index)"
    try:
        with np.load(path, allow_pickle=False) as z:
            missing = [k for k in NPZ_KEYS if k not in z.files]
            if missing:
                raise ConfigError(f"'{path}': missing arrays {missing}; expected {expected}")
            a = {k: z[k] for k in NPZ_KEYS}
    except (OSError, ValueError, zipfile.BadZipFile) as exc:
        raise ConfigError(f"'{path}': cannot read ({exc}); expected {expected}") from exc
    ok = (
        a["x_train"].ndim == 3
        and a["x_train"].shape[1:] == (28, 28)
        and a["x_test"].shape[1:] == (28, 28)
        and a["x_train"].dtype == np.uint8
        and len(a["x_train"]) == len(a["y_train"]) == len(a["w_train"])
        and len(a["x_test"]) == len(a["y_test"])
    )
    if not ok:
        shapes = {k: (v.shape, str(v.dtype)) for k, v in a.items()}
        raise ConfigError(f"'{path}': inconsistent arrays {shapes}; expected {expected}")
    return a


def load_femnist(data_dir: Path) -> FederatedDataset:
    """FEMNIST (LEAF, niid 5%, 20 shards): 105 writers, 14,708 train / 1,685 test, 62 classes."""
    path = data_dir / NPZ_NAME if data_dir.is_dir() else data_dir
    return _femnist_dataset("femnist", read_femnist_npz(path))


def _iter_json(source: Path) -> Iterator[tuple[str, dict[str, Any]]]:
    """Yield (member name, parsed JSON) for every ``*.json`` under a tarball or a folder, sorted by name."""
    try:
        if source.is_dir():
            for p in sorted(source.rglob("*.json")):
                yield str(p.relative_to(source)), json.loads(p.read_bytes())
            return
        with tarfile.open(source) as tf:
            members = sorted(
                (m for m in tf.getmembers() if m.isfile() and m.name.endswith(".json")), key=lambda m: m.name
            )
            for m in members:
                f = tf.extractfile(m)
                assert f is not None
                yield m.name, json.loads(f.read())
    except (OSError, tarfile.TarError, json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise ConfigError(f"'{source}': cannot read LEAF JSON ({exc}); expected {LEAF_FORMAT}") from exc


def _natural_key(name: str) -> list[int | str]:
    """``all_data_2`` before ``all_data_10``: LEAF's own shard order."""
    return [int(t) if t.isdigit() else t for t in re.split(r"(\d+)", name)]


def _split_of(member: str) -> str | None:
    parts = Path(member).parts
    return "train" if "train" in parts else "test" if "test" in parts else None


def _user_arrays(
    source: Path, member: str, blob: dict[str, Any]
) -> Iterator[tuple[str, np.ndarray, np.ndarray]]:
    """(user, uint8 images N x 28 x 28 with background 255, labels) for each user of one shard."""
    try:
        for user in blob["users"]:
            ud = blob["user_data"][user]
            x = np.asarray(ud["x"], dtype=np.float32)
            y = np.asarray(ud["y"], dtype=np.int64)
            if x.ndim != 2 or x.shape[1] != 784 or len(x) != len(y):
                raise ValueError(f"user {user}: x {x.shape}, y {y.shape}")
            yield user, np.rint(x * 255.0).astype(np.uint8).reshape(-1, 28, 28), y
    except (KeyError, TypeError, ValueError) as exc:
        raise ConfigError(f"'{source}' member '{member}': {exc!r}; expected {LEAF_FORMAT}") from exc


def read_leaf_json(source: Path) -> dict[str, np.ndarray]:
    """Parse LEAF FEMNIST shards (``train/`` and ``test/`` subfolders) into npz-like arrays.

    Writers are numbered in order of first appearance in the train shards sorted by shard number; test samples
    are kept only for writers that have train data (the same selection and order as the converted npz).
    """
    xs: dict[str, list[np.ndarray]] = {"train": [], "test": []}
    ys: dict[str, list[np.ndarray]] = {"train": [], "test": []}
    ws: dict[str, list[np.ndarray]] = {"train": [], "test": []}
    writer_ids: dict[str, int] = {}
    shards = sorted(_iter_json(source), key=lambda kv: (_split_of(kv[0]) != "train", _natural_key(kv[0])))
    for member, blob in shards:
        split = _split_of(member)
        if split is None:
            continue
        for user, x, y in _user_arrays(source, member, blob):
            if split == "train":
                writer_ids.setdefault(user, len(writer_ids))
            elif user not in writer_ids:
                continue
            xs[split].append(x)
            ys[split].append(y)
            ws[split].append(np.full(len(y), writer_ids[user], dtype=np.int64))
    if not xs["train"] or not xs["test"]:
        raise ConfigError(f"'{source}': no train/ and test/ LEAF shards found; expected {LEAF_FORMAT}")
    out = {
        f"{k}_{s}": np.concatenate(d[s])
        for k, d in (("x", xs), ("y", ys), ("w", ws))
        for s in ("train", "test")
    }
    out["writers"] = np.array(list(writer_ids), dtype=str)
    return out


def load_femnist_leaf_json(data_dir: Path) -> FederatedDataset:
    """FEMNIST from LEAF JSON: ``data_dir`` may be the tarball, a folder of shards, or the data root.

    Parsing ~94 MB of JSON takes seconds, so the decoded arrays are cached (keyed by the source's size/mtime).
    """
    source = data_dir / JSON_TAR_NAME if (data_dir / JSON_TAR_NAME).exists() else data_dir
    require_path(source, "LEAF FEMNIST JSON shards (.tar.xz or folder)")
    key = file_key(source)
    arrays = load_or_build_arrays("femnist-leaf-json", key, lambda: read_leaf_json(source))
    return _femnist_dataset("femnist-leaf-json", arrays)
