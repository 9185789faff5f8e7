"""Server downlink state that does not grow with the number of clients: the models clients hold, shared.

The old downlink kept one model per client that ever took part (O(clients x model)) and encoded a delta per
client. But clients that hold the same model need the same delta: every client in sync with the last round's
broadcast holds one model, every first-timer holds the seeded initial model. So models are kept once, content-
addressed by digest, with a count of holders; a round encodes one payload per distinct base model and
broadcasts it to every client holding that base (one encode per group, the same bytes to each). What the
clients of a group reconstruct is the same model again, so it is stored once.

Bounded by two knobs: a held model older than `ring` rounds is dropped (its holders get a delta from the seeded
initial model, or the full model, next time) and at most `max_models` are kept (oldest dropped first). A model
no client holds any more is dropped at once. Memory is O(min(clients, max_models) x model), never
O(clients x model); the per-client record is a 16-character digest.
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass

import numpy as np

from fedcompress.errors import ConfigError
from fedcompress.flower.records import arrays_digest

Arrays = OrderedDict[str, np.ndarray]


@dataclass
class Held:
    """One model some clients hold: the round it was made, its tensors, how many clients hold it."""

    round: int
    arrays: Arrays
    holders: int = 0


class HeldModels:
    """Content-addressed models the clients hold (see module doc); `holder` maps partition id -> digest."""

    def __init__(
        self, *, ring: int = 16, max_models: int | None = None, initial: Arrays | None = None
    ) -> None:
        if ring < 1:
            raise ConfigError(f"downlink ring must be >= 1 round, got {ring}")
        if max_models is not None and max_models < 1:
            raise ConfigError(f"the server state budget must hold at least one held model, got {max_models}")
        self.ring = ring
        self.max_models = max_models
        # (digest, round) -> model, oldest first: the same tensors made in two rounds are two entries, since
        # a client checks the round it holds as well as the digest
        self.models: OrderedDict[tuple[str, int], Held] = OrderedDict()
        self.holder: dict[int, tuple[str, int]] = {}
        self.initial = initial
        self.initial_digest = arrays_digest(initial) if initial is not None else None
        self.dropped = 0  # models evicted by age or budget (their holders fall back)

    def base(self, pid: int, server_round: int) -> tuple[str, int, Arrays] | None:
        """The model `pid` holds as (digest, round, arrays), if the server still has it and it is in the ring."""
        key = self.holder.get(pid)
        held = self.models.get(key) if key is not None else None
        if held is None or server_round - held.round > self.ring:
            return None
        return key[0], held.round, held.arrays  # type: ignore[index]

    def hold(self, pid: int, digest: str, server_round: int, arrays: Arrays) -> None:
        """Record that `pid` now holds `arrays` (stored once however many clients hold it)."""
        self.forget(pid)
        key = (digest, server_round)
        held = self.models.get(key)
        if held is None:
            held = self.models[key] = Held(server_round, arrays)
        held.holders += 1
        self.holder[pid] = key

    def forget(self, pid: int) -> None:
        """`pid` holds nothing we know of (it erred, or got a new model): drop its claim."""
        key = self.holder.pop(pid, None)
        held = self.models.get(key) if key is not None else None
        if held is not None:
            held.holders -= 1
            if held.holders <= 0:
                del self.models[key]  # type: ignore[arg-type]

    def evict(self, server_round: int) -> None:
        """Drop models too old to be a delta base next round, then the oldest over the budget."""
        for key in [k for k, h in self.models.items() if server_round + 1 - h.round > self.ring]:
            del self.models[key]
            self.dropped += 1
        while self.max_models is not None and len(self.models) > self.max_models:
            self.models.popitem(last=False)
            self.dropped += 1

    def restore(
        self,
        models: dict[tuple[str, int], tuple[int, Arrays]],
        holder: dict[int, tuple[str, int]],
        dropped: int,
    ) -> None:
        """Put back what a checkpoint captured: the models (oldest first) with their holder counts, and who holds
        which."""
        self.models.clear()
        for key, (holders, arrays) in models.items():
            self.models[key] = Held(key[1], arrays, holders)
        self.holder = dict(holder)
        self.dropped = dropped

    def nbytes(self) -> int:
        """Bytes of tensors kept (the initial model included)."""
        kept = [h.arrays for h in self.models.values()] + ([self.initial] if self.initial is not None else [])
        return sum(int(a.nbytes) for arrays in kept for a in arrays.values())


def models_in_budget(budget_mb: float, model_bytes: int) -> int | None:
    """How many held models a state budget allows beside the initial and the global model (None: no budget).

    Raises at start-up when the budget cannot hold even one: the run would otherwise fail, or silently send
    full models, rounds later.
    """
    if budget_mb <= 0:
        return None
    n = int(budget_mb * 1e6 // model_bytes) - 2
    if n < 1:
        raise ConfigError(
            f"config key 'server-state-mb' = {budget_mb}: the model is {model_bytes / 1e6:.2f} MB and the "
            f"downlink keeps the initial model, the global model and at least one held model "
            f"({3 * model_bytes / 1e6:.2f} MB); raise the budget or set 0 for no limit"
        )
    return n
