"""`FedCompress`: a strategy wrapper that compresses the downlink, decodes the uplink, samples with a seed and
measures every byte, then delegates to any inner Flower strategy (FedAvg, FedProx, FedAdam, Krum, DP wrappers...).

It holds the inner strategy and delegates, as Flower's differential-privacy wrappers do. The inner strategy sees
what it expects: plain float ArrayRecords holding full model weights, one reply per client, in a fixed order.
"""

from __future__ import annotations

import logging
from collections import OrderedDict
from collections.abc import Callable, Iterable
from dataclasses import replace

import numpy as np
from flwr.app import Array, ArrayRecord, ConfigRecord, Message, MetricRecord, RecordDict
from flwr.serverapp import Grid
from flwr.serverapp.strategy import Strategy

from fedcompress.flower.payload import array_data_bytes, payload_of, payload_record, raw_nbytes
from fedcompress.flower.records import arrays_digest, measuring, numpy_to_record, record_to_numpy, wire_bytes
from fedcompress.flower.sampling import NodesView, sample_partitions
from fedcompress.ledger import Ledger, Transfer

log = logging.getLogger("fedcompress")

UPLINK_KEY = "fedcompress.uplink"
BASE_ROUND_KEY = "fedcompress.base-round"
BASE_DIGEST_KEY = "fedcompress.base-digest"
SEED_KEY = "fedcompress.seed"
METADATA_METRIC = "fedcompress.metadata-bytes"
WIDTH_KEY = "fedcompress.width"
IDENTITY = "identity"

Arrays = OrderedDict[str, np.ndarray]


def _pipeline(spec: str):  # noqa: ANN202 - imported lazily: the identity path needs no codec module
    from fedcompress.codecs import Pipeline

    return Pipeline.parse(spec)


class FedCompress(Strategy):
    """Compress both directions around an inner strategy.

    Downlink: a client that holds an earlier model (the server tracks exactly what each client reconstructed)
    gets `global - held` through the downlink pipeline; a client that holds none gets the full fp32 model, unless
    `shared_initial` is given: the initial model every client rebuilds by itself from the run's seed, which then
    serves as round 0's base (the client checks its digest and reports an error if it differs; that client then
    gets full models).
    Tracking the reconstruction makes the downlink self-correcting: what one round dropped is in the next delta.
    Uplink: clients send `local - received` through the uplink pipeline (their client mod keeps error feedback);
    the server rebuilds `received + delta`. Payloads that fail validation are rejected, logged with the client's
    partition id and reason, counted in the round's metrics, and left out of aggregation.
    """

    def __init__(
        self,
        inner: Strategy,
        *,
        partitions: dict[int, int],
        clients_per_round: int,
        seed: int = 0,
        uplink: str = IDENTITY,
        downlink: str = IDENTITY,
        ledger: Ledger | None = None,
        arrayrecord_key: str = "arrays",
        on_reject: Callable[[int, int, str], None] | None = None,
        shared_initial: Arrays | None = None,
        tier: str = "",
    ) -> None:
        self.inner = inner
        self.tier = tier  # the device tier these clients belong to ("" when the run has one model)
        self.partitions = dict(partitions)
        self.partition_of = {node: pid for pid, node in self.partitions.items()}
        self.clients_per_round = clients_per_round
        self.seed = seed
        self.uplink_spec = uplink
        self.downlink_spec = downlink
        self.uplink = None if uplink == IDENTITY else _pipeline(uplink)
        self.downlink = None if downlink == IDENTITY else _pipeline(downlink)
        self.tracks_models = self.uplink is not None or self.downlink is not None
        self.ledger = ledger or Ledger()
        self.key = arrayrecord_key
        self.on_reject = on_reject
        self.held: dict[int, tuple[int, Arrays]] = {}  # pid -> (round, model the client holds)
        self.shared_initial = _float32(shared_initial) if shared_initial is not None else None
        self.no_shared_base: set[int] = set()  # clients that could not rebuild the shared initial model
        self.received: dict[int, Arrays] = {}  # pid -> model the client starts this round's training from
        self.rejections: dict[int, int] = {}
        self.train_metrics: dict[int, MetricRecord | None] = {}
        self._shapes: dict[str, tuple[tuple[int, ...], str]] = {}

    # ------------------------------------------------------------------ train
    def configure_train(
        self, server_round: int, arrays: ArrayRecord, config: ConfigRecord, grid: Grid
    ) -> Iterable[Message]:
        pids = sample_partitions(self.seed, server_round, list(self.partitions), self.clients_per_round)
        view = NodesView(grid, [self.partitions[p] for p in pids])
        config[UPLINK_KEY] = self.uplink_spec
        config[SEED_KEY] = self.seed
        messages = list(self.inner.configure_train(server_round, arrays, config, view))  # type: ignore[arg-type]
        global_np = _float32(record_to_numpy(arrays)) if self.tracks_models else None
        self._shapes = {k: (tuple(a.shape), "float32") for k, a in arrays.items()}
        self.received.clear()
        with measuring():  # messages share their model: hash it once
            out = [self._downlink_message(server_round, msg, global_np) for msg in messages]
        return out

    def _downlink_message(self, server_round: int, msg: Message, global_np: Arrays | None) -> Message:
        """The message for one client, recorded in the ledger."""
        node = msg.metadata.dst_node_id
        pid = self.partition_of[node]
        content, codec, enc_bytes, meta_bytes = self._downlink_content(
            server_round, pid, msg.content, global_np
        )
        new = Message(content=content, message_type=msg.metadata.message_type, dst_node_id=node)
        payload = content[self.key]
        self.ledger.record(
            Transfer(
                round=server_round,
                partition_id=pid,
                node_id=node,
                direction="downlink",
                message_bytes=wire_bytes(new),
                payload_bytes=wire_bytes(payload),
                raw_bytes=raw_nbytes(global_np) if global_np is not None else 4 * _numel(payload),
                encoded_bytes=enc_bytes if enc_bytes is not None else array_data_bytes(payload),
                metadata_bytes=meta_bytes,
                codec=codec,
                tier=self.tier,
            )
        )
        return new

    def _downlink_content(
        self, server_round: int, pid: int, content: RecordDict, global_np: Arrays | None
    ) -> tuple[RecordDict, str, int | None, int]:
        """This client's copy of the message: compressed delta if it holds a model, full model otherwise."""
        if (
            global_np is None
        ):  # nothing to compress or remember: the message goes as the inner strategy built it
            return content, IDENTITY, None, 0
        config = ConfigRecord(dict(content["config"]))
        held = self.held.get(pid)
        if held is None and self.shared_initial is not None and pid not in self.no_shared_base:
            held = (0, self.shared_initial)
        if self.downlink is None or held is None:
            received, record, codec, enc, meta = global_np, content[self.key], IDENTITY, None, 0
            if self.downlink is not None:
                config[BASE_ROUND_KEY] = -1  # tells the client to keep what it receives for later deltas
        else:
            base_round, base = held
            delta = OrderedDict((k, global_np[k] - base[k]) for k in global_np)
            res = self.downlink.encode(delta, seed=_mix(self.seed, server_round, pid, 1))
            decoded = _decode(res.payload, self._shapes)
            received = OrderedDict((k, base[k] + decoded[k]) for k in base)
            record, codec, enc, meta = (
                payload_record(res.payload),
                self.downlink_spec,
                len(res.payload),
                res.metadata_bytes,
            )
            config[BASE_ROUND_KEY] = base_round
            config[BASE_DIGEST_KEY] = arrays_digest(base)
        if self.downlink is not None:
            self.held[pid] = (server_round, received)
        self.received[pid] = received
        extra = {k: v for k, v in content.items() if k not in (self.key, "config")}
        return RecordDict({self.key: record, "config": config, **extra}), codec, enc, meta

    def aggregate_train(
        self, server_round: int, replies: Iterable[Message]
    ) -> tuple[ArrayRecord | None, MetricRecord | None]:
        arrays, metrics = self.inner.aggregate_train(server_round, self.decode_replies(server_round, replies))
        self.train_metrics[server_round] = metrics
        return arrays, metrics

    def decode_replies(self, server_round: int, replies: Iterable[Message]) -> list[Message]:
        """Measure every reply, turn encoded updates into full weights, and drop (and count) bad ones.

        Returns the accepted replies in partition order, as the inner strategy receives them.
        """
        replies = sorted(replies, key=lambda m: self.partition_of.get(m.metadata.src_node_id, -1))
        accepted: list[Message] = []
        for reply in replies:
            node = reply.metadata.src_node_id
            pid = self.partition_of.get(node, -1)
            measured = self._measure_uplink(
                server_round, pid, node, reply
            )  # before decoding replaces the payload
            reason = ""
            if reply.has_error():
                reason = f"client error: {reply.error.reason}"
                self.held.pop(pid, None)  # it may not hold what we think: send it the full model next time
                self.no_shared_base.add(pid)
            else:
                try:
                    self._decode_reply(pid, reply)
                except ValueError as err:  # PayloadError is a ValueError
                    reason = f"rejected payload: {err}"
            self.ledger.record(replace(measured, rejected=reason))
            if reason:
                self.rejections[server_round] = self.rejections.get(server_round, 0) + 1
                log.warning("round %d: client partition %d: %s", server_round, pid, reason)
                if self.on_reject:
                    self.on_reject(server_round, pid, reason)
            else:
                accepted.append(reply)
        self._forget_silent(replies)
        return accepted

    def _forget_silent(self, replies: list[Message]) -> None:
        """A partition sent a model this round that did not answer itself (it died or restarted, or the SuperLink
        answered NODE_UNAVAILABLE for it, an error reply that names no partition) may or may not hold what we
        sent: forget what it holds, so its next downlink is the full model instead of an unusable delta. (A node
        whose payload was rejected did receive its model: it keeps it.)"""
        answered = {self.partition_of.get(m.metadata.src_node_id, -1) for m in replies if not m.has_error()}
        for pid in set(self.received) - answered:
            self.held.pop(pid, None)
            self.no_shared_base.add(pid)

    def _decode_reply(self, pid: int, reply: Message) -> None:
        """Replace an encoded update by the full weights the inner strategy expects (received + delta)."""
        record = reply.content[self.key]
        payload = payload_of(record)
        if payload is None:
            if self.uplink is not None:
                raise ValueError(f"expected an encoded payload ({self.uplink_spec}), got plain arrays")
            self._check_plain(record)
            return
        if self.uplink is None:
            raise ValueError("got an encoded payload but the uplink is configured as identity")
        if pid not in self.received:
            raise ValueError(f"no model was sent to partition {pid} this round")
        delta = _decode(payload, self._shapes)
        base = self.received[pid]
        full = OrderedDict((k, base[k] + delta[k]) for k in base)
        content = RecordDict({k: v for k, v in reply.content.items() if k != self.key})
        content[self.key] = numpy_to_record(full)
        reply.content = content

    def _check_plain(self, record: ArrayRecord) -> None:
        """Plain float arrays must match the model and be finite (checked on the wire bytes, without copies)."""
        got = {k: tuple(a.shape) for k, a in record.items()}
        want = {k: tuple(s) for k, (s, _) in self._shapes.items()}
        if got != want:
            raise ValueError(f"arrays disagree with the model: got {got}, expected {want}")
        for k, a in record.items():
            if not _finite(a):
                raise ValueError(f"tensor {k!r} holds NaN or Inf")

    def _measure_uplink(self, server_round: int, pid: int, node: int, reply: Message) -> Transfer:
        has_arrays = not reply.has_error() and self.key in reply.content
        payload = reply.content[self.key] if has_arrays else None
        raw = (
            raw_nbytes(self.received[pid])
            if pid in self.received
            else (4 * _numel(payload) if payload else 0)
        )
        return Transfer(
            round=server_round,
            partition_id=pid,
            node_id=node,
            direction="uplink",
            message_bytes=wire_bytes(reply),
            payload_bytes=wire_bytes(payload) if payload is not None else 0,
            raw_bytes=raw,
            encoded_bytes=array_data_bytes(payload) if payload is not None else 0,
            metadata_bytes=self._reported_metadata(reply),
            codec=self.uplink_spec,
            tier=self.tier,
        )

    @staticmethod
    def _reported_metadata(reply: Message) -> int:
        """Metadata bytes of the payload as the client's codec accounted them (0 for plain arrays)."""
        metrics = None if reply.has_error() else reply.content.get("metrics")
        return int(metrics.get(METADATA_METRIC, 0)) if isinstance(metrics, MetricRecord) else 0

    # --------------------------------------------------------------- evaluate
    def configure_evaluate(
        self, server_round: int, arrays: ArrayRecord, config: ConfigRecord, grid: Grid
    ) -> Iterable[Message]:
        return self.inner.configure_evaluate(server_round, arrays, config, grid)

    def aggregate_evaluate(self, server_round: int, replies: Iterable[Message]) -> MetricRecord | None:
        return self.inner.aggregate_evaluate(server_round, replies)

    def summary(self) -> None:
        log.info("FedCompress(uplink=%s, downlink=%s) around:", self.uplink_spec, self.downlink_spec)
        self.inner.summary()


def _decode(payload: bytes, shapes: dict[str, tuple[tuple[int, ...], str]]) -> Arrays:
    from fedcompress.codecs import decode

    return OrderedDict(
        decode(
            payload, expected=shapes, max_output_bytes=4 * sum(int(np.prod(s)) for s, _ in shapes.values())
        )
    )


def _float32(arrays: Arrays) -> Arrays:
    """Server strategies such as FedAdam aggregate in float64; models and codecs work in float32."""
    return OrderedDict((k, v.astype(np.float32, copy=False)) for k, v in arrays.items())


def _finite(array: Array) -> bool:
    """All values finite, read in place from the serialized array (its raw data ends the buffer)."""
    dtype = np.dtype(array.dtype)
    if dtype.kind != "f":
        return True
    nbytes = int(np.prod(array.shape)) * dtype.itemsize
    data = memoryview(array.data)
    if nbytes > len(data):
        raise ValueError(f"array holds {len(data)} bytes, fewer than its shape needs ({nbytes})")
    return bool(np.isfinite(np.frombuffer(data[len(data) - nbytes :], dtype=dtype)).all())


def _numel(record: ArrayRecord) -> int:
    return sum(int(np.prod(a.shape)) for a in record.values())


def _mix(*parts: int) -> int:
    """A seed from several integers (numpy's SeedSequence mixes them well)."""
    return int(np.random.SeedSequence([p & 0xFFFFFFFF for p in parts]).generate_state(1)[0])
