"""IDX files (MNIST, Fashion-MNIST, EMNIST): a strict parser plus folder loaders.

Format (big-endian): two zero bytes, a dtype code, the number of dims, one uint32 per dim, then the data.
Everything is checked so a truncated or mislabelled file fails with the file name, not with a reshape error.
"""

from __future__ import annotations

import gzip
import re
import zlib
from pathlib import Path

import numpy as np

from fedcompress.data.base import DATA_DIR_HINT, FederatedDataset, as_labels, normalise_images, require_path
from fedcompress.errors import ConfigError

IDX_DTYPES: dict[int, np.dtype] = {
    0x08: np.dtype(np.uint8),
    0x09: np.dtype(np.int8),
    0x0B: np.dtype(">i2"),
    0x0C: np.dtype(">i4"),
    0x0D: np.dtype(">f4"),
    0x0E: np.dtype(">f8"),
}
FASHION_MNIST_SYSTEM_DIR = Path("/usr/share/datasets/fashion-mnist")


def read_idx(path: str | Path, expect_ndim: int | None = None) -> np.ndarray:
    """Parse one ``.idx*`` file (optionally ``.gz``) into a native-endian array; ConfigError if malformed."""
    path = require_path(Path(path), "IDX file")
    expected = "an IDX file (00 00 <dtype code> <ndim>, big-endian uint32 dims, then the data)"
    try:
        raw = gzip.decompress(path.read_bytes()) if path.suffix == ".gz" else path.read_bytes()
    except (OSError, EOFError, zlib.error) as exc:
        raise ConfigError(f"'{path}': cannot read ({exc}); expected {expected}") from exc
    if len(raw) < 4 or raw[0] != 0 or raw[1] != 0:
        raise ConfigError(f"'{path}': bad magic number {raw[:4].hex() or 'empty'}; expected {expected}")
    code, ndim = raw[2], raw[3]
    if code not in IDX_DTYPES:
        codes = ", ".join(f"0x{c:02X}" for c in IDX_DTYPES)
        raise ConfigError(f"'{path}': unknown IDX dtype code 0x{code:02X}; expected one of {codes}")
    if ndim == 0 or (expect_ndim is not None and ndim != expect_ndim):
        want = expect_ndim if expect_ndim is not None else ">= 1"
        raise ConfigError(f"'{path}': IDX header says {ndim} dims; expected {want}")
    header = 4 + 4 * ndim
    if len(raw) < header:
        raise ConfigError(
            f"'{path}': truncated header ({len(raw)} bytes, need {header}); expected {expected}"
        )
    dims = tuple(int(d) for d in np.frombuffer(raw, dtype=">u4", count=ndim, offset=4))
    dtype = IDX_DTYPES[code]
    size = int(np.prod(dims, dtype=np.int64)) * dtype.itemsize
    if len(raw) - header != size:
        raise ConfigError(
            f"'{path}': {len(raw) - header} data bytes, but header dims {dims} x {dtype.itemsize} B "
            f"need {size}"
        )
    return np.frombuffer(raw, dtype=dtype, offset=header).reshape(dims).astype(dtype.newbyteorder("="))


def _pick(folder: Path, split: str, kind: str) -> Path:
    """Find e.g. ``train-images-idx3-ubyte.gz`` / ``t10k-labels.idx1-ubyte`` (LeCun and Kaggle spellings)."""
    split_re = "train" if split == "train" else "(t10k|test)"
    ndim = 3 if kind == "images" else 1
    pattern = re.compile(rf"^{split_re}.*{kind}.*idx{ndim}.*ubyte(\.gz)?$")
    hits = sorted(p for p in folder.iterdir() if pattern.match(p.name))
    if not hits:
        raise ConfigError(
            f"no {split} {kind} IDX file in '{folder}': expected a file like "
            f"'{'train' if split == 'train' else 't10k'}-{kind}-idx{ndim}-ubyte[.gz]' ({DATA_DIR_HINT})"
        )
    return min(hits, key=lambda p: (p.suffix == ".gz", p.name))  # prefer uncompressed if both exist


def load_idx_folder(folder: Path, name: str = "idx", default_model: str = "cnn28") -> FederatedDataset:
    """Any folder holding train/t10k images+labels IDX files; images become ``(N, 1, H, W)`` float32."""
    require_path(folder, f"IDX folder for '{name}'")
    x_tr = read_idx(_pick(folder, "train", "images"), 3)
    y_tr = read_idx(p := _pick(folder, "train", "labels"), 1)
    x_te = read_idx(_pick(folder, "test", "images"), 3)
    y_te = read_idx(q := _pick(folder, "test", "labels"), 1)
    if len(x_tr) != len(y_tr) or len(x_te) != len(y_te):
        raise ConfigError(
            f"'{folder}': image/label counts differ "
            f"(train {len(x_tr)}/{len(y_tr)}, test {len(x_te)}/{len(y_te)})"
        )
    if x_tr.shape[1:] != x_te.shape[1:]:
        raise ConfigError(
            f"'{folder}': train images {x_tr.shape[1:]} and test images {x_te.shape[1:]} differ"
        )
    y_tr, y_te = as_labels(y_tr), as_labels(y_te)
    if min(y_tr.min(initial=0), y_te.min(initial=0)) < 0:
        raise ConfigError(f"'{p}' / '{q}': negative labels; expected class indices 0..C-1")
    num_classes = int(max(y_tr.max(initial=0), y_te.max(initial=0))) + 1
    x_train, x_test = normalise_images(x_tr[:, None], x_te[:, None])
    return FederatedDataset(name, x_train, y_tr, x_test, y_te, num_classes, None, default_model)


def _subdir_or_self(data_dir: Path, sub: str) -> Path:
    """``data_dir/sub`` if present, else ``data_dir`` itself (so users may point straight at the folder)."""
    return data_dir / sub if (data_dir / sub).is_dir() else data_dir


def load_mnist(data_dir: Path) -> FederatedDataset:
    """MNIST from ``data_dir/mnist`` (or ``data_dir`` itself): 60k/10k, 28x28, 10 classes."""
    return load_idx_folder(_subdir_or_self(data_dir, "mnist"), "mnist")


def load_idx(data_dir: Path) -> FederatedDataset:
    """Generic: ``data_dir`` is the folder of IDX files."""
    return load_idx_folder(data_dir, "idx")


def load_fashion_mnist(data_dir: Path) -> FederatedDataset:
    """Fashion-MNIST from ``data_dir/fashion-mnist`` or Debian's ``dataset-fashion-mnist`` package folder."""
    folder = data_dir / "fashion-mnist"
    if not folder.is_dir() and FASHION_MNIST_SYSTEM_DIR.is_dir():
        folder = FASHION_MNIST_SYSTEM_DIR
    return load_idx_folder(folder, "fashion-mnist")
