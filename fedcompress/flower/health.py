"""Server side of failing, slow and hostile clients: two strategy wrappers, each adding one concern, and the
per-round account of who failed and why.

- `NormBound(inner, bound)`: rejects an update whose L2 norm (decoded weights minus the global model sent) exceeds
  `bound` before the inner strategy sees it; the rejection is counted and in the ledger like any other.
- `Quorum(inner, min_fraction)`: a round whose accepted replies are fewer than `min_fraction` of the clients
  sampled keeps the previous model (the inner strategy is not called, so its state, e.g. FedAdam's moments, does
  not move either) and says so.
- `Finite(inner)`: an aggregate holding NaN or Inf (poisoned or diverged updates that passed every check one by
  one) never becomes the global model: the round keeps the previous model and says so. Always on.
- `Failures`: counts, per round, failures by reason: `exception` (the client's app raised), `rejected` (its
  payload failed validation), `norm-bound`, `timeout` (sampled but no reply within `round-timeout`; a ledger row
  records each, with zero bytes), and whether the round kept the previous model.

They sit inside `Compression` (which decodes replies first): FedCompress(NormBound(Quorum(Finite(inner)))).
"""

from __future__ import annotations

import logging
import math
from collections import Counter
from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING, Any

import numpy as np
from flwr.app import ArrayRecord, ConfigRecord, Message, MetricRecord
from flwr.serverapp import Grid
from flwr.serverapp.strategy import Strategy

from fedcompress.flower.protocol import DEFAULT_RECORD_KEY
from fedcompress.flower.records import record_to_numpy
from fedcompress.flower.wrapper import Wrapper
from fedcompress.ledger import Transfer

if TYPE_CHECKING:
    from fedcompress.flower.strategy import FedCompress

log = logging.getLogger("fedcompress")
REASONS = ("exception", "rejected", "norm-bound", "timeout")


def reason_kind(reason: str) -> str:
    if reason.startswith("client error"):
        return "exception"
    if reason.startswith("norm bound"):
        return "norm-bound"
    return "rejected"


class Failures:
    """Failures per round and reason; `on_reject` is FedCompress's callback, `row` what metrics.jsonl gets."""

    def __init__(self) -> None:
        self.by_round: dict[int, Counter[str]] = {}
        self.replied: dict[int, set[int]] = {}
        self.kept_previous: set[int] = set()

    def on_reject(self, server_round: int, pid: int, reason: str) -> None:
        self.by_round.setdefault(server_round, Counter())[reason_kind(reason)] += 1
        self.replied.setdefault(server_round, set()).add(pid)

    def row(self, server_round: int) -> dict[str, Any]:
        c = self.by_round.get(server_round, Counter())
        out: dict[str, Any] = {f"failed_{k.replace('-', '_')}": int(c.get(k, 0)) for k in REASONS}
        out["kept_previous_model"] = server_round in self.kept_previous
        return out


class Quorum(Wrapper):
    """Keeps the previous model when fewer than `min_fraction` of the sampled clients' updates were accepted."""

    def __init__(self, inner: Strategy, *, min_fraction: float, failures: Failures) -> None:
        super().__init__(inner)
        self.min_fraction = min_fraction
        self.failures = failures
        self._sent: dict[int, int] = {}

    def configure_train(
        self, server_round: int, arrays: ArrayRecord, config: ConfigRecord, grid: Grid
    ) -> Iterable[Message]:
        messages = list(self.inner.configure_train(server_round, arrays, config, grid))
        self._sent[server_round] = len(messages)
        return messages

    def aggregate_train(
        self, server_round: int, replies: Iterable[Message]
    ) -> tuple[ArrayRecord | None, MetricRecord | None]:
        replies = list(replies)
        need = max(1, math.ceil(self.min_fraction * self._sent.get(server_round, 0)))
        if len(replies) < need:
            self.failures.kept_previous.add(server_round)
            log.warning(
                "round %d: %d of %d sampled clients' updates accepted, %d needed (min-reply-fraction %.2f): "
                "keeping the previous model", server_round, len(replies), self._sent.get(server_round, 0), need,
                self.min_fraction,
            )  # fmt: skip
            return None, None
        return self.inner.aggregate_train(server_round, replies)

    def summary(self) -> None:
        log.info("Quorum(min-reply-fraction %.2f) around:", self.min_fraction)
        self.inner.summary()


class Finite(Wrapper):
    """Keeps the previous model when the inner strategy's aggregate holds NaN or Inf.

    Each reply is checked for finite values on arrival, but finite updates can still sum to an overflow (e.g.
    attackers scaling their updates until the float32 mean is Inf), and a non-finite global model would make
    every later round fail. The inner strategy's own state (e.g. FedAdam's moments) has moved by then; only
    the model is protected.
    """

    def __init__(self, inner: Strategy, *, failures: Failures) -> None:
        super().__init__(inner)
        self.failures = failures

    def aggregate_train(
        self, server_round: int, replies: Iterable[Message]
    ) -> tuple[ArrayRecord | None, MetricRecord | None]:
        arrays, metrics = self.inner.aggregate_train(server_round, replies)
        if arrays is not None and not all(np.isfinite(v).all() for v in record_to_numpy(arrays).values()):
            self.failures.kept_previous.add(server_round)
            log.warning(
                "round %d: the aggregated model holds NaN or Inf: keeping the previous model", server_round
            )
            return None, metrics
        return arrays, metrics


class NormBound(Wrapper):
    """Rejects updates whose L2 norm exceeds `bound` (decoded weights minus the model sent this round)."""

    def __init__(self, inner: Strategy, *, bound: float, key: str = DEFAULT_RECORD_KEY) -> None:
        super().__init__(inner)
        self.bound = bound
        self.key = key
        self.reject: Callable[[int, Message, str], None] = lambda r, m, why: None  # set by `wire`
        self._global: dict[str, np.ndarray] = {}

    def configure_train(
        self, server_round: int, arrays: ArrayRecord, config: ConfigRecord, grid: Grid
    ) -> Iterable[Message]:
        self._global = {k: np.asarray(v, dtype=np.float64) for k, v in record_to_numpy(arrays).items()}
        return self.inner.configure_train(server_round, arrays, config, grid)

    def aggregate_train(
        self, server_round: int, replies: Iterable[Message]
    ) -> tuple[ArrayRecord | None, MetricRecord | None]:
        kept = []
        for reply in replies:
            norm = update_norm(record_to_numpy(reply.content[self.key]), self._global)
            if norm > self.bound:
                self.reject(server_round, reply, f"norm bound: update norm {norm:.4g} > {self.bound:g}")
            else:
                kept.append(reply)
        return self.inner.aggregate_train(server_round, kept)

    def summary(self) -> None:
        log.info("NormBound(%g) around:", self.bound)
        self.inner.summary()


def update_norm(weights: dict[str, np.ndarray], global_: dict[str, np.ndarray]) -> float:
    """L2 norm of the float tensors' change (integer buffers such as BatchNorm's counters left out)."""
    total = 0.0
    for k, g in global_.items():
        w = weights.get(k)
        if w is not None and np.asarray(w).dtype.kind == "f" and g.shape == np.shape(w):
            total += float(np.sum((np.asarray(w, dtype=np.float64) - g) ** 2))
    return math.sqrt(total)


def wire(fc: FedCompress, failures: Failures) -> None:
    """Connect the wrappers inside `fc` to its books: a norm-bound rejection is counted and in the ledger like
    any rejection; sampled and replied clients are noted so timeouts can be counted."""
    for s in _chain(fc.user_inner):
        if isinstance(s, NormBound):
            s.reject = lambda rnd, reply, why: _reject(fc, failures, rnd, reply, why)


def _reject(fc: FedCompress, failures: Failures, rnd: int, reply: Message, why: str) -> None:
    fc.compression._reject_late(
        rnd, reply, why
    )  # counted, in the ledger; FedCompress's on_reject tells failures


def count_timeouts(fc: FedCompress, failures: Failures, server_round: int, sampled: list[int]) -> int:
    """Sampled clients with neither an accepted nor a rejected reply: timed out. Each gets a zero-byte ledger
    row saying so (the round's totals count it as rejected)."""
    comp = fc.compression
    answered = comp.accepted.get(server_round, 0) + comp.rejections.get(server_round, 0)
    missing = max(0, len(sampled) - answered)
    if missing:
        failures.by_round.setdefault(server_round, Counter())["timeout"] += missing
        replied = failures.replied.get(server_round, set()) | set(comp._accepted_pids)
        for pid in [p for p in sampled if p not in replied][:missing]:
            fc.ledger.record(
                Transfer(
                    round=server_round, partition_id=pid, node_id=fc.partitions.get(pid, -1), direction="uplink",
                    message_bytes=0, payload_bytes=0, raw_bytes=0, encoded_bytes=0, metadata_bytes=0,
                    codec=fc.uplink_spec, rejected="timeout: no reply within the round timeout", tier=fc.tier,
                )
            )  # fmt: skip
    return missing


def _chain(strategy: Strategy) -> Iterable[Any]:
    from fedcompress.flower.sampling import strategy_chain

    return strategy_chain(strategy)
