"""Image-folder datasets (``split/<class>/<file>.jpg``), read from folders or straight from tarballs.

Decoding 60k small JPEGs costs a few seconds, so the decoded uint8 arrays are cached as ``.npz`` in the cache
dir (keyed by the sources' path/size/mtime); later loads are a plain file read. Decoding runs one image at a
time into a preallocated array (PIL has no batch decoder; threads were slower here because 32x32 decodes are
too short to amortise the GIL hand-off); everything around it (labels, splits, ordering) is vectorised.
"""

from __future__ import annotations

import io
import tarfile
from collections.abc import Iterator
from pathlib import Path

import numpy as np

from fedcompress.data.base import (
    FederatedDataset,
    as_labels,
    file_key,
    load_or_build_arrays,
    normalise_images,
    require_path,
)
from fedcompress.data.digits import stratified_test_mask
from fedcompress.errors import ConfigError

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".gif", ".webp")
TAR_SUFFIXES = (".tar", ".tar.gz", ".tgz", ".tar.xz", ".tar.bz2")
CIFAR10_FILES = ("cifar10_jpg/cifar10_train_jpg_q75.tar.gz", "cifar10_jpg/cifar10_test_jpg_q75.tar.gz")
CIFAR10_CLASSES = ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck")
LAYOUT = "image files at [<split>/]<class>/<name>.jpg with split in {train, test}"


def _is_tar(path: Path) -> bool:
    return path.is_file() and path.name.endswith(TAR_SUFFIXES)


def _iter_files(source: Path) -> Iterator[tuple[str, bytes]]:
    """(relative path, encoded bytes) of every image file in a folder or tarball."""
    if source.is_dir():
        for p in source.rglob("*"):
            if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file():
                yield p.relative_to(source).as_posix(), p.read_bytes()
        return
    try:
        with tarfile.open(source) as tf:
            for m in tf:
                if m.isfile() and Path(m.name).suffix.lower() in IMAGE_SUFFIXES:
                    f = tf.extractfile(m)
                    assert f is not None
                    yield m.name, f.read()
    except (OSError, tarfile.TarError, EOFError) as exc:
        raise ConfigError(f"'{source}': cannot read tarball ({exc}); expected {LAYOUT}") from exc


def _jpeg_size(blob: bytes) -> tuple[int, int, int] | None:
    """(height, width, components) from a baseline/progressive JPEG's SOF header, or None if not found."""
    if not blob.startswith(b"\xff\xd8"):
        return None
    for marker in (b"\xff\xc0", b"\xff\xc2", b"\xff\xc1"):
        pos = blob.find(marker)
        if pos >= 0 and pos + 10 <= len(blob):
            return (
                int.from_bytes(blob[pos + 5 : pos + 7], "big"),
                int.from_bytes(blob[pos + 7 : pos + 9], "big"),
                blob[pos + 9],
            )
    return None


def _decode_one(blob: bytes, name: str, source: Path) -> np.ndarray:
    """Any PIL-readable image as uint8 RGB ``(H, W, 3)`` (the general, slower path)."""
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(io.BytesIO(blob)) as im:
            return np.asarray(im.convert("RGB"))
    except (UnidentifiedImageError, OSError) as exc:
        raise ConfigError(f"'{source}': cannot decode image '{name}' ({exc}); expected {LAYOUT}") from exc


def decode_images(blobs: list[bytes], names: list[str], source: Path) -> np.ndarray:
    """Decode to one uint8 ``(N, H, W, 3)`` array; all images must share the first image's size.

    Colour JPEGs of that size skip PIL's Python-level header parsing (``Image.frombytes`` with the jpeg
    decoder, 3x faster, identical pixels); anything else goes through ``Image.open``.
    """
    from PIL import Image

    if not blobs:
        return np.empty((0, 0, 0, 3), np.uint8)
    first = _decode_one(blobs[0], names[0], source)
    height, width = first.shape[:2]
    out = np.empty((len(blobs), height, width, 3), dtype=np.uint8)
    for i, (blob, name) in enumerate(zip(blobs, names, strict=True)):
        if _jpeg_size(blob) == (height, width, 3):
            try:
                out[i] = Image.frombytes("RGB", (width, height), blob, "jpeg", "RGB", "")
                continue
            except (OSError, ValueError):
                pass  # damaged or unusual JPEG: let the general path decode it or report it
        arr = _decode_one(blob, name, source)
        if arr.shape != out.shape[1:]:
            raise ConfigError(
                f"'{source}': image '{name}' is {arr.shape[:2]}, the first was {(height, width)}; "
                "expected images of one size (resize them first)"
            )
        out[i] = arr
    return out


def read_image_folder(sources: list[Path], classes: tuple[str, ...] | None = None) -> dict[str, np.ndarray]:
    """Decode every image under ``sources`` into uint8 HWC arrays plus labels and a split code.

    Class ids follow ``classes`` when given, else the sorted class-folder names; files are ordered by path so
    the result does not depend on tar or directory order. ``split``: 0 train, 1 test, -1 none given.
    """
    names: list[str] = []
    blobs: list[bytes] = []
    for src in sources:
        for name, blob in _iter_files(src):
            names.append(name)
            blobs.append(blob)
    if not names:
        raise ConfigError(f"no images found in {[str(s) for s in sources]}; expected {LAYOUT}")
    order = np.argsort(np.array(names))
    names = [names[i] for i in order]
    blobs = [blobs[i] for i in order]
    parts = [Path(n).parts for n in names]
    if any(len(p) < 2 for p in parts):
        raise ConfigError(f"{[str(s) for s in sources]}: images outside class folders; expected {LAYOUT}")
    class_names = np.array([p[-2] for p in parts])
    split_names = np.array([p[-3] if len(p) >= 3 else "" for p in parts])
    known = tuple(classes) if classes is not None else tuple(np.unique(class_names).tolist())
    lookup = {c: i for i, c in enumerate(known)}
    unknown = sorted(set(np.unique(class_names).tolist()) - set(lookup))
    if unknown:
        raise ConfigError(
            f"{[str(s) for s in sources]}: unexpected class folders {unknown[:5]}; expected {known}"
        )
    labels = np.vectorize(lookup.__getitem__, otypes=[np.int64])(class_names)
    split = np.select([split_names == "train", np.isin(split_names, ["test", "val", "valid"])], [0, 1], -1)
    x = decode_images(blobs, names, sources[0])
    return {"x": x, "y": labels, "split": split.astype(np.int8), "classes": np.array(known)}


def _to_dataset(name: str, a: dict[str, np.ndarray]) -> FederatedDataset:
    """Split (given split folders, else a fixed stratified 20% test), to NCHW float32 standardised."""
    y, split = as_labels(a["y"]), a["split"]
    if (split >= 0).all() and (split == 0).any() and (split == 1).any():
        test = split == 1
    else:
        test = stratified_test_mask(y, 0.2, 0)
    x = a["x"].transpose(0, 3, 1, 2)
    x_train, x_test = normalise_images(x[~test], x[test])
    size = x.shape[-1]
    model = {8: "cnn8", 28: "cnn28"}.get(size, "cnn32")
    return FederatedDataset(name, x_train, y[~test], x_test, y[test], len(a["classes"]), None, model)


def load_cifar10(data_dir: Path) -> FederatedDataset:
    """CIFAR-10 from the two JPEG tarballs (50k/10k, 32x32 RGB, standard class order); decoded once, cached.

    ``data_dir``: the data root, the ``cifar10_jpg`` folder, or one tarball (then a fixed 20% is held out).
    """
    if _is_tar(data_dir):
        sources = [data_dir]
    elif (data_dir / CIFAR10_FILES[0]).exists():
        sources = [data_dir / f for f in CIFAR10_FILES]
    else:
        sources = [data_dir / Path(f).name for f in CIFAR10_FILES]
    for s in sources:
        require_path(s, "CIFAR-10 JPEG tarball")
    arrays = load_or_build_arrays(
        "cifar10", file_key(*sources), lambda: read_image_folder(sources, CIFAR10_CLASSES)
    )
    return _to_dataset("cifar10", arrays)


def load_imagefolder(data_dir: Path) -> FederatedDataset:
    """Generic: ``data_dir`` is a folder or tarball (or a folder of tarballs) of ``[split/]class/file``."""
    require_path(data_dir, "image folder")
    if data_dir.is_dir():
        tars = sorted(p for p in data_dir.iterdir() if _is_tar(p))
        sources = tars or [data_dir]
    else:
        sources = [data_dir]
    arrays = load_or_build_arrays("imagefolder", file_key(*sources), lambda: read_image_folder(sources))
    return _to_dataset("imagefolder", arrays)
