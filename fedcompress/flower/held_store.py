"""Where a client keeps the model it holds (the base of its next downlink delta).

In deployment a node holds one model: `context.state` is the place. In simulation one process keeps the
`context.state` of every virtual node, so N nodes that took part cost N models, although the broadcast downlink
(downlink.py) makes groups of them hold the very same model. So in simulation the model goes to a folder shared
by all nodes, one file per digest (`r<round>-<digest>.npz`, written once, atomically), and `context.state` keeps
only the digest and round. Files older than the downlink ring are removed: the server no longer sends deltas
against them. A file that is missing (removed, or a node on another machine of a Ray cluster) is reported as an
error, which the server repairs with a full model; never silently.

Run-config key `held-store`: "state", "auto" (the shared folder in simulation, `context.state` otherwise) or a
folder path. The simulation's folder is `<run-dir>/held-store` when the run has a run directory, so a resumed
run (a new run id) finds the models its clients held; the ServerApp removes it when the run completes.
"""

from __future__ import annotations

import os
import re
import tempfile
from collections import OrderedDict
from pathlib import Path

import numpy as np
from flwr.app import ConfigRecord, Context, MetricRecord

from fedcompress.flower.protocol import HELD, HELD_DIGEST, HELD_ROUND, NUM_PARTITIONS

Arrays = OrderedDict[str, np.ndarray]
_NAME = re.compile(r"^r(\d+)-([0-9a-f]+)\.npz$")


def store_dir(context: Context) -> Path | None:
    """The shared folder for held models, or None to keep them in `context.state`."""
    # a user's app with our mod has no such key: context.state, and no folder left behind for nobody to remove
    where = str(context.run_config.get("held-store", "state"))
    if where == "state":
        return None
    if where == "auto":
        if NUM_PARTITIONS not in context.node_config:  # deployment: one node per process tree
            return None
        return default_dir(context.run_config, context.run_id)
    return Path(where)


def default_dir(run_config: dict, run_id: int) -> Path:
    """The simulation's shared folder for one run: under the run directory (stable across a resume), else a
    temporary folder named by the run id. The ServerApp removes it when the run ends."""
    run_dir = str(run_config.get("run-dir", "") or "")
    if run_dir:
        return Path(run_dir) / "held-store"
    return Path(tempfile.gettempdir()) / f"fedcompress-held-{run_id}"


def keep(context: Context, arrays: Arrays, server_round: int, digest: str) -> None:
    """Remember that this node holds `arrays` (digest `digest`) since `server_round`."""
    from fedcompress.flower.records import numpy_to_record

    context.state[HELD_ROUND] = MetricRecord({"round": server_round})
    folder = store_dir(context)
    if folder is None:
        context.state[HELD] = numpy_to_record(arrays)
        return
    if HELD in context.state:
        del context.state[HELD]
    context.state[HELD_DIGEST] = ConfigRecord({"digest": digest})
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"r{server_round}-{digest}.npz"
    if not path.exists():
        tmp = folder / f".{os.getpid()}-{digest}.tmp.npz"
        names = np.array(list(arrays), dtype=np.str_)
        np.savez(tmp, names=names, **{f"t{i}": a for i, a in enumerate(arrays.values())})
        os.replace(tmp, path)
    _collect(folder, server_round - int(context.run_config.get("downlink-ring", 16)) - 1)


def load(context: Context) -> Arrays | None:
    """The model this node holds, or None if it holds none (or its file is gone)."""
    from fedcompress.flower.records import record_to_numpy

    if HELD in context.state:
        return record_to_numpy(context.state[HELD])
    if HELD_DIGEST not in context.state or HELD_ROUND not in context.state:
        return None
    folder = store_dir(context)
    if folder is None:
        return None
    digest = str(context.state[HELD_DIGEST]["digest"])
    path = folder / f"r{int(context.state[HELD_ROUND]['round'])}-{digest}.npz"
    if not path.exists():
        return None
    with np.load(path, allow_pickle=False) as z:
        return OrderedDict((str(k), z[f"t{i}"]) for i, k in enumerate(z["names"]))


def _collect(folder: Path, older_than: int) -> None:
    """Remove held models no delta will be sent against any more."""
    for f in folder.iterdir():
        m = _NAME.match(f.name)
        if m and int(m.group(1)) < older_than:
            f.unlink(missing_ok=True)
