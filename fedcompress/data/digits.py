"""The embedded default dataset: UCI 8x8 digits (scikit-learn's ``load_digits``): demos need no download."""

from __future__ import annotations

import gzip
import importlib.util
from pathlib import Path

import numpy as np

from fedcompress.data.base import FederatedDataset, as_labels, normalise_images, require_path
from fedcompress.errors import ConfigError

TEST_FRACTION = 0.2
SPLIT_SEED = 0


def stratified_test_mask(y: np.ndarray, fraction: float, seed: int) -> np.ndarray:
    """Mask of ``round(fraction * count)`` examples of every class, seeded: a fixed, stratified test split."""
    rng = np.random.default_rng(seed)
    perm = rng.permutation(len(y))
    order = perm[np.argsort(y[perm], kind="stable")]
    sorted_y = y[order]
    starts = np.searchsorted(sorted_y, sorted_y, side="left")
    rank = np.arange(len(y)) - starts
    _, counts = np.unique(sorted_y, return_counts=True)
    quota = np.round(counts * fraction).astype(np.int64)
    class_pos = np.searchsorted(np.unique(sorted_y), sorted_y)
    mask = np.zeros(len(y), dtype=bool)
    mask[order] = rank < quota[class_pos]
    return mask


def read_digits_csv(path: Path) -> tuple[np.ndarray, np.ndarray]:
    """(images uint8 N,8,8 in 0..16, labels) from sklearn's ``digits.csv.gz`` layout (64 pixels + label)."""
    require_path(path, "digits CSV (needed because scikit-learn is not installed)")
    expected = "a gzip CSV of 65 integer columns (64 pixel counts 0..16, then the label)"
    try:
        with gzip.open(path, "rt") as f:
            table = np.loadtxt(f, delimiter=",", dtype=np.int64, ndmin=2)
    except (OSError, ValueError, EOFError) as exc:
        raise ConfigError(f"'{path}': cannot parse ({exc}); expected {expected}") from exc
    if table.shape[1] != 65:
        raise ConfigError(f"'{path}': got {table.shape[1]} columns; expected {expected}")
    return table[:, :64].reshape(-1, 8, 8).astype(np.uint8), table[:, 64]


def sklearn_digits_csv() -> Path | None:
    """Path of the CSV inside an installed scikit-learn, found without importing it.

    ``sklearn.datasets.load_digits`` reads this same file, but importing sklearn costs ~1 s; reading the CSV
    directly costs ~30 ms and gives identical arrays (checked in tests/data).
    """
    spec = importlib.util.find_spec("sklearn")
    if spec is None or not spec.submodule_search_locations:
        return None
    path = Path(next(iter(spec.submodule_search_locations))) / "datasets" / "data" / "digits.csv.gz"
    return path if path.is_file() else None


def _read_digits(data_dir: Path) -> tuple[np.ndarray, np.ndarray]:
    """From scikit-learn's copy if installed (offline, in its wheel), else ``data_dir/sklearn_digits``."""
    path = sklearn_digits_csv() or data_dir / "sklearn_digits" / "digits.csv.gz"
    return read_digits_csv(path)


def load_digits_dataset(data_dir: Path) -> FederatedDataset:
    """1,797 8x8 digits, fixed stratified 80/20 split (seed 0); no natural ids (writers are not recorded)."""
    images, y = _read_digits(data_dir)
    y = as_labels(y)
    test = stratified_test_mask(y, TEST_FRACTION, SPLIT_SEED)
    x = images[:, None, :, :]
    x_train, x_test = normalise_images(x[~test], x[test])
    return FederatedDataset("digits", x_train, y[~test], x_test, y[test], 10, None, "cnn8")
