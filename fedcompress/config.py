"""The run configuration: one typed, validated view of Flower's `run_config` shared by server, client and CLI.

`pyproject.toml` ([tool.flwr.app.config]) holds the defaults Flower reads; this module checks every key a user
passes (unknown key, wrong type, value out of range) and fails with one message naming the key and what is allowed.
"""

from __future__ import annotations

import hashlib
import json
import shlex
import tomllib
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any

from fedcompress.errors import ConfigError

PROJECT_ROOT = Path(__file__).resolve().parents[1]

STRATEGIES = ("fedavg", "fedprox", "fedadam", "fedyogi", "fedadagrad", "fedavgm", "fedmedian", "krum")
PARTITIONINGS = ("natural", "iid", "dirichlet", "shards")
MODEL_CHOICES = ("auto", "cnn8", "cnn28", "cnn32", "lstm")
TIER_TRAINING = ("distill", "separate", "heterofl")


@dataclass(frozen=True)
class RunConfig:
    """Every knob of a run; field names are the kebab-case run-config keys with '-' -> '_'."""

    num_server_rounds: int = 30
    clients_per_round: int = 5
    local_epochs: int = 2
    learning_rate: float = 0.1
    momentum: float = 0.0
    batch_size: int = 16
    dataset: str = "digits"
    data_dir: str = ""
    partitioning: str = "dirichlet"
    num_partitions: int = 10
    dirichlet_alpha: float = 0.5
    shards_per_client: int = 2
    val_fraction: float = 0.1
    model: str = "auto"
    width: float = 1.0
    strategy: str = "fedavg"
    proximal_mu: float = 0.01
    server_learning_rate: float = 0.1
    server_momentum: float = 0.9
    eval_every: int = 1
    seed: int = 0
    run_dir: str = ""
    uplink: str = "identity"
    downlink: str = "identity"
    downlink_shared_init: bool = True
    target_accuracy: float = 0.0
    tiers: str = ""
    tier_mix: str = ""
    tier_training: str = "distill"
    distill_epochs: int = 1
    distill_lr: float = 0.001
    distill_tau: float = 2.0
    distill_proxy_fraction: float = 0.05
    distill_feature_weight: float = 0.0
    distill_relation_weight: float = 0.0
    distill_teachers: str = "all"

    @classmethod
    def keys(cls) -> list[str]:
        return [f.name.replace("_", "-") for f in fields(cls)]

    @classmethod
    def from_run_config(cls, run_config: dict[str, Any], *, strict: bool = True) -> RunConfig:
        """Build from Flower's run_config (kebab-case keys), checking names, types and ranges."""
        types = {f.name: f.type for f in fields(cls)}
        values: dict[str, Any] = {}
        for key, value in run_config.items():
            name = key.replace("-", "_")
            if name not in types:
                if strict:
                    raise ConfigError(f"unknown config key {key!r}; valid keys: {', '.join(cls.keys())}")
                continue
            values[name] = _coerce(key, value, types[name])
        cfg = cls(**values)
        cfg.validate()
        return cfg

    def validate(self) -> None:
        def need(ok: bool, key: str, what: str) -> None:
            if not ok:
                raise ConfigError(
                    f"config key {key!r} = {getattr(self, key.replace('-', '_'))!r}: expected {what}"
                )

        need(self.num_server_rounds >= 1, "num-server-rounds", "an integer >= 1")
        need(self.clients_per_round >= 1, "clients-per-round", "an integer >= 1")
        need(self.clients_per_round <= self.num_partitions, "clients-per-round", "<= num-partitions")
        need(self.local_epochs >= 1, "local-epochs", "an integer >= 1")
        need(self.learning_rate > 0, "learning-rate", "a number > 0")
        need(0 <= self.momentum < 1, "momentum", "a number in [0, 1)")
        need(self.batch_size >= 1, "batch-size", "an integer >= 1")
        need(self.num_partitions >= 1, "num-partitions", "an integer >= 1")
        need(self.dirichlet_alpha > 0, "dirichlet-alpha", "a number > 0")
        need(0 <= self.val_fraction < 1, "val-fraction", "a number in [0, 1)")
        need(self.partitioning in PARTITIONINGS, "partitioning", f"one of {PARTITIONINGS}")
        need(self.model in MODEL_CHOICES, "model", f"one of {MODEL_CHOICES}")
        need(0 < self.width <= 4, "width", "a number in (0, 4]")
        need(self.strategy in STRATEGIES, "strategy", f"one of {STRATEGIES}")
        need(0 <= self.target_accuracy <= 1, "target-accuracy", "a number in [0, 1] (0 = run every round)")
        need(self.tier_training in TIER_TRAINING, "tier-training", f"one of {TIER_TRAINING}")
        need(self.distill_teachers in ("all", "wider"), "distill-teachers", "'all' or 'wider'")
        need(self.distill_epochs >= 0, "distill-epochs", "an integer >= 0")
        need(self.distill_lr > 0, "distill-lr", "a number > 0")
        need(self.distill_tau > 0, "distill-tau", "a number > 0")
        need(0 < self.distill_proxy_fraction < 1, "distill-proxy-fraction", "a number in (0, 1)")
        need(self.distill_feature_weight >= 0, "distill-feature-weight", "a number >= 0")
        need(self.distill_relation_weight >= 0, "distill-relation-weight", "a number >= 0")
        for key in ("uplink", "downlink"):
            spec = getattr(self, key)
            if spec != "identity":
                from fedcompress.codecs import Pipeline

                try:
                    Pipeline.parse(spec)
                except ValueError as err:
                    raise ConfigError(f"config key {key!r} = {spec!r}: {err}") from None
        if self.tiers or self.tier_mix:
            from fedcompress.devices.config import parse_tier_config

            parse_tier_config(self.tiers, self.tier_mix)  # raises ConfigError naming the bad entry
        need(self.eval_every >= 0, "eval-every", "an integer >= 0 (0 = only the last round)")

    def as_run_config(self) -> dict[str, Any]:
        return {k.replace("_", "-"): v for k, v in asdict(self).items()}

    def digest(self) -> str:
        """A short hash of the resolved config (run-dir excluded), to tell runs apart and skip finished ones."""
        body = {k: v for k, v in self.as_run_config().items() if k != "run-dir"}
        return hashlib.sha256(json.dumps(body, sort_keys=True).encode()).hexdigest()[:12]


def _coerce(key: str, value: Any, typ: Any) -> Any:
    typ = {"int": int, "float": float, "str": str, "bool": bool}.get(typ, typ)
    if typ is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if typ is int and isinstance(value, float) and value.is_integer():
        return int(value)
    if not isinstance(value, typ) or (typ is int and isinstance(value, bool)):
        raise ConfigError(
            f"config key {key!r} = {value!r}: expected {typ.__name__}, got {type(value).__name__}"
        )
    return value


def pyproject_defaults(root: Path = PROJECT_ROOT) -> dict[str, Any]:
    """The defaults Flower reads, from the app's pyproject.toml."""
    with open(root / "pyproject.toml", "rb") as f:
        return tomllib.load(f)["tool"]["flwr"]["app"]["config"]


def parse_overrides(text: str) -> dict[str, Any]:
    """Parse `k=v k2="a b"` overrides like `flwr run --run-config` (TOML values; quoted values may hold spaces,
    as codec specs do)."""
    out: dict[str, Any] = {}
    for item in shlex.split(text):
        if "=" not in item:
            raise ConfigError(f"run-config override {item!r}: expected key=value")
        k, v = item.split("=", 1)
        try:
            out[k] = tomllib.loads(f"x = {v}")["x"]
        except tomllib.TOMLDecodeError:
            out[k] = v
    return out
