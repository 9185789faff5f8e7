"""Poisoned updates: a client mod that makes a seeded share of the clients attackers.

An attacker trains as usual, then replaces its update `local - received` before the compression mod encodes it,
so the poison travels through the same compressed pipeline (and error feedback) as honest updates:

- `sign-flip`: sends `-scale * update` (gradient ascent, amplified);
- `scale`: sends `scale * update` (model replacement / boosting);
- `random`: sends Gaussian noise with `scale` times the update's own standard deviation, per tensor.

Place it after the compression mod in the mods list (inside it): it sees the decoded model the client received
and the plain weights it trained. Which partitions attack is a pure function of (seed, share).
"""

from __future__ import annotations

from collections import OrderedDict

import numpy as np
from flwr.app import ConfigRecord, Context, Message, RecordDict
from flwr.clientapp.typing import ClientAppCallable

from fedcompress.flower.protocol import DEFAULT_RECORD_KEY, PARTITION_ID, RECORD_KEY, SERVER_ROUND, category
from fedcompress.flower.records import numpy_to_record, record_spec, record_to_numpy


def attackers(seed: int, num_partitions: int, fraction: float) -> set[int]:
    """The attacking partitions: round(fraction * n) of them, drawn with a seeded generator."""
    k = int(round(fraction * num_partitions))
    rng = np.random.default_rng([seed & 0xFFFFFFFF, 0xA77AC4])
    return {int(p) for p in rng.choice(num_partitions, size=k, replace=False)}


def poison(update: np.ndarray, kind: str, scale: float, rng: np.random.Generator) -> np.ndarray:
    if kind == "sign-flip":
        return (-scale * update).astype(update.dtype)
    if kind == "scale":
        return (scale * update).astype(update.dtype)
    if kind == "random":
        std = float(update.std()) or 1e-3
        return rng.normal(0.0, scale * std, size=update.shape).astype(update.dtype)
    raise ValueError(f"unknown attack {kind!r}")


def attack_mod(msg: Message, context: Context, call_next: ClientAppCallable) -> Message:
    """Poison this client's update if the run makes it an attacker (run-config `attack`, `attack-fraction`)."""
    run = context.run_config
    kind, share = str(run.get("attack", "none")), float(run.get("attack-fraction", 0.0))
    config = msg.content.get("config") if category(msg.metadata.message_type) == "train" else None
    if (
        kind == "none"
        or share <= 0
        or not isinstance(config, ConfigRecord)
        or PARTITION_ID not in context.node_config
    ):
        return call_next(msg, context)
    pid = int(context.node_config[PARTITION_ID])
    n = int(context.node_config.get("num-partitions", run.get("num-partitions", 1)))
    seed = int(run.get("seed", 0))
    if pid not in attackers(seed, n, share):
        return call_next(msg, context)
    key = str(config.get(RECORD_KEY, DEFAULT_RECORD_KEY))
    received = record_to_numpy(msg.content[key])
    reply = call_next(msg, context)
    if reply.has_error() or key not in reply.content:
        return reply
    local = reply.content[key]
    spec = record_spec(local)
    weights = record_to_numpy(local)
    rng = np.random.default_rng([seed & 0xFFFFFFFF, int(config.get(SERVER_ROUND, 0)), pid, 0xBAD])
    scale = float(run.get("attack-scale", 10.0))
    out = OrderedDict()
    for k, w in weights.items():
        if w.dtype.kind == "f" and w.ndim > 0:
            base = received[k].astype(w.dtype)
            out[k] = base + poison(w - base, kind, scale, rng)
        else:
            out[k] = w
    content = RecordDict({k: v for k, v in reply.content.items() if k != key})
    content[key] = numpy_to_record(out, spec)
    reply.content = content
    return reply
