"""Failing and slow clients: seeded fault injection on the client, and keeping error feedback consistent when an
update never reaches the model.

`fault_mod` (client): with `fail-prob` a sampled client trains, then fails (an exception: Flower turns it into an
error reply) with its fedcompress state put back as it was before the round; with `straggler-prob` it replies
`straggler-delay` seconds late (past the server's `round-timeout`, its reply is dropped). Which client faults in
which round is a pure function of (seed, round, partition), so a resumed run injects the same faults.

`delivery_mod` (client): error feedback assumes the server applied what was sent. The server tells each client,
in the train config, the last round whose update from it was aggregated (`fedcompress.applied-round`); a client
whose previous update was not (timed out, rejected, or its round kept the previous model) puts it back into its
residual: everything not applied stays in error-feedback memory, as if compression had dropped it.
"""

from __future__ import annotations

import time

import numpy as np
from flwr.app import ConfigRecord, Context, Message, MetricRecord
from flwr.clientapp.typing import ClientAppCallable

from fedcompress.flower.payload import payload_of
from fedcompress.flower.protocol import (
    APPLIED_ROUND,
    DEFAULT_RECORD_KEY,
    PARTITION_ID,
    RECORD_KEY,
    RESIDUAL,
    SERVER_ROUND,
    category,
)
from fedcompress.flower.records import numpy_to_record, record_to_numpy

PENDING = (
    "fedcompress.pending-residual"  # context.state: residual + what was sent (the residual if it is lost)
)
PENDING_ROUND = "fedcompress.pending-round"
STATE_KEYS = (PENDING, PENDING_ROUND)


class InjectedFault(RuntimeError):
    """A failure the run's fault injection asked for."""


def fault_of(seed: int, server_round: int, pid: int, fail_prob: float, straggler_prob: float) -> str:
    """'fail', 'straggle' or '' for this client in this round (seeded, independent of everything else)."""
    u = np.random.default_rng([seed & 0xFFFFFFFF, server_round, pid, 0xFA17]).random(2)
    if u[0] < fail_prob:
        return "fail"
    if u[1] < straggler_prob:
        return "straggle"
    return ""


def _train_config(msg: Message) -> ConfigRecord | None:
    config = msg.content.get("config") if category(msg.metadata.message_type) == "train" else None
    return config if isinstance(config, ConfigRecord) else None


def fault_mod(msg: Message, context: Context, call_next: ClientAppCallable) -> Message:
    """Inject the run's failures and stragglers (run-config `fail-prob`, `straggler-prob`, `straggler-delay`)."""
    config = _train_config(msg)
    run = context.run_config
    fail_p, slow_p = float(run.get("fail-prob", 0.0)), float(run.get("straggler-prob", 0.0))
    if config is None or (fail_p == 0 and slow_p == 0) or PARTITION_ID not in context.node_config:
        return call_next(msg, context)
    rnd, pid = int(config.get(SERVER_ROUND, 0)), int(context.node_config[PARTITION_ID])
    kind = fault_of(int(run.get("seed", 0)), rnd, pid, fail_p, slow_p)
    if kind == "fail":
        before = {k: context.state[k] for k in list(context.state.keys())}
        call_next(msg, context)  # fails mid-round: after training, before its reply leaves
        for k in list(context.state.keys()):
            del context.state[k]
        for k, v in before.items():
            context.state[k] = v
        raise InjectedFault(f"injected failure of partition {pid} in round {rnd} (fail-prob {fail_p})")
    reply = call_next(msg, context)
    if kind == "straggle":
        time.sleep(float(run.get("straggler-delay", 0.0)))
    return reply


def delivery_mod(msg: Message, context: Context, call_next: ClientAppCallable) -> Message:
    """Keep the error-feedback residual consistent with what the server applied (see the module doc)."""
    config = _train_config(msg)
    if config is None or APPLIED_ROUND not in config:
        return call_next(msg, context)
    rnd = int(config.get(SERVER_ROUND, 0))
    if PENDING_ROUND in context.state:
        sent = int(context.state[PENDING_ROUND]["round"])
        if sent > int(config[APPLIED_ROUND]) and sent < rnd:  # our last update never reached the model
            context.state[RESIDUAL] = context.state[PENDING]
        del context.state[PENDING_ROUND]
        del context.state[PENDING]
    reply = call_next(msg, context)
    key = str(config.get(RECORD_KEY, DEFAULT_RECORD_KEY))
    record = None if reply.has_error() else reply.content.get(key)
    payload = payload_of(record) if record is not None else None
    if payload is not None and RESIDUAL in context.state:
        from fedcompress.codecs import decode

        residual = record_to_numpy(context.state[RESIDUAL])
        expected = {k: (v.shape, "float32") for k, v in residual.items()}
        sent_delta = decode(
            payload, expected=expected, max_output_bytes=4 * sum(v.size for v in residual.values())
        )
        context.state[PENDING] = numpy_to_record({k: residual[k] + sent_delta[k] for k in residual})
        context.state[PENDING_ROUND] = MetricRecord({"round": rnd})
    return reply
