"""Server checkpoints and exact resume.

After each round the server writes, atomically, everything the next round depends on:

- the global model (every Array's raw bytes, dtype and stype, so the resumed model is the same bits);
- the inner Flower strategy's state, read generically from the attributes of every strategy in its chain that
  hold arrays or plain values (FedAdam/FedYogi/FedAdagrad's `m_t`, `v_t`, FedAvgM's momentum and current model,
  ...): no per-strategy code, and a strategy that keeps no state costs nothing;
- compression's state: the models clients hold (one file per distinct model under `held/`, written only
  when it changes), who could not rebuild the shared initial model, per-round counts, the model's spec;
- the byte offsets of `ledger.jsonl` and `metrics.jsonl` at the end of the round (a resumed run truncates both
  there, so no line is lost or written twice), and any extra state a hook adds (fault counters).

Sampling is a pure function of (seed, round) and needs nothing. The clients' error-feedback residuals live in
their own versioned store (`client_state.py`). A checkpoint names the config and versions that wrote it; resuming
with another is refused, naming each difference.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
from flwr.app import ArrayRecord, ConfigRecord, MetricRecord
from flwr.serverapp import Grid
from flwr.serverapp.strategy import Strategy

from fedcompress.errors import RunError
from fedcompress.flower.sampling import strategy_chain
from fedcompress.flower.statefile import load_state, record_to_state, save_state, state_to_record

if TYPE_CHECKING:
    from fedcompress.flower.strategy import FedCompress

log = logging.getLogger("fedcompress")

FORMAT = 1
FOLDER = "checkpoint"
STATE = "state.npz"
# where a run writes, and whether it resumes, do not change what it computes
NOT_COMPARED = ("run-dir", "resume-run")


def versions() -> dict[str, str]:
    """What must match for a resumed run to compute the same bits."""
    import flwr
    import torch

    import fedcompress

    return {
        "checkpoint-format": str(FORMAT),
        "fedcompress": fedcompress.__version__,
        "flwr": flwr.__version__,
        "torch": torch.__version__,
        "numpy": np.__version__,
    }


def differences(saved: dict[str, Any], now: dict[str, Any]) -> list[str]:
    """'key: saved -> now' for every key that differs (keys on one side only included)."""
    return [
        f"{k}: {saved.get(k, '<absent>')!r} -> {now.get(k, '<absent>')!r}"
        for k in sorted(set(saved) | set(now))
        if saved.get(k, "<absent>") != now.get(k, "<absent>")
    ]


def comparable(config: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in config.items() if k not in NOT_COMPARED}


@dataclass
class Checkpoint:
    """A loaded checkpoint: the round it ends, the global model, and what `restore` puts back."""

    round: int
    arrays: ArrayRecord
    meta: dict[str, Any]
    state: dict[str, np.ndarray]
    folder: Path
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def offsets(self) -> tuple[int, int]:
        return int(self.meta["ledger_bytes"]), int(self.meta["metrics_bytes"])

    def restore(self, fc: FedCompress) -> None:
        """Put compression's and the inner strategy's state back into a freshly built `FedCompress`."""
        comp = fc.compression
        c = self.meta["compression"]
        comp.spec = {k: (tuple(s), d) for k, (s, d) in c["spec"].items()} if c["spec"] is not None else None
        comp.no_shared_base.clear()
        comp.no_shared_base.update(int(p) for p in c["no_shared_base"])
        comp.rejections.update({int(k): v for k, v in c["rejections"].items()})
        comp.accepted.update({int(k): v for k, v in c["accepted"].items()})
        comp.applied.update({int(p): r for p, r in c.get("applied", {}).items()})
        comp.models.restore(
            {
                (d, int(r)): (h, _ordered(load_state(self.folder / held_name(d, int(r)))[0], c["held_order"]))
                for d, r, h in c["held_models"]
            },  # fmt: skip
            {int(p): (d, int(r)) for p, (d, r) in c["holder"].items()},
            dropped=int(c.get("held_dropped", 0)),
        )
        restore_strategy(fc.user_inner, self.state, self.meta["inner"])


def held_name(digest: str, rnd: int) -> str:
    """One file per model clients hold (downlink.py keeps each once, however many clients hold it)."""
    return f"held/{digest}-r{rnd}.npz"


def _ordered(arrays: dict[str, np.ndarray], order: list[str]) -> Any:
    from collections import OrderedDict

    return OrderedDict((k, arrays[k]) for k in order)


class Checkpointer:
    """Writes and reads `<run_dir>/checkpoint/`; `save` after every round, `load` to resume."""

    def __init__(self, run_dir: Path, config: dict[str, Any]) -> None:
        self.folder = Path(run_dir) / FOLDER
        self.config = comparable(config)
        self.extra: dict[
            str, Callable[[], Any]
        ] = {}  # name -> JSON-able state of a hook (e.g. fault counters)

    def save(self, server_round: int, arrays: ArrayRecord, fc: FedCompress) -> None:
        """The state at the end of `server_round` (its ledger and metrics lines already flushed)."""
        comp = fc.compression
        self.folder.mkdir(parents=True, exist_ok=True)
        held_order: list[str] = []
        for (digest, rnd), held in comp.models.models.items():
            held_order = list(held.arrays)
            path = self.folder / held_name(digest, rnd)
            if not path.exists():  # a version never changes once written
                save_state(path, held.arrays, {})
        state, index = record_to_state(arrays, "global")
        inner_arrays, inner_meta = capture_strategy(fc.user_inner)
        meta = {
            "round": server_round,
            "config": self.config,
            "versions": versions(),
            "global": index,
            "inner": inner_meta,
            "compression": {
                "spec": {k: [list(s), d] for k, (s, d) in comp.spec.items()} if comp.spec else None,
                "no_shared_base": sorted(comp.no_shared_base),
                "rejections": comp.rejections,
                "accepted": comp.accepted,
                "held_models": [[d, r, h.holders] for (d, r), h in comp.models.models.items()],
                "holder": {str(p): [d, r] for p, (d, r) in comp.models.holder.items()},
                "held_dropped": comp.models.dropped,
                "held_order": held_order,
                "applied": {str(p): r for p, r in comp.applied.items()},
            },
            "ledger_bytes": _synced_size(self.folder.parent / "ledger.jsonl"),
            "metrics_bytes": _synced_size(self.folder.parent / "metrics.jsonl"),
            "extra": {k: f() for k, f in self.extra.items()},
        }
        save_state(self.folder / STATE, {**state, **inner_arrays}, meta)
        self._collect(comp.models.models)

    def release(self) -> None:
        """After a complete run: drop the held models and the simulation's client state store (a run directory
        should not keep a model per client); `state.npz` stays, so the config check still works."""
        import shutil

        shutil.rmtree(self.folder / "held", ignore_errors=True)
        shutil.rmtree(self.folder.parent / "client-state", ignore_errors=True)

    def _collect(self, models: dict[tuple[str, int], Any]) -> None:
        """Delete held-model files the checkpoint no longer names."""
        keep = {held_name(d, r).split("/", 1)[1] for d, r in models}
        for f in (self.folder / "held").glob("*-r*.npz"):
            if f.name not in keep:
                f.unlink(missing_ok=True)

    def load(self) -> Checkpoint | None:
        """The last checkpoint, checked against this run's config and versions; None if there is none."""
        path = self.folder / STATE
        if not path.exists():
            return None
        state, meta = load_state(path)
        diff = differences(meta["versions"], versions())
        if diff:
            raise RunError(
                f"checkpoint {path} was written by other versions; refusing to resume: {'; '.join(diff)}"
            )
        diff = differences(meta["config"], self.config)
        if diff:
            raise RunError(
                f"checkpoint {path} is of another config; refusing to resume (saved -> now): {'; '.join(diff)}"
            )
        arrays = state_to_record(state, meta["global"], "global")
        return Checkpoint(int(meta["round"]), arrays, meta, state, self.folder, meta.get("extra", {}))


def _synced_size(path: Path) -> int:
    import os

    with open(path, "rb+") as f:
        os.fsync(f.fileno())
    return path.stat().st_size


# ---------------------------------------------------------------- inner strategy state, generically
JSON_TYPES = (type(None), bool, int, float, str)


def capture_strategy(inner: Strategy) -> tuple[dict[str, np.ndarray], list[dict[str, Any]]]:
    """Every attribute of every strategy in the chain that holds arrays or plain values."""
    arrays: dict[str, np.ndarray] = {}
    meta: list[dict[str, Any]] = []
    for i, s in enumerate(strategy_chain(inner)):
        attrs: dict[str, Any] = {}
        for name, value in vars(s).items():
            if name.startswith("_"):  # private scratch (recomputed each round), not state
                continue
            p = f"inner/{i}/{name}"
            if isinstance(value, np.ndarray):
                arrays[p] = value
                attrs[name] = {"kind": "nd"}
            elif isinstance(value, ArrayRecord):
                a, index = record_to_state(value, p)
                arrays.update(a)
                attrs[name] = {"kind": "record", "index": index}
            elif isinstance(value, (MetricRecord, ConfigRecord)):
                attrs[name] = {"kind": type(value).__name__, "value": dict(value)}
            elif isinstance(value, dict) and value and all(isinstance(v, np.ndarray) for v in value.values()):
                keys = list(value)
                arrays.update({f"{p}/{j}": value[k] for j, k in enumerate(keys)})
                attrs[name] = {"kind": "nddict", "keys": keys}
            elif isinstance(value, (list, tuple)) and value and all(isinstance(v, np.ndarray) for v in value):
                arrays.update({f"{p}/{j}": v for j, v in enumerate(value)})
                attrs[name] = {"kind": "ndlist", "n": len(value)}
            elif isinstance(value, JSON_TYPES) or (isinstance(value, dict) and not value):
                attrs[name] = {"kind": "json", "value": value}
        meta.append({"type": type(s).__name__, "attrs": attrs})
    return arrays, meta


def restore_strategy(inner: Strategy, arrays: dict[str, np.ndarray], meta: list[dict[str, Any]]) -> None:
    chain = list(strategy_chain(inner))
    if [type(s).__name__ for s in chain] != [m["type"] for m in meta]:
        raise RunError(
            f"checkpoint's strategy chain {[m['type'] for m in meta]} differs from {[type(s).__name__ for s in chain]}"
        )
    for i, (s, m) in enumerate(zip(chain, meta, strict=True)):
        for name, a in m["attrs"].items():
            p = f"inner/{i}/{name}"
            kind = a["kind"]
            if kind == "nd":
                value: Any = arrays[p]
            elif kind == "record":
                value = state_to_record(arrays, a["index"], p)
            elif kind == "MetricRecord":
                value = MetricRecord(a["value"])
            elif kind == "ConfigRecord":
                value = ConfigRecord(a["value"])
            elif kind == "nddict":
                value = {k: arrays[f"{p}/{j}"] for j, k in enumerate(a["keys"])}
            elif kind == "ndlist":
                value = [arrays[f"{p}/{j}"] for j in range(a["n"])]
            else:
                value = a["value"]
            setattr(s, name, value)


# ---------------------------------------------------------------- the round loop, from any round
def run_rounds(
    strategy: FedCompress,
    grid: Grid,
    arrays: ArrayRecord,
    *,
    first_round: int,
    num_rounds: int,
    timeout: float = 3600,
    train_config: ConfigRecord | None = None,
    evaluate_config: ConfigRecord | None = None,
    evaluate_fn: Callable[[int, ArrayRecord], MetricRecord | None] | None = None,
) -> ArrayRecord:
    """Flower's `Strategy.start` loop (the same calls in the same order), starting at `first_round`."""
    measured = strategy.wrap(grid)
    train_config = ConfigRecord() if train_config is None else train_config
    evaluate_config = ConfigRecord() if evaluate_config is None else evaluate_config
    try:
        for rnd in range(first_round, num_rounds + 1):
            replies = measured.send_and_receive(
                strategy.configure_train(rnd, arrays, train_config, measured),  # type: ignore[arg-type]
                timeout=timeout,
            )
            agg, _ = strategy.aggregate_train(rnd, replies)
            if agg is not None:
                arrays = agg
            replies = measured.send_and_receive(
                strategy.configure_evaluate(rnd, arrays, evaluate_config, measured),  # type: ignore[arg-type]
                timeout=timeout,
            )
            strategy.aggregate_evaluate(rnd, replies)
            if evaluate_fn:
                evaluate_fn(rnd, arrays)
    finally:
        measured.flush()
        strategy.ledger.flush()
    return arrays
