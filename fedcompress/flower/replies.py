"""Validation of a train reply's structure before anything decodes or aggregates it: what a hostile or broken
client can put in a Flower message is far more than a bad payload.

A compressed reply carries one frame under the model's key (payload.py); `open_reply` unpacks it and puts the
user's MetricRecord back where the client's train function had it. Then a reply must hold exactly one
ArrayRecord, under the model's key (none beside a frame), and exactly one MetricRecord of finite scalars
with a positive, finite weight (`num-examples`); every plain Array in it must parse as the numpy array its dtype
and shape declare. Anything else is a `PayloadError` naming what is wrong, so the reply is rejected and counted
like a corrupt payload and the round goes on. Across a round, Flower's strategies refuse to aggregate replies
whose metric keys differ, so the odd ones out are rejected too (`split_by_metric_keys`).
"""

from __future__ import annotations

import math
from collections import Counter

import numpy as np
from flwr.app import Array, ArrayRecord, Message, MetricRecord, RecordDict

from fedcompress.errors import PayloadError
from fedcompress.flower.frame import MAX_NAME, Frame
from fedcompress.flower.payload import read_frame
from fedcompress.flower.records import BF16, BF16_STYPE


def open_reply(reply: Message, key: str) -> Frame | None:
    """The reply's frame (None: plain arrays), taken out of its content, with the MetricRecord it carried put
    back at its place: the reply then holds what the client's train function returned, less the model."""
    if key not in reply.content:
        return None
    frame = read_frame(reply.content[key])
    if frame is None:
        return None
    records = [(k, v) for k, v in reply.content.items() if k != key]
    m = frame.metrics
    if m is not None:
        if m.name == key or any(k == m.name for k, _ in records) or m.position > len(records):
            raise PayloadError(
                f"frame metrics {m.name[:60]!r} at place {m.position} clash with the reply's records"
            )
        records.insert(m.position, (m.name, MetricRecord(dict(m.values))))
    reply.content = RecordDict(dict(records))
    return frame


def check_reply(reply: Message, key: str, weight_key: str, framed: bool = False) -> None:
    """Raise PayloadError unless the reply's records have the shape a train reply must have (`framed`: its
    model came in a frame, now opened, so no ArrayRecord may be left)."""
    content = reply.content
    arrays = [k for k, v in content.items() if isinstance(v, ArrayRecord)]
    if arrays != ([] if framed else [key]):
        found = {k: type(v).__name__ for k, v in content.items()}
        what = "no ArrayRecord beside the frame" if framed else f"exactly one ArrayRecord {key!r}"
        raise PayloadError(f"expected {what}, reply holds {found}")
    metrics = [v for v in content.values() if isinstance(v, MetricRecord)]
    if len(metrics) != 1:
        raise PayloadError(f"expected exactly one MetricRecord, reply holds {len(metrics)}")
    check_metrics(metrics[0], weight_key)
    for name, a in [] if framed else content[key].items():
        if len(name) > MAX_NAME:
            raise PayloadError(f"array name of {len(name)} characters")
        check_array(name, a)


def check_metrics(metrics: MetricRecord, weight_key: str) -> None:
    for k, v in metrics.items():
        if isinstance(v, bool) or not isinstance(v, (int, float)):
            raise PayloadError(f"metric {k!r} is a {type(v).__name__}, expected a number")
        if not math.isfinite(float(v)):
            raise PayloadError(f"metric {k!r} is {v}")
    if weight_key not in metrics:
        raise PayloadError(f"metrics lack the weight {weight_key!r}")
    if not float(metrics[weight_key]) > 0:
        raise PayloadError(f"weight {weight_key!r} = {metrics[weight_key]}, expected > 0")


def check_array(name: str, a: Array) -> None:
    """A plain Array parses to exactly the dtype and shape it declares (nothing allocated beyond its bytes)."""
    if not isinstance(a, Array):
        raise PayloadError(f"entry {name!r} is a {type(a).__name__}, not an Array")
    shape = tuple(a.shape)
    if not all(isinstance(d, int) and 0 <= d < 2**31 for d in shape) or len(shape) > 8:
        raise PayloadError(f"tensor {name!r}: bad shape {shape}")
    if a.stype == BF16_STYPE:
        want = 2 * math.prod(shape)
        if a.dtype != BF16 or len(a.data) != want:
            raise PayloadError(
                f"tensor {name!r}: bf16 of shape {shape} needs {want} bytes, has {len(a.data)}"
            )
        return
    try:
        dtype = np.dtype(a.dtype)
    except (TypeError, ValueError):
        raise PayloadError(f"tensor {name!r}: unknown dtype {a.dtype[:40]!r}") from None
    if dtype.kind not in "biuf" or dtype.hasobject:
        raise PayloadError(f"tensor {name!r}: dtype {dtype} is not a number type")
    if math.prod(shape) * dtype.itemsize > len(a.data):
        raise PayloadError(
            f"tensor {name!r}: shape {shape} of {dtype} needs more than its {len(a.data)} bytes"
        )
    try:
        parsed = a.numpy()
    except Exception as err:  # noqa: BLE001 - numpy's parser raises many types on hostile bytes
        raise PayloadError(f"tensor {name!r}: unreadable ({type(err).__name__})") from None
    if parsed.shape != shape or parsed.dtype != dtype:
        raise PayloadError(f"tensor {name!r}: declares {shape} {dtype}, holds {parsed.shape} {parsed.dtype}")


def split_by_metric_keys(replies: list[Message]) -> tuple[list[Message], list[Message]]:
    """(replies whose metric keys are the round's most common set, the others). Ties: the first reply's set."""
    keys = [frozenset(_metrics(r).keys()) for r in replies]
    if len(set(keys)) <= 1:
        return replies, []
    counts = Counter(keys)
    best = max(counts.values())
    common = next(k for k in keys if counts[k] == best)
    return [r for r, k in zip(replies, keys, strict=True) if k == common], [
        r for r, k in zip(replies, keys, strict=True) if k != common
    ]


def _metrics(reply: Message) -> MetricRecord:
    return next(v for v in reply.content.values() if isinstance(v, MetricRecord))
