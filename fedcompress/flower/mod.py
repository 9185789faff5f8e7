"""The client half of compression, as a Flower mod around the ClientApp's train function.

Incoming: an encoded downlink delta is added to the model this node holds (kept in `context.state`, so it
survives between rounds in simulation and across per-message ClientApp processes in deployment), after checking
that the node's base model has the digest the server expects. Outgoing: the update `local - received` of every
float tensor is encoded with the uplink pipeline named in the round's config; integer/bool buffers and 0-d
tensors go exactly, and the train function's MetricRecord too, all in one frame under the model's key
(frame.py, payload.py: one record instead of four, ~500 B less a reply). What compression dropped stays in
`context.state` as error feedback.
Put it first in the mods list so later mods (clipping, local DP) still see float arrays.

A node speaks the protocol only if it also answers the capability query: `attach(app)` registers that handler
(a node without it is served plain fp32 arrays, or refused, as the server chooses).
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable

import numpy as np
from flwr.app import ConfigRecord, Context, Message, MetricRecord, RecordDict
from flwr.clientapp import ClientApp
from flwr.clientapp.typing import ClientAppCallable, Mod

from fedcompress.accel import device_for, to_device, to_numpy
from fedcompress.flower import held_store
from fedcompress.flower.frame import MAX_NAME, Frame, Metrics, foldable
from fedcompress.flower.payload import exact_of, frame_record, read_frame
from fedcompress.flower.protocol import (
    BASE_DIGEST,
    BASE_ROUND,
    DEFAULT_RECORD_KEY,
    DTYPES,
    HELD_ROUND,
    IDENTITY,
    NUM_PARTITIONS,
    PARTITION_ID,
    PROTOCOL,
    PROTOCOL_VERSION,
    QUERY_ACTION,
    QUERY_MESSAGE_TYPE,
    RECORD_KEY,
    RESIDUAL,
    SEED,
    SERVER_ROUND,
    UPLINK,
    category,
    mix,
)
from fedcompress.flower.records import arrays_digest, is_coded, numpy_to_record, record_spec, record_to_numpy

Arrays = OrderedDict[str, np.ndarray]
InitialModel = Callable[[Context, ConfigRecord], dict[str, np.ndarray]]


def make_compression_mod(initial_model: InitialModel | None = None) -> Mod:
    """A compression mod; `initial_model(context, config)` rebuilds the run's initial model for this node
    (round 0's downlink base; `config` is the round's ConfigRecord, which names e.g. the node's tier width)."""

    def compression_mod(msg: Message, context: Context, call_next: ClientAppCallable) -> Message:
        if msg.metadata.message_type == QUERY_MESSAGE_TYPE:  # the mod was installed app-wide
            return capabilities(msg, context)
        config = msg.content.get("config") if category(msg.metadata.message_type) == "train" else None
        if not isinstance(config, ConfigRecord):
            return call_next(msg, context)
        key = str(config.get(RECORD_KEY, DEFAULT_RECORD_KEY))
        if key not in msg.content:
            return call_next(msg, context)
        spec = str(config.get(UPLINK, IDENTITY))
        if spec == IDENTITY and BASE_ROUND not in config and read_frame(msg.content[key]) is None:
            return call_next(msg, context)  # nothing to decode, remember or encode: stay out of the way
        server_round = int(config.get(SERVER_ROUND, 0))
        received = _receive(msg, context, initial_model, key)
        reply = call_next(msg, context)
        if spec != IDENTITY and not reply.has_error():
            # the partition id, not the node id: simulation gives nodes new random ids every run
            who = int(context.node_config.get("partition-id", context.node_id))
            seed = mix(int(config.get(SEED, 0)), server_round, who, 2)
            _encode_reply(reply, context, spec, received, seed, key)
        return reply

    return compression_mod


compression_mod = make_compression_mod()


def capabilities(msg: Message, context: Context) -> Message:
    """Answer the server's capability query: the protocol version, and the partition and device profile this
    node declares in its node config (partition ids are stable; Flower's node ids are random)."""
    answer: dict[str, int | float | str | bool] = {PROTOCOL: PROTOCOL_VERSION}
    for k, v in context.node_config.items():
        if k in (PARTITION_ID, NUM_PARTITIONS) or str(k).startswith("device-"):
            answer[k] = int(v) if k in (PARTITION_ID, NUM_PARTITIONS) else v
    return Message(RecordDict({"config": ConfigRecord(answer)}), reply_to=msg)


def attach(app: ClientApp) -> ClientApp:
    """Register the capability query on a ClientApp (one line in a user's app; the train mod is separate)."""
    app.query(QUERY_ACTION)(capabilities)
    return app


def _receive(msg: Message, context: Context, initial_model: InitialModel | None, key: str) -> Arrays:
    """Rebuild the full model from a downlink delta when needed; returns what this node trains from."""
    config = msg.content["config"]
    record = msg.content[key]
    frame = read_frame(record)
    if frame is None:
        received = record_to_numpy(record)
        if BASE_ROUND in config:
            context.state[DTYPES] = ConfigRecord({k: d for k, (_, d) in record_spec(record).items()})
    else:
        from fedcompress.codecs import decode

        base = _base_model(context, config, initial_model)
        if arrays_digest(base) != str(config.get(BASE_DIGEST, "")):
            raise RuntimeError("downlink base model digest differs from the server's: cannot apply the delta")
        coded = {k: (v.shape, "float32") for k, v in base.items() if is_coded(k, v.shape, str(v.dtype))}
        delta = decode(
            frame.payload,
            expected=coded,
            max_output_bytes=4 * sum(int(np.prod(s)) for s, _ in coded.values()),
        )
        exact = {k: t.numpy() for k, t in frame.exact.items()}
        missing = [k for k in base if k not in coded and k not in exact]
        if missing:
            raise RuntimeError(f"downlink lacks the exact tensors {missing}")
        received = OrderedDict((k, base[k] + delta[k] if k in coded else exact[k]) for k in base)
        dtypes = context.state.get(DTYPES, {})  # DESIGN.md: read state through the RecordDict itself
        model = numpy_to_record(received, {k: ((), str(d)) for k, d in dtypes.items()})  # model dtypes
        # a new RecordDict, in the same order: replacing the frame's ConfigRecord in place makes Flower warn
        msg.content = RecordDict({k: model if k == key else v for k, v in msg.content.items()})
    if BASE_ROUND in config:  # the server tracks what this node holds: keep it
        held_store.keep(context, received, int(config.get(SERVER_ROUND, 0)), arrays_digest(received))
    return received


def _base_model(context: Context, config: ConfigRecord, initial_model: InitialModel | None) -> Arrays:
    base_round = int(config.get(BASE_ROUND, -1))
    held_round = int(context.state[HELD_ROUND]["round"]) if HELD_ROUND in context.state else None
    held = held_store.load(context) if held_round == base_round else None
    if held is not None:
        return held
    if base_round == 0 and initial_model is not None:
        return OrderedDict(
            (
                k,
                np.asarray(v, dtype=np.float32)
                if is_coded(k, np.shape(v), str(np.asarray(v).dtype))
                else np.asarray(v),
            )
            for k, v in initial_model(context, config).items()
        )
    missing = " (its model is gone from the held-model store)" if held_round == base_round else ""
    raise RuntimeError(
        f"downlink delta is against round {base_round}, but this node holds round {held_round}{missing}"
    )


def _encode_reply(reply: Message, context: Context, spec: str, received: Arrays, seed: int, key: str) -> None:
    from fedcompress.codecs import Pipeline

    if key not in reply.content:
        raise RuntimeError(f"the train reply has no ArrayRecord {key!r} to compress")
    record = reply.content[key]
    local = record_to_numpy(record)
    if set(local) != set(received):
        raise RuntimeError(
            f"the reply's tensors {sorted(local)} differ from the model received {sorted(received)}"
        )
    coded = [k for k, v in received.items() if is_coded(k, v.shape, str(v.dtype))]
    delta = OrderedDict((k, _f32(local[k]) - _f32(received[k])) for k in coded)
    state = record_to_numpy(context.state[RESIDUAL]) if RESIDUAL in context.state else None
    device = device_for(context.run_config)  # on a GPU: selection and quantization there, same bytes
    if device.type != "cpu":
        delta, state = to_device(delta, device), None if state is None else to_device(state, device)
    res = Pipeline.parse(spec).encode(delta, state=state, seed=seed)
    if res.state is not None:
        context.state[RESIDUAL] = numpy_to_record(to_numpy(res.state))
    exact = {k: exact_of(record[k]) for k in received if k not in delta}
    content = RecordDict({k: v for k, v in reply.content.items() if k != key})
    metrics = _fold_metrics(content)
    content[key] = frame_record(Frame(res.payload, int(res.metadata_bytes), exact, metrics))
    reply.content = content


def _fold_metrics(content: RecordDict) -> Metrics | None:
    """Take the reply's MetricRecord out into the frame (one record fewer on the wire), remembering its place;
    the server puts it back before any strategy sees the reply. Left where it is when it does not fit."""
    names = [k for k, v in content.items() if isinstance(v, MetricRecord)]
    if len(names) != 1:
        return None
    name = names[0]
    values = dict(content[name])
    position = list(content).index(name)
    too_long = any(len(k.encode()) > MAX_NAME for k in [name, *values])
    if position > 255 or too_long or not foldable(values):
        return None
    del content[name]
    return Metrics(name, position, values)


def _f32(a: np.ndarray) -> np.ndarray:
    return a if a.dtype == np.float32 else a.astype(np.float32)
