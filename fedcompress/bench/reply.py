"""Bytes of one compressed train reply, and of the train message that asked for it, object by object.

    python -m fedcompress.bench.reply [--model cnn28] [--classes 62] [--uplink SPEC ...]
    fedcompress bench reply [...]           (the same)

Flower 1.42 ships a message as a tree of content-addressed objects (Message, RecordDict, records, Arrays,
ArrayChunks), each serialized as a header (type, child ids, body length) and a body. This builds a real
round-2 train message with `Compression` (the downlink delta against the model the client holds), runs it
through the real client mod (`compression_mod`) around a train function that returns the received weights
plus a seeded random update (Gaussian, each tensor's update scaled to 1% of its weights' std: the right shapes,
not a trained update, so payload sizes are close to, not equal to, a FEMNIST run's), and prints every object
of both messages: its type, header and body bytes. The totals equal `wire_bytes`, what the ledger records.
Envelope metadata is set as Flower's simulation sets it (64-bit node and run ids, a uuid message id).
"""

from __future__ import annotations

import argparse
import json
import uuid
from collections import OrderedDict
from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np
from flwr.app import ArrayRecord, ConfigRecord, Context, Message, MetricRecord, RecordDict
from flwr.clientapp import ClientApp
from flwr.serverapp.strategy import FedAvg

from fedcompress.flower.compat import HEAD_BODY_DIVIDER, ArrayChunk, InflatableObject, set_task_identity
from fedcompress.flower.compression import Compression
from fedcompress.flower.mod import make_compression_mod
from fedcompress.flower.records import numpy_to_record, record_to_numpy, wire_bytes

PIPELINES = ("topk(0.05) > ef > uniform(4) > entropy", "topk(0.003) > ef > ternary > entropy")
DOWNLINK = "topk(0.2) > uniform(4) > entropy"  # the default downlink
NODE, RUN = 0x5A3C_9E11_70B2_44D1, 0x1F7E_23A9_C4D0_0B65  # 64-bit ids, as Flower draws them


@dataclass(frozen=True)
class Row:
    path: str  # where the object sits in the tree
    kind: str  # its type
    header: int
    body: int

    @property
    def total(self) -> int:
        return self.header + self.body


def objects(msg: Message) -> list[Row]:
    """Every unique object of the message (as Flower pushes them), with its serialized header and body."""
    seen: set[str] = set()
    rows = []
    for path, obj in _walk("message", msg):
        if obj.object_id in seen:
            continue
        seen.add(obj.object_id)
        if isinstance(obj, ArrayChunk):  # header as Flower writes it, without copying the data
            head = len(f"ArrayChunk\x00\x00{len(obj.data)}".encode()) + len(HEAD_BODY_DIVIDER)
            rows.append(Row(path, "ArrayChunk", head, len(obj.data)))
            continue
        raw = obj.deflate()
        cut = raw.index(HEAD_BODY_DIVIDER) + len(HEAD_BODY_DIVIDER)
        rows.append(Row(path, type(obj).__name__, cut, len(raw) - cut))
    return rows


def _walk(path: str, obj: InflatableObject) -> Iterator[tuple[str, InflatableObject]]:
    yield path, obj
    if isinstance(obj, Message):
        yield from _walk("content", obj.content)
    elif isinstance(obj, (RecordDict, ArrayRecord)):
        for name, child in obj.items():
            yield from _walk(f"{path}/{name}" if isinstance(obj, ArrayRecord) else name, child)
    else:
        for i, (_, chunk) in enumerate(getattr(obj, "slice_array", lambda: [])()):
            yield f"{path}[{i}]", chunk


class _Grid:
    def get_node_ids(self) -> list[int]:
        return [NODE]


@dataclass(frozen=True)
class Exchange:
    """Round 2's train message to the node and the node's reply, measured as they cross the wire."""

    train_message: list[Row]
    reply: list[Row]
    train_message_bytes: int
    reply_bytes: int


def exchange(model: str, classes: int, uplink: str, seed: int = 0) -> Exchange:
    """Two rounds through Compression and the client mod (round 2's downlink is a delta against round 1's
    model); the server decodes and aggregates every reply, so the bytes measured are ones it accepts."""
    import torch

    from fedcompress.models import build_model

    set_task_identity(run_id=RUN, node_id=NODE)
    torch.manual_seed(seed)
    initial = record_to_numpy(
        numpy_to_record({k: v.numpy() for k, v in build_model(model, classes).state_dict().items()})
    )
    rng = np.random.default_rng(seed)
    strategy = Compression(
        FedAvg(fraction_evaluate=0.0, min_train_nodes=1, min_available_nodes=1),
        partitions={0: NODE}, seed=seed, uplink=uplink, downlink=DOWNLINK, shared_initial=initial,
    )  # fmt: skip
    app = ClientApp()

    @app.train(mods=[make_compression_mod(lambda ctx, cfg: initial)])
    def train(msg: Message, context: Context) -> Message:
        local = OrderedDict()
        for k, v in record_to_numpy(msg.content["arrays"]).items():
            step = rng.normal(0, 0.01 * (float(v.std()) or 1.0), v.shape) if v.dtype.kind == "f" else 0
            local[k] = (v + step).astype(v.dtype)
        metrics = MetricRecord({"num-examples": 214, "train_loss": float(rng.uniform(0.5, 2.0))})
        return Message(RecordDict({"arrays": numpy_to_record(local), "metrics": metrics}), reply_to=msg)

    context = Context(RUN, NODE, {"partition-id": 0, "num-partitions": 105}, RecordDict(), {})
    arrays: ArrayRecord | None = numpy_to_record(initial)
    measured = None
    for rnd in (1, 2):
        assert arrays is not None
        (msg,) = strategy.configure_train(rnd, arrays, ConfigRecord({"lr": 0.05}), _Grid())  # type: ignore[arg-type]
        msg.metadata.__dict__.update(_run_id=RUN, _src_node_id=1, _group_id=str(rnd))
        msg.metadata.__dict__["_message_id"] = str(uuid.UUID(int=int(rng.integers(2**63)), version=4))
        sent = (objects(msg), wire_bytes(msg))  # before the client: its mod puts the decoded model in
        reply = app(msg, context)
        if reply.has_error():
            raise RuntimeError(reply.error.reason)
        measured = Exchange(sent[0], objects(reply), sent[1], wire_bytes(reply))
        for rows, total in (
            (measured.train_message, measured.train_message_bytes),
            (measured.reply, measured.reply_bytes),
        ):
            if sum(r.total for r in rows) != total:  # the table must add up to what the ledger records
                raise RuntimeError(
                    f"objects sum to {sum(r.total for r in rows)} B, wire_bytes says {total} B"
                )
        arrays, _ = strategy.aggregate_train(rnd, [reply])  # decodes the reply in place: measured before
        if arrays is None:
            raise RuntimeError(f"the server rejected the reply: {strategy.rejections}")
    assert measured is not None
    return measured


def table(title: str, rows: list[Row]) -> str:
    lines = [f"{title}", f"  {'object':<34} {'type':<12} {'header':>7} {'body':>7} {'total':>7}"]
    for r in rows:
        lines.append(f"  {r.path:<34} {r.kind:<12} {r.header:>7} {r.body:>7} {r.total:>7}")
    lines.append(f"  {'total':<34} {'':<12} {sum(r.header for r in rows):>7} {sum(r.body for r in rows):>7} "
                 f"{sum(r.total for r in rows):>7}")  # fmt: skip
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> dict[str, dict[str, int]]:
    ap = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    ap.add_argument("--model", default="cnn28", help="model family (cnn28: the FEMNIST CNN, 461,630 params)")
    ap.add_argument("--classes", type=int, default=62)
    ap.add_argument("--uplink", action="append", help="uplink pipeline (repeatable); default: issue 13's two")
    args = ap.parse_args(argv)
    totals: dict[str, dict[str, int]] = {}
    for spec in args.uplink or PIPELINES:
        ex = exchange(args.model, args.classes, spec)
        print(table(f"train reply, {args.model}, uplink {spec!r}", ex.reply))
        print(table(f"train message (round 2), downlink {DOWNLINK!r}", ex.train_message))
        print()
        totals[spec] = {"reply": ex.reply_bytes, "train_message": ex.train_message_bytes}
    print(json.dumps({"model": args.model, "downlink": DOWNLINK, "bytes": totals}))
    return totals


if __name__ == "__main__":
    main()
