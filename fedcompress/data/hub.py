"""``hub:<hf-name>``: Hugging Face datasets through flwr-datasets, for users with network access.

The whole ``train`` (and ``test`` if present) split is loaded with flwr-datasets (``load_split``)
and converted to the same arrays as the local loaders, so ``partition`` works unchanged (including ``natural``
when the dataset has a writer/character/client id column). Without a ``test`` split, a fixed stratified 20% of
train is held out. Supports image datasets (a ``datasets.Image`` or array column) and LEAF-style
next-character text (``x`` 80-char strings, ``y`` one char, e.g. ``flwrlabs/shakespeare``).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from fedcompress.data.base import FederatedDataset, as_labels, dense_ids, normalise_images
from fedcompress.data.digits import stratified_test_mask
from fedcompress.data.text import LEAF_VOCAB, encode
from fedcompress.errors import ConfigError

LABEL_COLUMNS = ("label", "labels", "fine_label", "character", "target", "y")
IMAGE_COLUMNS = ("image", "img", "pixels", "x")
GROUP_COLUMNS = ("writer_id", "character_id", "client_id", "user_id", "speaker_id")


def _first(columns: list[str], candidates: tuple[str, ...], what: str, name: str) -> str:
    for c in candidates:
        if c in columns:
            return c
    raise ConfigError(f"hub dataset '{name}': no {what} column among {columns}; expected one of {candidates}")


def _labels(split: Any, column: str) -> tuple[np.ndarray, int | None]:
    """Integer labels and, when the feature is a ClassLabel, its number of classes."""
    feature = split.features[column]
    values = split[column]
    if hasattr(feature, "num_classes"):
        return as_labels(np.asarray(values)), int(feature.num_classes)
    arr = np.asarray(values)
    if arr.dtype.kind in "iu":
        return as_labels(arr), None
    raise ConfigError(f"label column '{column}' has {arr.dtype} values; expected integers or a ClassLabel")


def _images(split: Any, column: str) -> np.ndarray:
    """uint8/float (N, C, H, W) from an Image or array column (all images must share one size)."""
    x = np.asarray(split.with_format("numpy")[column])
    if x.dtype == object or x.ndim not in (3, 4):
        raise ConfigError(f"image column '{column}' gives {x.dtype} {x.shape}; expected same-size images")
    return x[:, None] if x.ndim == 3 else x.transpose(0, 3, 1, 2)


def _convert(name: str, train: Any, test: Any | None) -> FederatedDataset:
    columns = list(train.column_names)
    groups_col = next((c for c in GROUP_COLUMNS if c in columns), None)
    groups = dense_ids(np.asarray(train[groups_col])) if groups_col else None
    is_text = "x" in columns and "y" in columns and train.features["x"].dtype == "string"
    if is_text:

        def arrays(split: Any) -> tuple[np.ndarray, np.ndarray]:
            xs = np.stack([encode(s) for s in split["x"]]).astype(np.int64)
            ys = encode("".join(split["y"])).astype(np.int64)
            return xs, ys

        x_tr, y_tr = arrays(train)
        x_te, y_te = arrays(test) if test is not None else (x_tr[:0], y_tr[:0])
        num_classes, model = len(LEAF_VOCAB), "lstm"
    else:
        label_col = _first(columns, LABEL_COLUMNS, "label", name)
        image_col = _first([c for c in columns if c != label_col], IMAGE_COLUMNS, "image", name)
        y_tr, n_cls = _labels(train, label_col)
        raw_tr = _images(train, image_col)
        if test is not None:
            y_te, _ = _labels(test, label_col)
            raw_te = _images(test, image_col)
        else:
            held = stratified_test_mask(y_tr, 0.2, 0)
            raw_te, y_te, raw_tr, y_tr = raw_tr[held], y_tr[held], raw_tr[~held], y_tr[~held]
            groups = groups[~held] if groups is not None else None
        x_tr, x_te = normalise_images(raw_tr, raw_te)
        num_classes = n_cls or int(max(y_tr.max(initial=0), y_te.max(initial=0))) + 1
        model = {8: "cnn8", 28: "cnn28"}.get(x_tr.shape[-1], "cnn32")
    return FederatedDataset(f"hub:{name}", x_tr, y_tr, x_te, y_te, num_classes, groups, model)


def load_hub_dataset(name: str) -> FederatedDataset:
    """Download (first time; HF caches it) and convert ``name`` from the Hugging Face Hub."""
    if not name:
        raise ConfigError(
            "hub dataset name is empty: use 'hub:<owner>/<dataset>', e.g. 'hub:flwrlabs/femnist'"
        )
    from flwr_datasets import FederatedDataset as HubFederatedDataset  # lazy: ~3 s import

    fds = HubFederatedDataset(dataset=name, partitioners={"train": 1}, shuffle=False)
    try:
        train = fds.load_split("train")
        try:
            test = fds.load_split("test")
        except ValueError:
            test = None
    except (OSError, ConnectionError) as exc:
        raise ConfigError(
            f"cannot load hub dataset '{name}' ({exc}); it needs network access the first time"
        ) from exc
    return _convert(name, train, test)
