"""The IDX parser: valid files round-trip, malformed ones fail with the file name and the expected format."""

from __future__ import annotations

import gzip
import struct
from pathlib import Path

import numpy as np
import pytest

from fedcompress.data import load_dataset
from fedcompress.data.idx import read_idx
from fedcompress.errors import ConfigError


def idx_bytes(arr: np.ndarray, code: int) -> bytes:
    """Encode ``arr`` as IDX with dtype ``code`` (big-endian)."""
    big = {0x08: ">u1", 0x09: ">i1", 0x0B: ">i2", 0x0C: ">i4", 0x0D: ">f4", 0x0E: ">f8"}[code]
    header = bytes([0, 0, code, arr.ndim]) + struct.pack(f">{arr.ndim}I", *arr.shape)
    return header + arr.astype(big).tobytes()


@pytest.mark.parametrize("code", [0x08, 0x09, 0x0B, 0x0C, 0x0D, 0x0E])
def test_roundtrip_all_dtypes(tmp_path: Path, code: int) -> None:
    arr = (np.arange(24).reshape(2, 3, 4) % 100).astype(np.float64)
    path = tmp_path / "a-idx3-ubyte.gz"
    path.write_bytes(gzip.compress(idx_bytes(arr, code)))
    out = read_idx(path, expect_ndim=3)
    assert out.shape == (2, 3, 4)
    assert out.dtype.isnative
    np.testing.assert_array_equal(out, arr)


@pytest.mark.parametrize(
    ("payload", "match"),
    [
        (b"", "bad magic"),
        (b"\x01\x00\x08\x01" + struct.pack(">I", 3) + b"abc", "bad magic"),
        (b"\x00\x00\x07\x01" + struct.pack(">I", 3) + b"abc", "dtype code 0x07"),
        (b"\x00\x00\x08\x01" + b"\x00\x00", "truncated header"),
        (b"\x00\x00\x08\x01" + struct.pack(">I", 5) + b"abc", "3 data bytes.*need 5"),
        (b"\x00\x00\x08\x01" + struct.pack(">I", 2) + b"abc", "3 data bytes.*need 2"),
        (b"\x00\x00\x08\x02" + struct.pack(">II", 1, 3) + b"abc", "expected 1"),
    ],
)
def test_malformed_rejected(tmp_path: Path, payload: bytes, match: str) -> None:
    path = tmp_path / "bad-labels-idx1-ubyte"
    path.write_bytes(payload)
    with pytest.raises(ConfigError, match=match) as info:
        read_idx(path, expect_ndim=1)
    assert str(path) in str(info.value)


def test_corrupt_gzip_rejected(tmp_path: Path) -> None:
    path = tmp_path / "x-idx1-ubyte.gz"
    path.write_bytes(b"\x1f\x8b\x08\x00garbage")
    with pytest.raises(ConfigError, match="x-idx1-ubyte.gz.*IDX"):
        read_idx(path)


def _write_set(folder: Path, n_train: int = 12, n_test: int = 5, labels_train: int | None = None) -> None:
    rng = np.random.default_rng(0)
    folder.mkdir(parents=True, exist_ok=True)
    for split, n, nl in (("train", n_train, labels_train or n_train), ("t10k", n_test, n_test)):
        x = rng.integers(0, 256, (n, 6, 6), dtype=np.uint8)
        (folder / f"{split}-images-idx3-ubyte").write_bytes(idx_bytes(x, 0x08))
        y = (np.arange(nl) % 3).astype(np.uint8)
        (folder / f"{split}-labels-idx1-ubyte.gz").write_bytes(gzip.compress(idx_bytes(y, 0x08)))


def test_idx_folder_loads(tmp_path: Path) -> None:
    _write_set(tmp_path / "set")
    ds = load_dataset("idx", tmp_path / "set")
    assert ds.x_train.shape == (12, 1, 6, 6) and ds.x_test.shape == (5, 1, 6, 6)
    assert ds.num_classes == 3 and ds.groups_train is None


def test_idx_folder_count_mismatch(tmp_path: Path) -> None:
    _write_set(tmp_path / "set", labels_train=11)
    with pytest.raises(ConfigError, match="counts differ"):
        load_dataset("idx", tmp_path / "set")


def test_idx_folder_missing_file(tmp_path: Path) -> None:
    _write_set(tmp_path / "set")
    (tmp_path / "set" / "t10k-images-idx3-ubyte").unlink()
    with pytest.raises(ConfigError, match="no test images IDX file.*t10k-images-idx3-ubyte"):
        load_dataset("idx", tmp_path / "set")


def test_images_file_with_wrong_ndim(tmp_path: Path) -> None:
    _write_set(tmp_path / "set")
    (tmp_path / "set" / "train-images-idx3-ubyte").write_bytes(idx_bytes(np.zeros(12, np.uint8), 0x08))
    with pytest.raises(ConfigError, match="train-images-idx3-ubyte.*1 dims; expected 3"):
        load_dataset("idx", tmp_path / "set")
