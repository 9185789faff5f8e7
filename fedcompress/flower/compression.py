"""`Compression`: a strategy wrapper with one concern, the codecs. It compresses the downlink (tracking exactly
what each client reconstructed), decodes and validates the uplink, and gives the inner strategy what it
expects: plain float ArrayRecords holding full model weights.

Every tensor of the model's state travels: float tensors through the codecs (as float32 deltas), integer and
bool buffers and 0-d tensors exactly, both in one frame (frame.py; a reply's frame also carries its metrics,
put back before the inner strategy sees it); what is sent is cast back to the model's own dtypes (fp16, bf16,
int64...), whatever dtype the inner strategy aggregated in. Nodes without the fedcompress mod (`plain`) get and
send plain arrays.
"""

from __future__ import annotations

import logging
from collections import OrderedDict
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass

import numpy as np
from flwr.app import Array, ArrayRecord, ConfigRecord, Message, MetricRecord, RecordDict
from flwr.serverapp import Grid
from flwr.serverapp.strategy import Strategy

from fedcompress.errors import PayloadError
from fedcompress.flower.downlink import HeldModels
from fedcompress.flower.frame import Exact, Frame
from fedcompress.flower.measurement import Note, Notes
from fedcompress.flower.payload import payload_record, raw_nbytes
from fedcompress.flower.protocol import (
    APPLIED_ROUND,
    BASE_DIGEST,
    BASE_ROUND,
    DEFAULT_RECORD_KEY,
    IDENTITY,
    PLAIN_FALLBACK,
    RECORD_KEY,
    SEED,
    UPLINK,
    mix,
)
from fedcompress.flower.records import (
    BF16_STYPE,
    Spec,
    arrays_digest,
    cast,
    is_coded,
    measuring,
    numpy_to_record,
    record_spec,
    record_to_numpy,
)
from fedcompress.flower.replies import check_reply, open_reply, split_by_metric_keys

log = logging.getLogger("fedcompress")

Arrays = OrderedDict[str, np.ndarray]


def _pipeline(spec: str):  # noqa: ANN202 - imported lazily: the identity path needs no codec module
    from fedcompress.codecs import Pipeline

    return Pipeline.parse(spec)


class Compression(Strategy):
    """Compress both directions around an inner strategy.

    Downlink: a client that holds an earlier model (the server tracks exactly what each client reconstructed)
    gets `global - held` through the downlink pipeline; a client that holds none gets the full model, unless
    `shared_initial` is given: the initial model every client rebuilds by itself from the run's seed, which then
    serves as round 0's base (the client checks its digest and reports an error if it differs; that client then
    gets full models). Tracking the reconstruction makes the downlink self-correcting.
    Uplink: clients send `local - received` through the uplink pipeline (their mod keeps error feedback); the
    server hands the inner strategy `global + delta`: the update applied to the global model, so what a lossy
    downlink left out of a client's copy is not averaged into the next global model (the client's next delta
    carries it, being against exactly what it holds). Payloads that fail validation (`PayloadError`) are rejected, logged with
    the client's partition id and reason, counted, and left out of aggregation; programming errors raise.
    """

    def __init__(
        self,
        inner: Strategy,
        *,
        partitions: dict[int, int],
        seed: int = 0,
        uplink: str = IDENTITY,
        downlink: str = IDENTITY,
        arrayrecord_key: str = DEFAULT_RECORD_KEY,
        on_reject: Callable[[int, int, str], None] | None = None,
        shared_initial: Arrays | None = None,
        tier: str = "",
        notes: Notes | None = None,
        plain: set[int] | None = None,
        ring: int = 16,
        max_models: int | None = None,
    ) -> None:
        self.inner = inner
        self.partitions = partitions  # pid -> node, shared with the sampling wrapper
        self.plain = plain if plain is not None else set()  # pids of nodes without the mod
        self.seed = seed
        self.tier = tier
        self.uplink_spec = uplink
        self.downlink_spec = downlink
        self.uplink = None if uplink == IDENTITY else _pipeline(uplink)
        self.downlink = None if downlink == IDENTITY else _pipeline(downlink)
        self.tracks_models = self.uplink is not None or self.downlink is not None
        self.key = arrayrecord_key
        self.on_reject = on_reject
        self.notes = notes if notes is not None else Notes()
        self.shared_initial = _float32(shared_initial) if shared_initial is not None else None
        # the models clients hold, each kept once however many hold it (downlink.py)
        self.models = HeldModels(ring=ring, max_models=max_models, initial=self.shared_initial)
        self.no_shared_base: set[int] = set()  # clients that could not rebuild the shared initial model
        self.received: dict[int, Arrays] = {}  # pid -> model the client starts this round's training from
        self.global_np: Arrays | None = None  # this round's global model (coded tensors float32)
        self.rejections: dict[int, int] = {}
        self.accepted: dict[int, int] = {}
        self.train_metrics: dict[int, MetricRecord | None] = {}
        self.applied: dict[int, int] = {}  # pid -> last round its update reached the model (faults.py)
        self._accepted_pids: list[int] = []
        self.spec: Spec | None = None  # the model's names, shapes and dtypes (from the first arrays seen)
        self._coded: dict[str, tuple[tuple[int, ...], str]] = {}

    @property
    def partition_of(self) -> dict[int, int]:
        return {node: pid for pid, node in self.partitions.items()}

    @property
    def held(self) -> dict[int, tuple[int, Arrays]]:
        """pid -> (round, model it holds): a view; the models themselves are shared (see downlink.py)."""
        out = {}
        for pid, key in self.models.holder.items():
            held = self.models.models.get(key)
            if held is not None:
                out[pid] = (held.round, held.arrays)
        return out

    # ------------------------------------------------------------------ train
    def configure_train(
        self, server_round: int, arrays: ArrayRecord, config: ConfigRecord, grid: Grid
    ) -> Iterable[Message]:
        config[UPLINK] = self.uplink_spec
        config[SEED] = self.seed
        if self.key != DEFAULT_RECORD_KEY:
            config[RECORD_KEY] = self.key
        messages = list(self.inner.configure_train(server_round, arrays, config, grid))
        if self.spec is None:
            self.spec = record_spec(arrays)
        self._coded = {k: (s, "float32") for k, (s, d) in self.spec.items() if is_coded(k, s, d)}
        global_np = self._model_arrays(arrays) if self.tracks_models or self.plain else None
        model_record = self._in_model_dtypes(arrays, global_np)
        self.received.clear()
        self.global_np = global_np
        partition_of = self.partition_of
        # one encode per distinct base model, shared by its holders
        groups: dict[tuple[str, int] | None, _Group] = {}
        with measuring():  # messages share their model: hash it once
            out = [
                self._downlink_message(
                    server_round, m, partition_of[m.metadata.dst_node_id], global_np, model_record, groups
                )
                for m in messages
            ]
        self.models.evict(server_round)
        return out

    def _model_arrays(self, arrays: ArrayRecord) -> Arrays:
        """The global model as the clients hold it: float32 for coded tensors, exact ones in the model's dtype."""
        assert self.spec is not None
        out = record_to_numpy(arrays)
        return OrderedDict(
            (k, v.astype(np.float32, copy=False) if k in self._coded else cast(v, self.spec[k][1]))
            for k, v in out.items()
        )

    def _in_model_dtypes(self, arrays: ArrayRecord, global_np: Arrays | None) -> ArrayRecord:
        """The inner strategy's record, cast to the model's dtypes if it aggregated in others (e.g. float64)."""
        if record_spec(arrays) == self.spec:
            return arrays
        return numpy_to_record(global_np if global_np is not None else record_to_numpy(arrays), self.spec)

    def _downlink_message(
        self,
        server_round: int,
        msg: Message,
        pid: int,
        global_np: Arrays | None,
        model_record: ArrayRecord,
        groups: dict[tuple[str, int] | None, _Group],
    ) -> Message:
        content, note = self._downlink_content(
            server_round, pid, msg.content, global_np, model_record, groups
        )
        new = Message(
            content=content, message_type=msg.metadata.message_type, dst_node_id=msg.metadata.dst_node_id
        )
        self.notes.put(new, note)
        return new

    def _downlink_content(
        self,
        server_round: int,
        pid: int,
        content: RecordDict,
        global_np: Arrays | None,
        model_record: ArrayRecord,
        groups: dict[tuple[str, int] | None, _Group],
    ) -> tuple[RecordDict, Note]:
        """This client's copy of the message: the delta against the model it holds, encoded once for every
        client holding that model this round; the full model when it holds none we know."""
        extra = {k: v for k, v in content.items() if k not in (self.key, "config")}
        if pid in self.plain:  # a stock client: plain arrays, none of our keys
            config = ConfigRecord(
                {k: v for k, v in content["config"].items() if not str(k).startswith("fedcompress.")}
            )
            assert global_np is not None
            self.received[pid] = global_np
            note = Note(pid, raw_bytes=raw_nbytes(global_np), codec=PLAIN_FALLBACK, tier=self.tier)
            return RecordDict({self.key: model_record, "config": config, **extra}), note
        if (
            global_np is None
        ):  # nothing to compress or remember: the message goes as the inner strategy built it
            return RecordDict({self.key: model_record, "config": content["config"], **extra}), Note(
                pid, tier=self.tier
            )
        base = self.models.base(pid, server_round) if self.downlink is not None else None
        shared = (
            self.downlink is not None and self.shared_initial is not None and pid not in self.no_shared_base
        )
        if base is None and shared:
            base = (self.models.initial_digest, 0, self.shared_initial)  # type: ignore[assignment]
        group_key = (base[0], base[1]) if base is not None else None
        group = groups.get(group_key)
        if group is None:
            group = groups[group_key] = self._encode_group(server_round, base, global_np, model_record)
        config = ConfigRecord(dict(content["config"]))
        config[APPLIED_ROUND] = self.applied.get(pid, -1)  # the client's error feedback follows it
        config.update(group.config)
        if self.downlink is not None:
            self.models.hold(pid, group.digest, server_round, group.received)
        self.received[pid] = group.received
        note = Note(
            pid,
            raw_bytes=raw_nbytes(global_np),
            encoded_bytes=group.encoded,
            metadata_bytes=group.metadata,
            codec=group.codec,
            tier=self.tier,
        )
        return RecordDict({self.key: group.record, "config": config, **extra}), note

    def _encode_group(
        self,
        server_round: int,
        base: tuple[str, int, Arrays] | None,
        global_np: Arrays,
        model_record: ArrayRecord,
    ) -> _Group:
        """The message part every client holding `base` gets: `global - base` encoded once (seeded by the
        round and the base, so a rerun sends the same bytes), or the full model when there is no base."""
        if self.downlink is None or base is None:
            config = {} if self.downlink is None else {BASE_ROUND: -1}  # -1: keep what you get
            digest = arrays_digest(global_np) if self.downlink is not None else ""
            return _Group(model_record, global_np, digest, config, IDENTITY, None, 0)
        digest, base_round, arrays = base
        delta = OrderedDict((k, global_np[k] - arrays[k]) for k in self._coded)
        res = self.downlink.encode(delta, seed=mix(self.seed, server_round, int(digest, 16) & 0xFFFFFFFF, 1))
        decoded = _decode(res.payload, self._coded)
        exact = {k: model_record[k] for k in global_np if k not in self._coded}
        sent = record_to_numpy(ArrayRecord(exact))  # in the model's dtypes, as the client reads them
        received = OrderedDict((k, arrays[k] + decoded[k] if k in self._coded else sent[k]) for k in arrays)
        return _Group(
            payload_record(res.payload, exact),
            received,
            arrays_digest(received),
            {BASE_ROUND: base_round, BASE_DIGEST: digest},
            self.downlink_spec,
            len(res.payload),
            res.metadata_bytes,
        )

    def aggregate_train(
        self, server_round: int, replies: Iterable[Message]
    ) -> tuple[ArrayRecord | None, MetricRecord | None]:
        arrays, metrics = self.inner.aggregate_train(server_round, self.decode_replies(server_round, replies))
        if arrays is not None:  # their updates reached the model (None: e.g. too few replies, model kept)
            self.mark_applied(server_round)
        self.train_metrics[server_round] = metrics
        return arrays, metrics

    def mark_applied(self, server_round: int) -> None:
        """Record that the replies accepted by the last `decode_replies` reached the model. Each client is told
        (APPLIED_ROUND) next time, and its error feedback keeps what it sent only if it was applied: a caller
        that aggregates decoded replies itself (device tiers) must call this, or every client re-adds updates
        the model already has to its residual, and training stalls."""
        self.applied.update(dict.fromkeys(self._accepted_pids, server_round))

    def decode_replies(self, server_round: int, replies: Iterable[Message]) -> list[Message]:
        """Turn encoded updates into full weights, and drop (and count) bad ones.

        Returns the accepted replies in partition order, as the inner strategy receives them.
        """
        partition_of = self.partition_of
        replies = sorted(replies, key=lambda m: partition_of.get(m.metadata.src_node_id, -1))
        accepted: list[Message] = []
        self._accepted_pids = []
        for reply in replies:
            pid = partition_of.get(reply.metadata.src_node_id, -1)
            reason = ""
            sizes: dict[str, int] = {}  # a frame's sizes, for the ledger (what the bytes alone do not say)
            if reply.has_error():
                reason = f"client error: {reply.error.reason}"
                self.models.forget(pid)  # it may not hold what we think: send it the full model next time
                self.no_shared_base.add(pid)
            else:
                try:
                    # the frame out, its metrics back where the client's train function put them
                    frame = open_reply(reply, self.key)
                    check_reply(reply, self.key, self._weight_key(), framed=frame is not None)
                    self._decode_reply(pid, reply, frame)
                    if frame is not None:
                        exact = sum(len(t.data) for t in frame.exact.values())
                        sizes = {
                            "encoded_bytes": len(frame.payload) + exact,
                            "metadata_bytes": frame.metadata_bytes,
                        }
                except PayloadError as err:  # the peer's bytes are at fault; a bug in our code raises
                    reason = f"rejected payload: {err}"
            codec = PLAIN_FALLBACK if pid in self.plain else self.uplink_spec
            raw = raw_nbytes(self.received[pid]) if pid in self.received else None
            self.notes.update(
                reply, partition_id=pid, raw_bytes=raw, codec=codec, rejected=reason, tier=self.tier, **sizes
            )
            if reason:
                self.rejections[server_round] = self.rejections.get(server_round, 0) + 1
                log.warning("round %d: client partition %d: %s", server_round, pid, reason)
                if self.on_reject:
                    self.on_reject(server_round, pid, reason)
            else:
                self.accepted[server_round] = self.accepted.get(server_round, 0) + 1
                accepted.append(reply)
                self._accepted_pids.append(pid)
        accepted, odd = split_by_metric_keys(accepted)  # Flower refuses to aggregate differing metric keys
        for reply in odd:
            self._reject_late(
                server_round, reply, "rejected payload: metric keys differ from the round's others"
            )
        self._forget_silent(replies)
        return accepted

    def _reject_late(self, server_round: int, reply: Message, reason: str) -> None:
        """Reject a reply that passed decoding (counted, in its ledger row, reported)."""
        pid = self.partition_of.get(reply.metadata.src_node_id, -1)
        self.accepted[server_round] -= 1
        self.rejections[server_round] = self.rejections.get(server_round, 0) + 1
        self._accepted_pids.remove(pid)
        self.notes.update(reply, rejected=reason)
        log.warning("round %d: client partition %d: %s", server_round, pid, reason)
        if self.on_reject:
            self.on_reject(server_round, pid, reason)

    def _weight_key(self) -> str:
        from fedcompress.flower.sampling import strategy_chain

        for s in strategy_chain(self.inner):
            if isinstance(getattr(s, "weighted_by_key", None), str):
                return s.weighted_by_key
        return "num-examples"

    def _forget_silent(self, replies: list[Message]) -> None:
        """A partition sent a model this round that did not answer itself (it died or restarted, or the SuperLink
        answered NODE_UNAVAILABLE for it, an error reply that names no partition) may or may not hold what we
        sent: forget what it holds, so its next downlink is the full model instead of an unusable delta. (A node
        whose payload was rejected did receive its model: it keeps it.)"""
        answered = {self.partition_of.get(m.metadata.src_node_id, -1) for m in replies if not m.has_error()}
        for pid in set(self.received) - answered:
            self.models.forget(pid)
            self.no_shared_base.add(pid)

    def _decode_reply(self, pid: int, reply: Message, frame: Frame | None) -> None:
        """Put the full weights the inner strategy expects (received + delta) in place of an opened frame."""
        if frame is None:
            record = reply.content[self.key]
            if self.uplink is not None and pid not in self.plain:
                raise PayloadError(f"expected an encoded payload ({self.uplink_spec}), got plain arrays")
            self._check_plain(record)
            if any(a.stype == BF16_STYPE for a in record.values()):  # Flower's aggregation needs numpy arrays
                reply.content[self.key] = numpy_to_record(record_to_numpy(record))
        else:
            if self.uplink is None:
                raise PayloadError("got an encoded payload but the uplink is configured as identity")
            if pid not in self.received:
                raise PayloadError(f"no model was sent to partition {pid} this round")
            delta = _decode(frame.payload, self._coded)
            exact = self._exact_tensors(frame.exact)
            # the update lands on the global model, not on the client's copy of it: with a lossy downlink the
            # copies differ from the global model, and averaging copies would drop what the downlink left out
            base = self.global_np if self.global_np is not None else self.received[pid]
            full = OrderedDict((k, base[k] + delta[k] if k in self._coded else exact[k]) for k in base)
            reply.content[self.key] = numpy_to_record(full)

    def _exact_tensors(self, exact: Mapping[str, Exact]) -> Arrays:
        """The uncoded tensors of a frame, checked against the model's shapes and dtypes, and finite."""
        assert self.spec is not None
        want = {k: v for k, v in self.spec.items() if k not in self._coded}
        if set(exact) != set(want):
            got = sorted(k[:40] for k in exact)[:8]
            raise PayloadError(f"exact tensors in the frame: got {got}, expected {sorted(want)}")
        out = OrderedDict()
        for k, t in exact.items():
            if (t.shape, t.dtype) != want[k]:
                raise PayloadError(f"tensor {k!r}: shape {t.shape} dtype {t.dtype[:20]}, model has {want[k]}")
            out[k] = t.numpy()
            if out[k].dtype.kind == "f" and not np.isfinite(out[k]).all():
                raise PayloadError(f"tensor {k!r} holds NaN or Inf")
        return out

    def _check_plain(self, record: ArrayRecord) -> None:
        """Plain arrays must match the model and be finite (checked on the wire bytes, without copies)."""
        assert self.spec is not None
        got = {k: tuple(a.shape) for k, a in record.items()}
        want = {k: tuple(s) for k, (s, _) in self.spec.items()}
        if got != want:
            raise PayloadError(f"arrays disagree with the model: got {got}, expected {want}")
        for k, a in record.items():
            if not _finite(a):
                raise PayloadError(f"tensor {k!r} holds NaN or Inf")

    # --------------------------------------------------------------- evaluate
    def configure_evaluate(
        self, server_round: int, arrays: ArrayRecord, config: ConfigRecord, grid: Grid
    ) -> Iterable[Message]:
        messages = list(self.inner.configure_evaluate(server_round, arrays, config, grid))
        if self.spec is None or record_spec(arrays) == self.spec:
            return messages
        record = numpy_to_record(record_to_numpy(arrays), self.spec)  # the model's dtypes, as for training
        for m in messages:
            if self.key in m.content:
                m.content[self.key] = record
        return messages

    def aggregate_evaluate(self, server_round: int, replies: Iterable[Message]) -> MetricRecord | None:
        return self.inner.aggregate_evaluate(server_round, replies)

    def summary(self) -> None:
        log.info("Compression(uplink=%s, downlink=%s) around:", self.uplink_spec, self.downlink_spec)
        self.inner.summary()


@dataclass(frozen=True)
class _Group:
    """What every client holding one base model gets in a round, built once."""

    record: ArrayRecord
    received: Arrays  # the model its clients reconstruct (and train from)
    digest: str  # of `received`: what the server records they hold
    config: dict[str, int | str]
    codec: str
    encoded: int | None
    metadata: int


def _decode(payload: bytes, coded: dict[str, tuple[tuple[int, ...], str]]) -> Arrays:
    from fedcompress.codecs import decode

    return OrderedDict(
        decode(payload, expected=coded, max_output_bytes=4 * sum(int(np.prod(s)) for s, _ in coded.values()))
    )


def _float32(arrays: Arrays) -> Arrays:
    """Server strategies such as FedAdam aggregate in float64; models and codecs work in float32 (integer and
    bool buffers keep their dtype)."""
    return OrderedDict(
        (k, v.astype(np.float32, copy=False) if np.asarray(v).dtype.kind == "f" else v)
        for k, v in arrays.items()
    )


def _finite(array: Array) -> bool:
    """All values finite, read in place from the serialized array (its raw data ends the buffer)."""
    if array.dtype == "bfloat16" or np.dtype(array.dtype).kind != "f":
        return True
    dtype = np.dtype(array.dtype)
    nbytes = int(np.prod(array.shape)) * dtype.itemsize
    data = memoryview(array.data)
    if nbytes > len(data):
        raise PayloadError(f"array holds {len(data)} bytes, fewer than its shape needs ({nbytes})")
    return bool(np.isfinite(np.frombuffer(data[len(data) - nbytes :], dtype=dtype)).all())
