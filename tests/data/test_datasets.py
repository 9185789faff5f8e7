"""Loaders on the real data: shapes, dtypes, class counts, natural ids, errors."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from fedcompress.data import DATASETS, FederatedDataset, default_data_dir, load_dataset, partition
from fedcompress.errors import ConfigError


def _check_images(ds: FederatedDataset, shape: tuple[int, ...]) -> None:
    assert ds.x_train.dtype == np.float32 and ds.x_test.dtype == np.float32
    assert ds.x_train.shape[1:] == shape and ds.x_test.shape[1:] == shape
    assert ds.y_train.dtype == np.int64 and ds.y_test.dtype == np.int64
    assert abs(float(ds.x_train.mean())) < 0.05 and 0.9 < float(ds.x_train.std()) < 1.1
    assert ds.y_train.min() >= 0 and ds.y_train.max() < ds.num_classes


def test_default_data_dir_env(monkeypatch, tmp_path) -> None:
    monkeypatch.setenv("FEDCOMPRESS_DATA_DIR", str(tmp_path))
    assert default_data_dir() == tmp_path
    monkeypatch.delenv("FEDCOMPRESS_DATA_DIR")
    assert default_data_dir().parts[-2:] == ("shared", "data")


def test_unknown_name_lists_valid() -> None:
    with pytest.raises(ConfigError, match="digits.*mnist"):
        load_dataset("imagenet")


def test_digits() -> None:
    ds = load_dataset("digits")
    _check_images(ds, (1, 8, 8))
    assert len(ds.y_train) + len(ds.y_test) == 1797
    assert len(ds.y_test) == 359
    assert ds.groups_train is None and ds.num_classes == 10 and ds.default_model == "cnn8"
    assert load_dataset("digits") is ds  # in-process cache
    assert np.bincount(ds.y_test).min() >= 34  # stratified


def test_mnist(data_dir: Path) -> None:
    ds = load_dataset("mnist", data_dir)
    _check_images(ds, (1, 28, 28))
    assert len(ds.y_train) == 60_000 and len(ds.y_test) == 10_000
    assert np.bincount(ds.y_train).tolist() == [5923, 6742, 5958, 6131, 5842, 5421, 5918, 6265, 5851, 5949]
    assert ds.num_classes == 10 and ds.default_model == "cnn28"


def test_idx_generic_points_at_folder(data_dir: Path) -> None:
    ds = load_dataset("idx", data_dir / "mnist")
    assert ds.name == "idx" and ds.x_test.shape == (10_000, 1, 28, 28)


def test_femnist(data_dir: Path) -> None:
    ds = load_dataset("femnist", data_dir)
    _check_images(ds, (1, 28, 28))
    assert len(ds.y_train) == 14_708 and len(ds.y_test) == 1_685
    assert ds.num_classes == 62
    assert len(np.unique(ds.y_train)) == 62 and len(np.unique(ds.y_test)) == 62
    assert ds.groups_train is not None and ds.groups_train.dtype == np.int64
    assert ds.num_groups == 105
    # background (most common pixel) is the minimum after inversion: ink is high, as in MNIST
    assert np.median(ds.x_train[:100]) == ds.x_train.min()


def test_femnist_natural_partitions_are_writers(data_dir: Path) -> None:
    ds = load_dataset("femnist", data_dir)
    parts = partition(ds, "natural", 105)
    assert len(parts) == 105
    assert sum(len(p) for p in parts) == 14_708
    assert all(np.all(ds.groups_train[p] == w) for w, p in enumerate(parts))
    assert min(len(p) for p in parts) == 4 and max(len(p) for p in parts) == 165


def test_missing_path_names_path_and_env(tmp_path: Path) -> None:
    missing = tmp_path / "nowhere"
    with pytest.raises(ConfigError, match=r"nowhere.*FEDCOMPRESS_DATA_DIR"):
        load_dataset("femnist", missing)
    with pytest.raises(ConfigError, match=r"nowhere.*FEDCOMPRESS_DATA_DIR"):
        load_dataset("mnist", missing)


def test_registry_names() -> None:
    assert {"digits", "mnist", "femnist"} <= set(DATASETS)


def test_arrays_read_only() -> None:
    ds = load_dataset("digits")
    with pytest.raises(ValueError):
        ds.x_train[0, 0, 0, 0] = 1.0
    assert ds.x_train[np.arange(3)].flags.writeable


def test_digits_matches_sklearn_and_shared_csv(data_dir: Path, monkeypatch) -> None:
    from fedcompress.data import digits

    sklearn_datasets = pytest.importorskip("sklearn.datasets")
    bunch = sklearn_datasets.load_digits()
    images, labels = digits._read_digits(data_dir)
    np.testing.assert_array_equal(images, bunch.images.astype(np.uint8))
    np.testing.assert_array_equal(labels, bunch.target)
    monkeypatch.setattr(digits, "sklearn_digits_csv", lambda: None)  # as if sklearn were not installed
    images2, labels2 = digits._read_digits(data_dir)
    np.testing.assert_array_equal(images2, images)
    np.testing.assert_array_equal(labels2, labels)


def test_digits_csv_malformed(tmp_path: Path) -> None:
    import gzip

    from fedcompress.data.digits import read_digits_csv

    bad = tmp_path / "digits.csv.gz"
    bad.write_bytes(gzip.compress(b"1,2,3\n4,5,6\n"))
    with pytest.raises(ConfigError, match=r"digits.csv.gz.*65"):
        read_digits_csv(bad)


def test_femnist_leaf_json_agrees_with_npz(data_dir: Path) -> None:
    npz = load_dataset("femnist", data_dir)
    js = load_dataset("femnist-leaf-json", data_dir)
    for field in ("x_train", "y_train", "x_test", "y_test", "groups_train"):
        np.testing.assert_array_equal(getattr(js, field), getattr(npz, field), err_msg=field)


def test_femnist_malformed_npz(tmp_path: Path) -> None:
    bad = tmp_path / "bad.npz"
    np.savez(bad, x_train=np.zeros((2, 28, 28), np.uint8))
    with pytest.raises(ConfigError, match=r"bad.npz.*missing arrays"):
        load_dataset("femnist", bad)
    bad.write_bytes(b"not a zip")
    with pytest.raises(ConfigError, match=r"bad.npz.*cannot read"):
        load_dataset("femnist", bad)


def test_leaf_json_malformed(tmp_path: Path) -> None:
    (tmp_path / "train").mkdir()
    (tmp_path / "train" / "a.json").write_text(
        '{"users": ["u"], "user_data": {"u": {"x": [[0.5]], "y": [1]}}}'
    )
    with pytest.raises(ConfigError, match=r"a.json.*expected .*784"):
        load_dataset("femnist-leaf-json", tmp_path)


def test_cifar10(data_dir: Path) -> None:
    ds = load_dataset("cifar10", data_dir)
    _check_images(ds, (3, 32, 32))
    assert len(ds.y_train) == 50_000 and len(ds.y_test) == 10_000
    assert np.bincount(ds.y_train).tolist() == [5000] * 10
    assert np.bincount(ds.y_test).tolist() == [1000] * 10
    assert ds.default_model == "cnn32" and ds.groups_train is None


def test_shakespeare(data_dir: Path) -> None:
    from fedcompress.data.text import LEAF_VOCAB, MIN_WINDOWS, SEQ_LEN, decode

    ds = load_dataset("shakespeare", data_dir)
    assert ds.x_train.dtype == np.int64 and ds.x_train.shape[1] == SEQ_LEN
    assert ds.num_classes == len(LEAF_VOCAB) == 80 and ds.default_model == "lstm"
    assert ds.x_train.max() < 80 and ds.y_test.max() < 80
    assert ds.num_groups == 984  # users with >= MIN_WINDOWS windows
    assert MIN_WINDOWS == 64
    assert np.bincount(ds.groups_train).min() >= 1
    assert 200_000 < len(ds.y_train) < 260_000 and len(ds.y_test) > 20_000
    # the target is the character after the window
    assert decode(ds.x_train[0]).startswith("In delivering my son from me")
    stride = 16
    np.testing.assert_array_equal(ds.x_train[1, : SEQ_LEN - stride], ds.x_train[0, stride:])
    assert ds.y_train[0] == ds.x_train[1, SEQ_LEN - stride]
    parts = partition(ds, "natural", 20)
    assert all(np.all(ds.groups_train[p] == g) for g, p in enumerate(parts))


def test_shakespeare_all_keeps_every_character_with_a_train_window(data_dir: Path) -> None:
    ds = load_dataset("shakespeare-all", data_dir)
    assert ds.num_groups == 1038  # of 1,089: 51 speak fewer than 82 characters, too few for one window
    assert np.bincount(ds.groups_train, minlength=ds.num_groups).min() >= 1
    assert len(ds.y_train) > len(load_dataset("shakespeare", data_dir).y_train)


def test_shakespeare_windows_continue_text() -> None:
    from fedcompress.data.text import encode, window_starts

    tr, te = window_starts(1000, 1)
    assert tr[-1] + 1 == te[0] and te[-1] == 1000 - 80 - 1
    assert len(te) == 1000 - 80 - int(0.9 * 920)
    assert encode("a{").tolist() == [encode("a")[0], encode(" ")[0]]


def _write_imagefolder(root: Path, size: int = 10) -> None:
    from PIL import Image

    rng = np.random.default_rng(0)
    for split, n in (("train", 4), ("test", 2)):
        for cls in ("cat", "dog", "emu"):
            (root / split / cls).mkdir(parents=True, exist_ok=True)
            for i in range(n):
                img = Image.fromarray(rng.integers(0, 256, (size, size, 3), dtype=np.uint8))
                img.save(root / split / cls / f"{i:04d}.{'png' if i % 2 else 'jpg'}")


def test_imagefolder_dir_and_tarball(tmp_path: Path) -> None:
    import tarfile

    _write_imagefolder(tmp_path / "imgs")
    ds = load_dataset("imagefolder", tmp_path / "imgs")
    assert ds.x_train.shape == (12, 3, 10, 10) and ds.x_test.shape == (6, 3, 10, 10)
    assert ds.num_classes == 3 and np.bincount(ds.y_train).tolist() == [4, 4, 4]
    tar = tmp_path / "imgs.tar.gz"
    with tarfile.open(tar, "w:gz") as tf:
        tf.add(tmp_path / "imgs" / "train", arcname="train")
        tf.add(tmp_path / "imgs" / "test", arcname="test")
    from_tar = load_dataset("imagefolder", tar)
    np.testing.assert_array_equal(from_tar.x_train, ds.x_train)
    np.testing.assert_array_equal(from_tar.y_test, ds.y_test)


def test_imagefolder_mixed_sizes_rejected(tmp_path: Path) -> None:
    from PIL import Image

    _write_imagefolder(tmp_path / "imgs")
    Image.new("RGB", (7, 7)).save(tmp_path / "imgs" / "train" / "cat" / "zzz.png")
    with pytest.raises(ConfigError, match=r"zzz.png.*one size"):
        load_dataset("imagefolder", tmp_path / "imgs")


def _fake_hub(monkeypatch, splits: dict) -> None:
    """Serve ``splits`` from ``datasets.load_dataset`` so flwr-datasets' real code path runs offline."""
    import datasets

    def fake_load_dataset(path: str, name: str | None = None, **kwargs) -> datasets.DatasetDict:
        assert path == "someone/thing"
        return datasets.DatasetDict(splits)

    monkeypatch.setattr(datasets, "load_dataset", fake_load_dataset)
    load_dataset.cache_clear()


def test_hub_images_with_writers(monkeypatch) -> None:
    import datasets

    rng = np.random.default_rng(0)
    features = datasets.Features(
        {
            "image": datasets.Image(),
            "character": datasets.ClassLabel(num_classes=62),
            "writer_id": datasets.Value("string"),
        }
    )

    def split(n: int) -> datasets.Dataset:
        return datasets.Dataset.from_dict(
            {
                "image": list(rng.integers(0, 256, (n, 28, 28), dtype=np.uint8)),
                "character": rng.integers(0, 62, n).tolist(),
                "writer_id": rng.choice(["w1", "w2", "w3"], n).tolist(),
            },
            features=features,
        )

    _fake_hub(monkeypatch, {"train": split(40), "test": split(10)})
    ds = load_dataset("hub:someone/thing")
    _check_images(ds, (1, 28, 28))
    assert ds.name == "hub:someone/thing" and ds.num_classes == 62 and ds.default_model == "cnn28"
    assert ds.num_groups == 3 and len(ds.y_test) == 10
    assert sum(len(p) for p in partition(ds, "natural", 3)) == 40


def test_hub_text_without_test_split(monkeypatch) -> None:
    import datasets

    xs = ["to be or not to be, that is the question: whether 'tis nobler in the mind to s"] * 6
    train = datasets.Dataset.from_dict({"x": [s[:80].ljust(80) for s in xs], "y": list("abcdef")})
    _fake_hub(monkeypatch, {"train": train})
    ds = load_dataset("hub:someone/thing")
    assert ds.x_train.shape == (6, 80) and ds.default_model == "lstm" and ds.num_classes == 80
    assert len(ds.y_test) == 0


def test_hub_empty_name() -> None:
    with pytest.raises(ConfigError, match="hub dataset name is empty"):
        load_dataset("hub:")
