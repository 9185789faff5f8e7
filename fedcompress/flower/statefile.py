"""Atomic, pickle-free state files: named numpy arrays plus a JSON header in one `.npz`.

Checkpoints and the client state store both write through here: a temp file in the same folder, fsync, rename,
fsync of the folder, so a reader sees the old file or the new one, never half of one, even after SIGKILL or a
power cut. Loading never unpickles (`allow_pickle=False`).
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import tempfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
from flwr.app import Array, ArrayRecord, ConfigRecord, MetricRecord, RecordDict

from fedcompress.errors import RunError

META = "__meta__"


def write_atomic(path: Path, data: bytes) -> None:
    """Write `data` to `path` atomically and durably."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
    fsync_dir(path.parent)


def fsync_dir(folder: Path) -> None:
    with contextlib.suppress(OSError):
        fd = os.open(folder, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def save_state(path: Path, arrays: Mapping[str, np.ndarray], meta: dict[str, Any]) -> None:
    """Arrays and a JSON-able header, atomically (uncompressed: model tensors hardly compress)."""
    buf = io.BytesIO()
    header = np.frombuffer(
        json.dumps(meta).encode(), dtype=np.uint8
    )  # insertion order kept: it is meaningful
    np.savez(buf, **{META: header}, **{k: np.asarray(v) for k, v in arrays.items()})
    write_atomic(path, buf.getvalue())


def load_state(path: Path) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
    """What `save_state` wrote; a damaged file raises RunError naming it."""
    try:
        with np.load(path, allow_pickle=False) as z:
            arrays = {k: z[k] for k in z.files if k != META}
            meta = json.loads(bytes(z[META]).decode())
    except (OSError, ValueError, KeyError, json.JSONDecodeError) as err:
        raise RunError(f"state file {path} is unreadable: {err}") from None
    return arrays, meta


# ---- Flower records <-> (arrays, json), exactly (an Array keeps its dtype, shape, stype and raw bytes)
def record_to_state(record: ArrayRecord, prefix: str) -> tuple[dict[str, np.ndarray], list[list[Any]]]:
    arrays, index = {}, []
    for i, (name, a) in enumerate(record.items()):
        arrays[f"{prefix}/{i}"] = np.frombuffer(a.data, dtype=np.uint8)
        index.append([name, a.dtype, list(a.shape), a.stype])
    return arrays, index


def state_to_record(arrays: Mapping[str, np.ndarray], index: list[list[Any]], prefix: str) -> ArrayRecord:
    out = {}
    for i, (name, dtype, shape, stype) in enumerate(index):
        out[name] = Array(
            dtype=dtype, shape=tuple(shape), stype=stype, data=arrays[f"{prefix}/{i}"].tobytes()
        )
    return ArrayRecord(out)


def recorddict_to_state(rd: RecordDict, keys: list[str]) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
    """The entries `keys` of a RecordDict (context.state), as arrays and a JSON header."""
    arrays: dict[str, np.ndarray] = {}
    meta: dict[str, Any] = {}
    for n, k in enumerate(keys):
        if k not in rd:
            continue
        v = rd[k]
        if isinstance(v, ArrayRecord):
            a, index = record_to_state(v, f"r{n}")
            arrays.update(a)
            meta[k] = {"kind": "arrays", "index": index, "prefix": f"r{n}"}
        elif isinstance(v, (MetricRecord, ConfigRecord)):
            meta[k] = {"kind": type(v).__name__, "items": dict(v)}
    return arrays, meta


def state_to_recorddict(rd: RecordDict, arrays: Mapping[str, np.ndarray], meta: dict[str, Any]) -> None:
    for k, m in meta.items():
        if m["kind"] == "arrays":
            rd[k] = state_to_record(arrays, m["index"], m["prefix"])
        elif m["kind"] == "MetricRecord":
            rd[k] = MetricRecord(m["items"])
        else:
            rd[k] = ConfigRecord(m["items"])
