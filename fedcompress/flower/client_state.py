"""A disk-backed, round-versioned store of each client's fedcompress state (error-feedback residual, held model).

In simulation `context.state` dies with the run; in deployment it lives on the device but runs ahead of a server
that was killed and resumed from an earlier round. Either way a resumed round r+1 must start every client from
the state it had at the end of round r. So after each train message a client writes its `fedcompress.*` state to
`<dir>/p<partition>/r<round>.npz` (atomically), and before each train message of round t it makes sure
`context.state` holds the latest version older than t: the one in memory if it is that version, else the one on
disk (or none). A version is kept until a newer one and the one before it exist: the server checkpoints round t-1
before it sends round t, so nothing older than the latest version before t is ever needed.

The folder is the node config's `state-dir` (deployment: a folder on the device), else `<run-dir>/client-state`
(simulation: the run directory). Off when the run does not checkpoint. Once written, the state leaves memory
(`evict`): the disk is the store, memory holds only the clients of the round in flight.
"""

from __future__ import annotations

import re
from pathlib import Path

from flwr.app import ConfigRecord, Context, Message, MetricRecord
from flwr.clientapp.typing import ClientAppCallable

from fedcompress.flower.protocol import (
    DTYPES,
    HELD,
    HELD_DIGEST,
    HELD_ROUND,
    PARTITION_ID,
    RESIDUAL,
    SERVER_ROUND,
    category,
)
from fedcompress.flower.statefile import load_state, recorddict_to_state, save_state, state_to_recorddict

KEYS = [
    RESIDUAL,
    HELD,
    HELD_DIGEST,
    HELD_ROUND,
    DTYPES,
    "fedcompress.pending-residual",
    "fedcompress.pending-round",
]
VERSION = "fedcompress.state-version"  # context.state: the round whose end the state in memory is
STATE_DIR = "state-dir"
_NAME = re.compile(r"^r(\d+)\.npz$")


def store_dir(context: Context) -> Path | None:
    """Where this node's versions go, or None when the run does not checkpoint."""
    if PARTITION_ID not in context.node_config:
        return None
    run = context.run_config
    if not bool(run.get("checkpoint", False)):
        return None
    if STATE_DIR in context.node_config:
        root = Path(str(context.node_config[STATE_DIR]))
    elif run.get("run-dir"):
        root = Path(str(run["run-dir"])) / "client-state"
    else:
        return None
    return root / f"p{int(context.node_config[PARTITION_ID])}"


def versions(folder: Path) -> list[int]:
    if not folder.exists():
        return []
    return sorted(int(m.group(1)) for f in folder.iterdir() if (m := _NAME.match(f.name)))


def restore(context: Context, folder: Path, server_round: int) -> None:
    """Make context.state the latest version before `server_round` (memory if it is that one, else disk)."""
    older = [v for v in versions(folder) if v < server_round]
    want = older[-1] if older else None
    have = int(context.state[VERSION]["round"]) if VERSION in context.state else None
    if have is not None and have == want:
        return
    for k in [*KEYS, VERSION]:
        if k in context.state:
            del context.state[k]
    if want is not None:
        arrays, meta = load_state(folder / f"r{want}.npz")
        state_to_recorddict(context.state, arrays, meta)
        context.state[VERSION] = MetricRecord({"round": want})


def save(context: Context, folder: Path, server_round: int) -> None:
    """Write the state at the end of `server_round`; drop versions older than the one before it."""
    arrays, meta = recorddict_to_state(context.state, KEYS)
    if not arrays and not meta and not versions(folder):
        return  # nothing ever to keep (identity codecs): no version is the same as empty ones, without the fsyncs
    save_state(folder / f"r{server_round}.npz", arrays, meta)
    context.state[VERSION] = MetricRecord({"round": server_round})
    older = [v for v in versions(folder) if v < server_round]
    for v in older[:-1]:
        (folder / f"r{v}.npz").unlink(missing_ok=True)


def state_store_mod(msg: Message, context: Context, call_next: ClientAppCallable) -> Message:
    """Outermost train mod: restore the right version before, save the new one after (also on failure)."""
    config = msg.content.get("config") if category(msg.metadata.message_type) == "train" else None
    folder = store_dir(context) if isinstance(config, ConfigRecord) else None
    if folder is None or not isinstance(config, ConfigRecord):
        return call_next(msg, context)
    server_round = int(config.get(SERVER_ROUND, 0))
    restore(context, folder, server_round)
    try:
        return call_next(msg, context)
    finally:
        save(context, folder, server_round)
        evict(context)


def evict(context: Context) -> None:
    """Drop the state from memory once it is on disk: a simulation keeps every node's `context.state` in one
    process, so memory would grow with every client that ever trained; now it holds one round's clients."""
    for k in [*KEYS, VERSION]:
        if k in context.state:
            del context.state[k]
