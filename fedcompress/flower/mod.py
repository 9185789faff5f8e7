"""The client half of compression, as a Flower mod around the ClientApp's train function.

Incoming: an encoded downlink delta is added to the model this node holds (kept in `context.state`, so it
survives between rounds in simulation and across per-message ClientApp processes in deployment), after checking
that the node's base model has the digest the server expects. Outgoing: the update `local - received` is encoded
with the uplink pipeline named in the round's config; what compression dropped stays in `context.state` as error
feedback and is added to the next update. Put it first in the mods list so later mods (clipping, local DP) still
see float arrays.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable

import numpy as np
from flwr.app import ConfigRecord, Context, Message, MetricRecord, RecordDict
from flwr.clientapp.typing import ClientAppCallable, Mod

from fedcompress.flower.payload import payload_of, payload_record
from fedcompress.flower.records import arrays_digest, numpy_to_record, record_to_numpy
from fedcompress.flower.strategy import (
    BASE_DIGEST_KEY,
    BASE_ROUND_KEY,
    IDENTITY,
    METADATA_METRIC,
    SEED_KEY,
    UPLINK_KEY,
    _mix,
)

HELD = "fedcompress.held"  # the model this node last received (for downlink deltas)
HELD_ROUND = "fedcompress.held-round"
RESIDUAL = "fedcompress.residual"  # error-feedback memory for the uplink

Arrays = OrderedDict[str, np.ndarray]
InitialModel = Callable[[Context, ConfigRecord], dict[str, np.ndarray]]


def make_compression_mod(initial_model: InitialModel | None = None) -> Mod:
    """A compression mod; `initial_model(context, config)` rebuilds the run's initial model for this node
    (round 0's downlink base; `config` is the round's ConfigRecord, which names e.g. the node's tier width)."""

    def compression_mod(msg: Message, context: Context, call_next: ClientAppCallable) -> Message:
        if msg.metadata.message_type != "train" or "arrays" not in msg.content:
            return call_next(msg, context)
        config = msg.content["config"]
        spec = str(config.get(UPLINK_KEY, IDENTITY))
        plain = (
            spec == IDENTITY and BASE_ROUND_KEY not in config and payload_of(msg.content["arrays"]) is None
        )
        if plain:  # nothing to decode, remember or encode: stay out of the way
            return call_next(msg, context)
        server_round = int(config.get("server-round", 0))
        received = _receive(msg, context, initial_model)
        reply = call_next(msg, context)
        if spec != IDENTITY and not reply.has_error():
            seed = _mix(int(config.get(SEED_KEY, 0)), server_round, context.node_id, 2)
            _encode_reply(reply, context, spec, received, seed)
        return reply

    return compression_mod


compression_mod = make_compression_mod()


def _receive(msg: Message, context: Context, initial_model: InitialModel | None) -> Arrays:
    """Rebuild the full model from a downlink delta when needed; returns what this node trains from."""
    config = msg.content["config"]
    record = msg.content["arrays"]
    payload = payload_of(record)
    if payload is None:
        received = record_to_numpy(record)
    else:
        from fedcompress.codecs import decode

        base = _base_model(context, config, initial_model)
        if arrays_digest(base) != str(config.get(BASE_DIGEST_KEY, "")):
            raise RuntimeError("downlink base model digest differs from the server's: cannot apply the delta")
        expected = {k: (v.shape, "float32") for k, v in base.items()}
        delta = decode(payload, expected=expected, max_output_bytes=4 * sum(v.size for v in base.values()))
        received = OrderedDict((k, base[k] + delta[k]) for k in base)
        msg.content["arrays"] = numpy_to_record(received)
    if BASE_ROUND_KEY in config:  # the server tracks what this node holds: keep it
        context.state[HELD] = numpy_to_record(received)
        context.state[HELD_ROUND] = MetricRecord({"round": int(config.get("server-round", 0))})
    return received


def _base_model(context: Context, config: ConfigRecord, initial_model: InitialModel | None) -> Arrays:
    base_round = int(config.get(BASE_ROUND_KEY, -1))
    held_round = int(context.state[HELD_ROUND]["round"]) if HELD_ROUND in context.state else None
    if held_round == base_round and HELD in context.state:
        return record_to_numpy(context.state[HELD])
    if base_round == 0 and initial_model is not None:
        return OrderedDict(
            (k, np.asarray(v, dtype=np.float32)) for k, v in initial_model(context, config).items()
        )
    raise RuntimeError(
        f"downlink delta is against round {base_round}, but this node holds round {held_round}"
    )


def _encode_reply(reply: Message, context: Context, spec: str, received: Arrays, seed: int) -> None:
    from fedcompress.codecs import Pipeline

    local = record_to_numpy(reply.content["arrays"])
    delta = OrderedDict((k, local[k] - received[k]) for k in received)
    state = record_to_numpy(context.state[RESIDUAL]) if RESIDUAL in context.state else None
    res = Pipeline.parse(spec).encode(delta, state=state, seed=seed)
    if res.state is not None:
        context.state[RESIDUAL] = numpy_to_record(res.state)
    content = RecordDict({k: v for k, v in reply.content.items() if k != "arrays"})
    content["arrays"] = payload_record(res.payload)
    metrics = content.get("metrics")
    if isinstance(metrics, MetricRecord):
        metrics[METADATA_METRIC] = int(res.metadata_bytes)
    reply.content = content
